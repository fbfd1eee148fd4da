// CUDA entry points of the sparse room (sparse.cu; stubs in cuda_stub.cc).
#pragma once
#include "sparse.h"

namespace st {

// Same contract as sparse_select() for its float path, arguments already
// validated: one thread per span of a row running sm::select_span.
// ERR_UNSUPPORTED when no device is usable.
Status cuda_sparse_select(const SelectArgs& a);

// The ERR_VALUE sparse_select reports for the element (NaN score) or group
// (rule broken) at [row, col] of the host input: shared by the CPU driver
// and the CUDA path (sparse.cc).
Status sparse_select_error(const SelectArgs& a, int64_t row, int64_t col);

}  // namespace st
