// The AVX512 build of the GPTQ block kernel (gptq_kernels.h): the same
// source as gptq_ref.cc, vectorized by the compiler under -mavx512f -mavx512bw -mavx512vl.
// Same bits: the updates are elementwise products and sums (no contraction).
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include "gptq_kernels_impl.h"

namespace st {
namespace gk {
namespace avx512 {
const Kernels* kernels() { return &kKernels; }
}  // namespace avx512
}  // namespace gk
}  // namespace st

#else

#include "gptq_kernels.h"

namespace st {
namespace gk {
namespace avx512 {
const Kernels* kernels() { return nullptr; }
}  // namespace avx512
}  // namespace gk
}  // namespace st

#endif
