// avx512 matmul kernels of the runtime (to come).
#include "model_kernels.h"

namespace st {
namespace model {
namespace avx512 {
const KernelSet* kernels() { return nullptr; }
}  // namespace avx512
}  // namespace model
}  // namespace st
