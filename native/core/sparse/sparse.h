// N:M structured sparsity, 2:4 compression and the 2:4 sparse matrix
// multiply; magnitude pruning without structure. The public entry points of
// the sparse room: plain structs in, Status out.
//
// Layouts (shared/reference/FORMATS.md):
//   bitmask  [rows, ceil(cols/8)] bytes: bit j of byte k is column 8k+j of
//            the row (little bit order); padding bits are 0. Used for the
//            masks of prune() and for compressed-tensors' sparse-24-bitmask.
//   values   [rows, cols/2]: the kept values of each row in column order.
//   meta     per row, one nibble per group of 4 columns, group g at bits
//            4·(g mod w) of word g/w, where a word is int16 (w = 4) for
//            float values and int32 (w = 8) for 8- and 4-bit codes; the
//            nibble is idx0 | idx1 << 2 with idx0 < idx1 the kept positions
//            (the CUTLASS/PyTorch convention: {0,1} -> 0b0100, {2,3} ->
//            0b1110). Words are little-endian, so nibble g is in byte g/2
//            (low nibble for even g) whichever the word size; padding
//            nibbles are 0.
#pragma once
#include <cstdint>
#include <vector>

#include "../tensor.h"

namespace st {

// How the kept elements of a group are chosen. Values match lib/sparsity.ts.
enum class SparseScore : int32_t {
  Magnitude = 0,  // the N largest |w| (NaN: ERR_VALUE)
  Wanda = 1,      // the N largest |w|·norm[col] (computed in f32; a NaN score: ERR_VALUE)
  NonZero = 2,    // the input must already be N:M: its non-zeros, then the lowest-index zeros (more than N non-zeros: ERR_VALUE)
  Mask = 3,       // exactly the bits of a given bitmask (each group must have N of them: ERR_VALUE otherwise)
};

// Ties: a higher score ranks first; equal scores rank by lower column. The
// N highest-ranked elements of each group are kept.
struct SelectArgs {
  MatrixView src;                     // f32/f16/bf16 [rows, cols]; cols a multiple of m
  int n = 2, m = 4;                   // 1 <= n <= m <= 32
  SparseScore score = SparseScore::Magnitude;
  const float* norms = nullptr;       // Wanda: cols values, finite and >= 0
  const uint8_t* mask_in = nullptr;   // Mask: bitmask [rows, ceil(cols/8)]
  Kernel kernel = Kernel::Auto;
  int threads = 0;                    // 0: the pool's count

