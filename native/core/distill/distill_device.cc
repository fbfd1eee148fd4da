// The host side of the distill room's CUDA path (see distill_cuda.h).
#include <algorithm>
#include <vector>

#include "distill_cuda.h"

namespace st {

Status distill_rows_on_device(const gpu::Runtime& rt, DistillLaunch launch, const DistillArgs& a, const DistillPlan& p,
                              RowOut* out) {
  const int64_t rows = a.student.rows, cols = a.student.cols;
  const int64_t zrow = cols * static_cast<int64_t>(dtype_size(a.student.dtype));
  const int64_t trow = p.topk ? 0 : cols * static_cast<int64_t>(dtype_size(a.teacher.dtype));
  const int64_t krow = p.topk ? a.k * 12 : 0;  // indices, logprobs, probabilities
  const int64_t grow = p.grad ? zrow : 0;
  const int64_t n = gpu::chunk_rows(rows, zrow + trow + krow + grow + 4 + 8 + 4);

  // Host memory the stream copies into, declared before the call that
  // drains the stream.
  std::vector<double> hl(static_cast<size_t>(n));
  std::vector<int32_t> he(static_cast<size_t>(n));
  gpu::DeviceCall call(rt);
  ST_TRY(call.begin());
  void *z = nullptr, *t = nullptr, *grad = nullptr;
  int32_t *idx = nullptr, *labels = nullptr, *err = nullptr;
  float *lp = nullptr, *tp = nullptr;
  double* loss = nullptr;
  ST_TRY(call.alloc(static_cast<size_t>(n * zrow), &z));
  ST_TRY(call.alloc(static_cast<size_t>(n * trow), &t));
  if (p.topk) {
    ST_TRY(call.alloc(static_cast<size_t>(n * a.k), &idx));
    ST_TRY(call.alloc(static_cast<size_t>(n * a.k), &lp));
    ST_TRY(call.alloc(static_cast<size_t>(n * a.k), &tp));
  }
  if (a.labels) ST_TRY(call.alloc(static_cast<size_t>(n), &labels));
  ST_TRY(call.alloc(static_cast<size_t>(n * grow), &grad));
  ST_TRY(call.alloc(static_cast<size_t>(n), &loss));
  ST_TRY(call.alloc(static_cast<size_t>(n), &err));

  DistillChunk c{};
  c.z = z;
  c.zt = a.student.dtype;
  c.t = p.topk ? nullptr : t;
  c.tt = a.teacher.dtype;
  c.idx = idx;
  c.lp = lp;
  c.topk_p = tp;
  c.k = a.k;
  c.labels = labels;
  c.ignore = a.ignore_index;
  c.cols = cols;
  c.grad = p.grad ? grad : nullptr;
  c.loss = loss;
  c.err = err;
  c.p = p;
  c.beta = a.beta;

  for (int64_t r0 = 0; r0 < rows; r0 += n) {
    c.rows = std::min(n, rows - r0);
    ST_TRY(call.to_device(z, static_cast<const uint8_t*>(a.student.data) + r0 * zrow, static_cast<size_t>(c.rows * zrow)));
    if (!p.topk) {
      ST_TRY(call.to_device(t, static_cast<const uint8_t*>(a.teacher.data) + r0 * trow, static_cast<size_t>(c.rows * trow)));
    } else {
      ST_TRY(call.to_device(idx, a.topk_indices + r0 * a.k, static_cast<size_t>(c.rows * a.k) * 4));
      ST_TRY(call.to_device(lp, a.topk_logprobs + r0 * a.k, static_cast<size_t>(c.rows * a.k) * 4));
    }
    if (a.labels) ST_TRY(call.to_device(labels, a.labels + r0, static_cast<size_t>(c.rows) * 4));
    launch(c, call.stream());
    ST_TRY(call.launched("distill_kernel"));
    // The row errors first: a failed row's gradient was never written on the
    // device, and with an in-place gradient its host row is the student's,
    // which distill_loss() reads to name the bad value.
    ST_TRY(call.to_host(he.data(), err, static_cast<size_t>(c.rows) * 4));
    ST_TRY(call.to_host(hl.data(), loss, static_cast<size_t>(c.rows) * 8));
    ST_TRY(call.sync());
    int64_t good = 0;  // rows before the chunk's first failing one
    while (good < c.rows && static_cast<RowError>(he[static_cast<size_t>(good)]) == RowError::Ok) ++good;
    for (int64_t r = 0; r < c.rows; ++r) {
      out[r0 + r].loss = hl[static_cast<size_t>(r)];
      out[r0 + r].error = static_cast<RowError>(he[static_cast<size_t>(r)]);
    }
    if (p.grad) {
      ST_TRY(call.to_host(static_cast<uint8_t*>(a.grad) + r0 * zrow, grad, static_cast<size_t>(good * zrow)));
      ST_TRY(call.sync());
    }
    if (good < c.rows) break;  // distill_loss() reports the first failing row
  }
  return Status::Ok();
}

}  // namespace st
