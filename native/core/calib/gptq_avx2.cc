// The AVX2 build of the GPTQ block kernel (gptq_kernels.h): the same
// source as gptq_ref.cc, vectorized by the compiler under -mavx2 -mfma -mf16c.
// Same bits: the updates are elementwise products and sums (no contraction).
#if defined(__AVX2__) && defined(__FMA__)
#include "gptq_kernels_impl.h"

namespace st {
namespace gk {
namespace avx2 {
const Kernels* kernels() { return &kKernels; }
}  // namespace avx2
}  // namespace gk
}  // namespace st

#else

#include "gptq_kernels.h"

namespace st {
namespace gk {
namespace avx2 {
const Kernels* kernels() { return nullptr; }
}  // namespace avx2
}  // namespace gk
}  // namespace st

#endif
