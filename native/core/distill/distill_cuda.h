// CUDA entry point of the distill room (distill.cu; stub in cuda_stub.cc).
#pragma once
#include "distill_kernels.h"

namespace st {

// Every row's loss and error into rows[0..a.student.rows) and, when p.grad,
// the gradient into a.grad; arguments already validated and planned by
// distill_loss(). ERR_UNSUPPORTED when no device is usable.
Status cuda_distill_rows(const DistillArgs& a, const DistillPlan& p, RowOut* rows);

}  // namespace st
