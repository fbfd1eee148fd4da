// CUDA kernel of the sparse room: N:M selection with every output the CPU
// has (mask, dense copy, 2:4 values and meta), one thread per span of a row
// running sm::select_span, the function the scalar reference runs: the
// GPU's bytes are the CPU's. The host side moves a chunk of rows to the
// device, runs the kernel and copies the outputs back, so device memory use
// is bounded whatever the tensor's size.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "../cuda_util.cuh"
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

Status copy_out(void* host, const void* dev, int64_t r0, int64_t rows, int64_t row_bytes) {
  if (!host || row_bytes == 0) return Status::Ok();
  ST_CUDA_CHECK(cudaMemcpy(static_cast<uint8_t*>(host) + r0 * row_bytes, dev, static_cast<size_t>(rows * row_bytes), cudaMemcpyDeviceToHost));
  return Status::Ok();
}

}  // namespace

Status cuda_sparse_select(const SelectArgs& a) {
  Status st = device_ready();
  if (!st.ok()) return st;
  const sm::SelectCtx host = sm::make_ctx(a);
  const int64_t rows = a.src.rows, cols = a.src.cols;
  const int64_t in_row = cols * host.esize;
  const int64_t mask_row = host.mask_row_bytes;
  const int64_t dense_row = a.dense ? in_row : 0;
  const int64_t values_row = a.values ? in_row / 2 : 0;
  const int64_t meta_row = a.meta ? host.meta_row_bytes : 0;
  const int64_t min_row = a.mask_in ? mask_row : 0;
  const int64_t out_mask_row = a.mask ? mask_row : 0;
  const int64_t n = chunk_rows(rows, in_row + min_row + out_mask_row + dense_row + values_row + meta_row);

  DeviceBuffer src, norms, mask_in, mask, dense, values, meta, first_bad;
  if (!(st = src.alloc(static_cast<size_t>(n * in_row))).ok()) return st;
  if (!(st = mask_in.alloc(static_cast<size_t>(n * min_row))).ok()) return st;
  if (!(st = mask.alloc(static_cast<size_t>(n * out_mask_row))).ok()) return st;
  if (!(st = dense.alloc(static_cast<size_t>(n * dense_row))).ok()) return st;
  if (!(st = values.alloc(static_cast<size_t>(n * values_row))).ok()) return st;
  if (!(st = meta.alloc(static_cast<size_t>(n * meta_row))).ok()) return st;
  if (!(st = first_bad.alloc(sizeof(unsigned long long))).ok()) return st;
  if (a.norms) {
    if (!(st = norms.alloc(static_cast<size_t>(cols) * sizeof(float))).ok()) return st;
    ST_CUDA_CHECK(cudaMemcpy(norms.get<float>(), a.norms, static_cast<size_t>(cols) * sizeof(float), cudaMemcpyHostToDevice));
  }
  sm::SelectCtx c = host;
  c.src = src.get<const void>();
  c.norms = a.norms ? norms.get<const float>() : nullptr;
  c.mask_in = a.mask_in ? mask_in.get<const uint8_t>() : nullptr;
  c.mask = a.mask ? mask.get<uint8_t>() : nullptr;
  c.dense = a.dense ? dense.get<void>() : nullptr;
  c.values = a.values ? values.get<void>() : nullptr;
  c.meta = a.meta ? meta.get<uint8_t>() : nullptr;
  const int64_t spans = (cols + c.span - 1) / c.span;
  for (int64_t r0 = 0; r0 < rows; r0 += n) {
    const int64_t cr = std::min(n, rows - r0);
    ST_CUDA_CHECK(cudaMemcpy(src.get<void>(), static_cast<const uint8_t*>(a.src.data) + r0 * in_row, static_cast<size_t>(cr * in_row),
                             cudaMemcpyHostToDevice));
    if (a.mask_in) {
      ST_CUDA_CHECK(cudaMemcpy(mask_in.get<void>(), a.mask_in + r0 * mask_row, static_cast<size_t>(cr * mask_row), cudaMemcpyHostToDevice));
    }
    ST_CUDA_CHECK(cudaMemset(first_bad.get<void>(), 0xff, sizeof(unsigned long long)));
    const int64_t items = cr * spans;
    select_kernel<<<static_cast<unsigned int>((items + kThreadsPerBlock - 1) / kThreadsPerBlock), kThreadsPerBlock>>>(
        c, cr, spans, first_bad.get<unsigned long long>());
    ST_CUDA_CHECK(cudaGetLastError());
    unsigned long long bad = kNoBad;
    ST_CUDA_CHECK(cudaMemcpy(&bad, first_bad.get<void>(), sizeof bad, cudaMemcpyDeviceToHost));
    // Chunks run in row order: the first chunk with a bad group holds the
    // first one, as the CPU reports it.
    if (bad != kNoBad) {
      const int64_t flat = static_cast<int64_t>(bad);
      return sparse_select_error(a, r0 + flat / cols, flat % cols);
    }
    if (!(st = copy_out(a.mask, mask.get<void>(), r0, cr, out_mask_row)).ok()) return st;
    if (!(st = copy_out(a.dense, dense.get<void>(), r0, cr, dense_row)).ok()) return st;
    if (!(st = copy_out(a.values, values.get<void>(), r0, cr, values_row)).ok()) return st;
    if (!(st = copy_out(a.meta, meta.get<void>(), r0, cr, meta_row)).ok()) return st;
  }
  return Status::Ok();
}

}  // namespace st
