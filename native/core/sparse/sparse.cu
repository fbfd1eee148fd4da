// CUDA kernel of the sparse room: N:M selection with every output the CPU
// has (mask, dense copy, 2:4 values and meta), one thread per span of a row
// running sm::select_span, the function the scalar reference runs: the
// GPU's bytes are the CPU's. The host side moves a chunk of rows to the
// device, runs the kernel and copies the outputs back, so device memory use
// is bounded whatever the tensor's size.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "../device.h"
#include "sparse_cuda.h"
#include "sparse_math.h"

namespace st {

namespace {

constexpr int kThreadsPerBlock = 128;
constexpr unsigned long long kNoBad = ~0ull;

__global__ void select_kernel(sm::SelectCtx c, int64_t rows, int64_t spans, unsigned long long* first_bad) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= rows * spans) return;
  const int64_t row = item / spans, span = item % spans;
  const int64_t bad = sm::select_span(c, row, span);
  if (bad >= 0) atomicMin(first_bad, static_cast<unsigned long long>(row * c.cols + bad));
}

}  // namespace

Status cuda_sparse_select(const SelectArgs& a) {
  ST_TRY(gpu::device_ready());
  const sm::SelectCtx host = sm::make_ctx(a);
  const int64_t rows = a.src.rows, cols = a.src.cols;
  const int64_t in_row = cols * host.esize;
  const int64_t mask_row = host.mask_row_bytes;
  const int64_t dense_row = a.dense ? in_row : 0;
  const int64_t values_row = a.values ? in_row / 2 : 0;
  const int64_t meta_row = a.meta ? host.meta_row_bytes : 0;
  const int64_t min_row = a.mask_in ? mask_row : 0;
  const int64_t out_mask_row = a.mask ? mask_row : 0;
  const int64_t n = gpu::chunk_rows(rows, in_row + min_row + out_mask_row + dense_row + values_row + meta_row);

  gpu::DeviceCall call(gpu::cuda_runtime());
  ST_TRY(call.begin());
  void *src = nullptr, *norms = nullptr, *mask_in = nullptr, *mask = nullptr, *dense = nullptr, *values = nullptr, *meta = nullptr;
  unsigned long long* first_bad = nullptr;
  ST_TRY(call.alloc(static_cast<size_t>(n * in_row), &src));
  ST_TRY(call.alloc(static_cast<size_t>(n * min_row), &mask_in));
  ST_TRY(call.alloc(static_cast<size_t>(n * out_mask_row), &mask));
  ST_TRY(call.alloc(static_cast<size_t>(n * dense_row), &dense));
  ST_TRY(call.alloc(static_cast<size_t>(n * values_row), &values));
  ST_TRY(call.alloc(static_cast<size_t>(n * meta_row), &meta));
  ST_TRY(call.alloc(1, &first_bad));
  if (a.norms) {
    ST_TRY(call.alloc(static_cast<size_t>(cols) * sizeof(float), &norms));
    ST_TRY(call.to_device(norms, a.norms, static_cast<size_t>(cols) * sizeof(float)));
  }
  sm::SelectCtx c = host;
  c.src = src;
  c.norms = static_cast<const float*>(norms);
  c.mask_in = static_cast<const uint8_t*>(mask_in);
  c.mask = static_cast<uint8_t*>(mask);
  c.dense = dense;
  c.values = values;
  c.meta = static_cast<uint8_t*>(meta);
  const int64_t spans = (cols + c.span - 1) / c.span;
  // The outputs a chunk copies back: (host, device, bytes per row).
  const struct {
    void* host;
    const void* dev;
    int64_t row_bytes;
  } outs[] = {{a.mask, mask, out_mask_row}, {a.dense, dense, dense_row}, {a.values, values, values_row}, {a.meta, meta, meta_row}};
  for (int64_t r0 = 0; r0 < rows; r0 += n) {
    const int64_t cr = std::min(n, rows - r0);
    ST_TRY(call.to_device(src, static_cast<const uint8_t*>(a.src.data) + r0 * in_row, static_cast<size_t>(cr * in_row)));
    if (a.mask_in) ST_TRY(call.to_device(mask_in, a.mask_in + r0 * mask_row, static_cast<size_t>(cr * mask_row)));
    ST_TRY(call.fill(first_bad, 0xff, sizeof(unsigned long long)));
    const int64_t items = cr * spans;
    select_kernel<<<static_cast<unsigned int>((items + kThreadsPerBlock - 1) / kThreadsPerBlock), kThreadsPerBlock, 0, call.stream()>>>(
        c, cr, spans, first_bad);
    ST_TRY(call.launched("select_kernel"));
    unsigned long long bad = kNoBad;
    ST_TRY(call.to_host(&bad, first_bad, sizeof bad));
    ST_TRY(call.sync());
    // Chunks run in row order: the first chunk with a bad group holds the
    // first one, as the CPU reports it.
    if (bad != kNoBad) {
      const int64_t flat = static_cast<int64_t>(bad);
      return sparse_select_error(a, r0 + flat / cols, flat % cols);
    }
    for (const auto& o : outs) {
      if (o.host && o.row_bytes > 0) {
        ST_TRY(call.to_host(static_cast<uint8_t*>(o.host) + r0 * o.row_bytes, o.dev, static_cast<size_t>(cr * o.row_bytes)));
      }
    }
    ST_TRY(call.sync());
  }
  return Status::Ok();
}

}  // namespace st
