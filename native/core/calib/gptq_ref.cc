// The baseline build of the GPTQ block kernel (gptq_kernels.h), and the choice.
#include "../cpu.h"
#include "gptq_kernels_impl.h"

namespace st {
namespace gk {

namespace ref {
const Kernels& kernels() { return kKernels; }
}  // namespace ref

const Kernels& kernels() {
  static const Kernels* k = cpu_enabled().avx512 && avx512::kernels() ? avx512::kernels()
                            : cpu_enabled().avx2 && avx2::kernels()   ? avx2::kernels()
                                                                      : &ref::kernels();
  return *k;
}

}  // namespace gk
}  // namespace st
