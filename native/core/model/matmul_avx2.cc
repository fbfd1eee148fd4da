// avx2 matmul kernels of the runtime (to come).
#include "model_kernels.h"

namespace st {
namespace model {
namespace avx2 {
const KernelSet* kernels() { return nullptr; }
}  // namespace avx2
}  // namespace model
}  // namespace st
