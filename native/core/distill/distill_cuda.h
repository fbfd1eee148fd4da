// CUDA entry point of the distill room (distill.cu; stub in cuda_stub.cc),
// and its host side in plain C++ (distill_device.cc), which the native
// tests run on a fake device (test/native/fake_device.h).
#pragma once
#include "../device.h"
#include "distill_kernels.h"

namespace st {

// Every row's loss and error into rows[0..a.student.rows) and, when p.grad,
// the gradient into a.grad; arguments already validated and planned by
// distill_loss(). ERR_UNSUPPORTED when no device is usable.
Status cuda_distill_rows(const DistillArgs& a, const DistillPlan& p, RowOut* rows);

// One chunk of rows on the device, passed to the kernel by value; row 0 is
// the chunk's first row. Pointers are device memory.
struct DistillChunk {
  const void* z;
  DType zt;
  const void* t;  // dense teacher, or null
  DType tt;
  const int32_t* idx;  // top-k
  const float* lp;
  int64_t k;
  const int32_t* labels;  // or null
  int64_t ignore;
  int64_t rows, cols;
  void* grad;        // or null
  float* topk_p;     // rows × k scratch
  double* loss;      // per row
  int32_t* err;      // per row: RowError
  DistillPlan p;
  float beta;
};

// Queues the row kernel over a chunk on the stream (distill.cu).
using DistillLaunch = void (*)(const DistillChunk& c, gpu::Stream s);

// cuda_distill_rows' host side: moves chunks of rows to the device, runs
// `launch` on each and copies the results back. A chunk's per-row errors
// come back first: when a row failed, only the gradients of the rows before
// it are copied (the failing row and those after it are left as they were,
// so an in-place gradient still holds the student logits that
// distill_loss() describes), its rows' results are stored and no further
// chunk runs.
Status distill_rows_on_device(const gpu::Runtime& rt, DistillLaunch launch, const DistillArgs& a, const DistillPlan& p,
                              RowOut* rows);

}  // namespace st