  // Outputs (allocated by the caller; null: not written, at least one).
  uint8_t* mask = nullptr;            // bitmask of the kept elements
  void* dense = nullptr;              // [rows, cols] of src.dtype: kept values, +0 elsewhere
  void* values = nullptr;             // 2:4 only: [rows, cols/2] of src.dtype
  uint8_t* meta = nullptr;            // 2:4 only: [rows, meta_row_bytes(cols, meta_word_bytes)]
  int meta_word_bytes = 2;            // 2 (int16 words) or 4 (int32)
};

int64_t bitmask_row_bytes(int64_t cols);
// Bytes of meta per row for `cols` columns (a multiple of 4) in words of `word_bytes`.
int64_t meta_row_bytes(int64_t cols, int word_bytes);

// Validates and selects. ERR_VALUE names the first offending element or group.
Status sparse_select(const SelectArgs& a);

// 2:4 compression of int4/int8 codes (compressed-tensors packing: `bits`-bit
// codes biased by 2^(bits-1), packed into int32 words along each row, the
// first element lowest). An element counts as non-zero when its code differs
// from its group's zero point. Kept codes are packed the same way into rows
// of cols/2 codes; meta words are int32.
struct QuantSelectArgs {
  int bits = 4;                       // 4 or 8
  int64_t rows = 0, cols = 0;         // cols a multiple of 4
  int64_t group = 0;                  // quantization group size (cols for per-channel)
  const int32_t* codes = nullptr;     // [rows, ceil(cols*bits/32)]
  const int8_t* zeros = nullptr;      // [rows, cols/group] zero points; null: symmetric (0)
  SparseScore score = SparseScore::NonZero;  // NonZero or Mask
  const uint8_t* mask_in = nullptr;
  int threads = 0;
  int32_t* values = nullptr;          // [rows, ceil(cols/2*bits/32)]
  uint8_t* meta = nullptr;            // [rows, meta_row_bytes(cols, 4)]
  uint8_t* mask = nullptr;            // bitmask, may be null
};
Status sparse_select_quant(const QuantSelectArgs& a);

// decompress24: the dense matrix of a 2:4-compressed one, from its meta
// (preferred) or its bitmask. Positions not kept get +0 (floats) or the
// group's zero-point code (quantized).
struct ExpandArgs {
  int64_t rows = 0, cols = 0;         // the dense shape; cols a multiple of 4
  // Float values (bits == 0) of `dtype`, or int4/int8 codes (bits 4/8).
  int bits = 0;
  DType dtype = DType::F32;
  const void* values = nullptr;       // [rows, cols/2] (floats) or packed codes
  const uint8_t* meta = nullptr;      // null: use `mask`
  int meta_word_bytes = 2;
  const uint8_t* mask = nullptr;
  int64_t group = 0;                  // quantized: group size
  const int8_t* zeros = nullptr;      // quantized: zero points, null: symmetric
  Kernel kernel = Kernel::Auto;
  int threads = 0;
  void* out = nullptr;                // [rows, cols] of dtype, or packed codes [rows, ceil(cols*bits/32)] int32
};
Status sparse_expand(const ExpandArgs& a);

// spmm24: Y = A·op(X) (or Y += ...) for a 2:4-compressed A [rows, cols] with
// float values and int16 meta, X f32 [cols, n] (or [n, cols] with trans_x).
// Each Y element is one fused-multiply-add chain over A's kept values in
// column order,
//
//   acc = accumulate ? Y[i][j] : +0;  for kept (v, c) of row i: acc = fma(v, X[c][j], acc)
//
// which is the chain of the dense GEMM (lowrank/gemm.h) over the
// decompressed row with its zero terms left out: for finite X both give the
// same bits (a zero term leaves any accumulator but -0 unchanged, and a chain
// from +0 never reaches -0; so with accumulate, a Y element of -0 may end -0
// here and +0 in the GEMM). Every kernel and thread count gives the same bits.
struct Spmm24Args {
  int64_t rows = 0, cols = 0, n = 0;
  DType dtype = DType::F32;           // of the values
  const void* values = nullptr;       // [rows, cols/2]
  const uint8_t* meta = nullptr;      // int16 words, meta_row_bytes(cols, 2) per row
  const float* x = nullptr;
  bool trans_x = false;
  float* y = nullptr;                 // [rows, n]
  bool accumulate = false;
  Kernel kernel = Kernel::Auto;
  int threads = 0;
};
Status spmm24(const Spmm24Args& a);

// The CPU kernel `k` resolves to for spmm24 ("reference", "avx2", "avx512").
const char* spmm24_kernel_name(Kernel k);

// Unstructured magnitude pruning: zero the `k` smallest |w| of a tensor
// (scope per layer) or across several tensors (global), ranking by |w| and
// then by position (lower first), so exactly k elements are zeroed: the
// largest-index ones among those tied at the threshold. Selection by radix
// histograms (two passes over the data), no sort.
struct UnstructuredArgs {
  std::vector<MatrixView> src;        // f32/f16/bf16
  bool global = false;
  std::vector<int64_t> k;             // per tensor (layer scope) or k[0] (global)
  int threads = 0;
  std::vector<void*> dense;           // per tensor: [rows, cols] of its dtype
  std::vector<uint8_t*> mask;         // per tensor: bitmask, may be null
  // Results: per tensor, the |w| at the cut (as f32 bits: the largest pruned
  // magnitude of the tensor's selection — every tensor's when global — or 0
  // when the selection prunes nothing) and the number pruned from it.
  std::vector<uint32_t> threshold_bits;
  std::vector<int64_t> pruned;
};
Status prune_unstructured(UnstructuredArgs* a);

}  // namespace st
