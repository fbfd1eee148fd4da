// Group quantization: the public entry points of the quant room.
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace st {

// Values match lib/quantize.ts FORMAT_CODES.
enum class QFormat : int32_t {
  Q4_0 = 0, Q4_1 = 1, Q8_0 = 2, Int4 = 3, Int8 = 4,
  Q5_0 = 5, Q5_1 = 6, Q2_K = 7, Q3_K = 8, Q4_K = 9, Q5_K = 10, Q6_K = 11,
};
constexpr int32_t kQFormatCount = 12;

// The table of type traits: one row per format.
struct QFormatTraits {
  const char* name;
  int bits;          // bits per code
  bool ggml;         // GGUF block layout (scale inside the block) vs compressed-tensors
  int block;         // ggml: values per block (32, K-quants 256); compressed-tensors: 0 (group size is a parameter)
  int block_bytes;   // ggml: bytes per block
};
// Whether `importance` selects llama.cpp's weighted quantizer (every GGUF
// format but Q8_0, which ignores it as ggml does).
bool ggml_weighted(QFormat f);
const QFormatTraits& qformat_traits(QFormat f);

enum class Search : int32_t { None = 0, Mse = 1 };
enum class NonFinite : int32_t { Error = 0, Zero = 1 };

struct QuantizeArgs {
  MatrixView src;                 // f32/f16/bf16 [rows, cols]
  QFormat format = QFormat::Q4_0;
  int64_t group = 32;             // ggml: 32; int4/int8: group size (cols for per-channel)
  bool symmetric = true;          // int4/int8 only
  DType scale_dtype = DType::F16; // int4/int8 only: F16, BF16 or F32
  // GGUF formats: None = ggml's quantizers — the reference ones, or with
  // `importance` llama.cpp's importance-weighted ones (ggml_quantize_chunk
  // with an imatrix); Mse = slimtensor's own search (q4_0/q4_1/q8_0), which
  // weighs by `importance` when given. int4/int8: importance needs Mse.
  Search search = Search::None;
  const float* importance = nullptr;  // optional per-column weights, length cols
  NonFinite non_finite = NonFinite::Error;
  Kernel kernel = Kernel::Auto;
  int threads = 0;                // 0: the pool's count

  // Outputs, allocated by the caller (sizes: quant_output_sizes).
  uint8_t* data = nullptr;        // ggml: blocks; int4/int8: packed codes, row stride = data_row_bytes
  void* scales = nullptr;         // int4/int8: [rows, groups] of scale_dtype
  int8_t* zeros = nullptr;        // int4/int8 asymmetric: [rows, groups] zero points
};

struct QuantSizes {
  int64_t groups_per_row;   // ggml: blocks per row
  int64_t data_row_bytes;   // bytes of data per row (int formats: padded to whole int32 words)
};
QuantSizes quant_sizes(QFormat f, int64_t cols, int64_t group);

struct ErrorStats;

// Validates arguments (shapes, group size, pointers) and quantizes. With
// `error`, also measures the result against the input as
// quantization_error does (the same sums, bit for bit), each row right
// after it is quantized.
Status quantize(const QuantizeArgs& a, ErrorStats* error = nullptr);

struct DequantizeArgs {
  QFormat format = QFormat::Q4_0;
  int64_t rows = 0, cols = 0, group = 32;
  const uint8_t* data = nullptr;
  const void* scales = nullptr;
  DType scale_dtype = DType::F16;
  const int8_t* zeros = nullptr;  // null: symmetric
  Kernel kernel = Kernel::Auto;
  int threads = 0;
};

// Writes rows*cols values of out_dtype (F32, F16 or BF16).
Status dequantize(const DequantizeArgs& a, void* out, DType out_dtype);

struct ErrorStats {
  double sum_sq_err = 0, sum_sq_ref = 0, sum_sq_deq = 0, dot = 0, max_abs = 0;
  int64_t count = 0;
};

// Compares `original` with the dequantization of `q` without materialising it.
Status quantization_error(const MatrixView& original, const DequantizeArgs& q, ErrorStats* out);

}  // namespace st
