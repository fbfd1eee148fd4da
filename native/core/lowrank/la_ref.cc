// The baseline build of the f64 kernels (la_kernels.h), and the choice.
#include "../cpu.h"
#include "la_kernels_impl.h"

namespace st {
namespace la {

namespace ref {
const Kernels& kernels() { return kKernels; }
}  // namespace ref

const Kernels& kernels() {
  static const Kernels* k = cpu_enabled().avx2 && avx2::kernels() ? avx2::kernels() : &ref::kernels();
  return *k;
}

}  // namespace la
}  // namespace st
