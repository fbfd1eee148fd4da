// The AVX2+FMA build of the f64 kernels (la_kernels.h): the same source as
// la_ref.cc, vectorized by the compiler under -mavx2 -mfma. Same bits: the
// operations are elementwise fmas and fixed-lane reductions.
#if defined(__AVX2__) && defined(__FMA__)
#include "la_kernels_impl.h"

namespace st {
namespace la {
namespace avx2 {
const Kernels* kernels() { return &kKernels; }
}  // namespace avx2
}  // namespace la
}  // namespace st

#else

#include "la_kernels.h"

namespace st {
namespace la {
namespace avx2 {
const Kernels* kernels() { return nullptr; }
}  // namespace avx2
}  // namespace la
}  // namespace st

#endif
