// Validation, kernel choice and threading for the sparse room. The math is
// in sparse_math.h; the loops in sparse_ref.cc (reference), sparse_avx2.cc,
// sparse_avx512.cc and sparse.cu. Unstructured pruning (radix selection)
// lives here: it is histogram passes, the same code on every CPU.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "../cpu.h"
#include "sparse_cuda.h"
#include "sparse_kernels.h"

namespace st {

namespace {

// Rows per parallel chunk: ~256 KiB of input, at least one row.
int64_t row_grain(int64_t row_bytes) { return std::max<int64_t>(1, (int64_t{256} << 10) / std::max<int64_t>(1, row_bytes)); }

std::string pos(int64_t row, int64_t col) { return "[" + std::to_string(row) + ", " + std::to_string(col) + "]"; }

std::string group_name(int64_t row, int64_t col, int m) {
  return "group " + std::to_string(col / m) + " of row " + std::to_string(row) + " (columns " + std::to_string(col) + ".." +
         std::to_string(col + m - 1) + ")";
}

std::string pattern(int n, int m) { return std::to_string(n) + ":" + std::to_string(m); }

std::string float_text(float v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

Status check_cpu_kernel(Kernel k, const char* what, bool has_avx512) {
  switch (k) {
    case Kernel::Auto:
    case Kernel::Reference:
      return Status::Ok();
    case Kernel::Avx2:
      if (!cpu_enabled().avx2) return Status::Error(Code::Unsupported, std::string("the AVX2 kernel of ") + what + " is not available on this CPU or build");
      return Status::Ok();
    case Kernel::Avx512:
      if (!has_avx512) return Status::Error(Code::Unsupported, std::string(what) + " has no AVX-512 kernel; use 'avx2' or 'auto'");
      if (!cpu_enabled().avx512) return Status::Error(Code::Unsupported, std::string("the AVX-512 kernel of ") + what + " is not available on this CPU or build");
      return Status::Ok();
    case Kernel::Cuda:
      return Status::Ok();
  }
  return Status::Error(Code::Value, "unknown kernel");
}

// The first bad flat index a row kernel reported (INT64_MAX: none). A chunk
// stops only once a smaller index is known, so the minimum is exact.
struct FirstBad {
  std::atomic<int64_t> v{INT64_MAX};
  bool before(int64_t flat) const { return v.load(std::memory_order_relaxed) < flat; }
  void offer(int64_t flat) {
    int64_t cur = v.load();
    while (flat < cur && !v.compare_exchange_weak(cur, flat)) {}
  }
};

Status describe_select_error(const SelectArgs& a, int64_t row, int64_t col) {
  const sm::SelectCtx c = sm::make_ctx(a);
  const int64_t base = row * a.src.cols;
  switch (a.score) {
    case SparseScore::Magnitude:
    case SparseScore::Wanda: {
      const float w = sm::raw_to_f32(sm::load_raw(c.src, c.esize, base + col), c.dtype);
      if (std::isnan(w)) {
        return Status::Error(Code::Value, "input has a NaN at " + pos(row, col) + " (flat " + std::to_string(base + col) + "); NaN weights cannot be ranked");
      }
      return Status::Error(Code::Value, "the Wanda score |w|·activationNorms[" + std::to_string(col) + "] of " + pos(row, col) + " is NaN (w = " +
                                            float_text(w) + ", norm = " + float_text(a.norms[col]) + ")");
    }
    case SparseScore::NonZero: {
      int nz = 0;
      for (int i = 0; i < a.m; ++i) nz += (sm::load_raw(c.src, c.esize, base + col + i) & (c.esize == 4 ? 0x7fffffffu : 0x7fffu)) != 0 ? 1 : 0;
      return Status::Error(Code::Value, "the input is not " + pattern(a.n, a.m) + " sparse: " + group_name(row, col, a.m) + " has " + std::to_string(nz) +
                                            " non-zeros; prune it first (compress24 with prune: true, or prune()) or pass the mask to keep");
    }
    case SparseScore::Mask: {
      int k = 0;
      const uint8_t* mr = a.mask_in + row * c.mask_row_bytes;
      for (int i = 0; i < a.m; ++i) k += (mr[(col + i) >> 3] >> ((col + i) & 7)) & 1;
      return Status::Error(Code::Value, "mask: " + group_name(row, col, a.m) + " keeps " + std::to_string(k) + " elements; " + pattern(a.n, a.m) +
                                            " needs exactly " + std::to_string(a.n));
    }
  }
  return Status::Error(Code::Internal, "unknown score");
}

Status check_select(const SelectArgs& a) {
  if (a.n < 1 || a.m < 1 || a.n > a.m || a.m > sm::kMaxM) {
    return Status::Error(Code::Value, "pattern " + pattern(a.n, a.m) + ": need 1 <= N <= M <= " + std::to_string(sm::kMaxM));
  }
  if (a.src.rows < 0 || a.src.cols < 0) return Status::Error(Code::Shape, "negative dimension");
  if (!is_float_dtype(a.src.dtype)) return Status::Error(Code::DType, std::string("input must be f32, f16 or bf16, got ") + dtype_name(a.src.dtype));
  if (a.src.cols % a.m != 0) {
    return Status::Error(Code::Shape, "row length " + std::to_string(a.src.cols) + " is not a multiple of M = " + std::to_string(a.m) + " (pattern " +
                                          pattern(a.n, a.m) + ")");
  }
  if (a.meta_word_bytes != 2 && a.meta_word_bytes != 4) return Status::Error(Code::Value, "meta words are 2 or 4 bytes");
  if (static_cast<int32_t>(a.score) < 0 || static_cast<int32_t>(a.score) > 3) return Status::Error(Code::Value, "unknown score");
  // An empty matrix has empty (null) buffers: nothing below applies.
  if (a.src.rows == 0 || a.src.cols == 0) return Status::Ok();
  const bool compress = a.values || a.meta;
  if (compress && (a.n != 2 || a.m != 4)) return Status::Error(Code::Value, "compressed output is 2:4 only, got pattern " + pattern(a.n, a.m));
  if (compress && (!a.values || !a.meta)) return Status::Error(Code::Value, "compressed output needs both values and meta");
  if (!a.mask && !a.dense && !compress) return Status::Error(Code::Value, "no output");
  if (a.score == SparseScore::Wanda && !a.norms) return Status::Error(Code::Value, "the Wanda score needs activation norms");
  if (a.score == SparseScore::Mask && !a.mask_in) return Status::Error(Code::Value, "score 'mask' needs a mask");
  return Status::Ok();
}

SelectRowFn pick_select(const SelectArgs& a, Status* st) {
  *st = check_cpu_kernel(a.kernel, "prune/compress24", false);
  if (!st->ok()) return nullptr;
  const SelectRowFn simd = cpu_enabled().avx2 ? avx2::select_row_fn(a) : nullptr;
  if (a.kernel == Kernel::Reference) return ref::select_row;
  return simd ? simd : ref::select_row;
}

}  // namespace

Status sparse_select_error(const SelectArgs& a, int64_t row, int64_t col) { return describe_select_error(a, row, col); }

int64_t bitmask_row_bytes(int64_t cols) { return (cols + 7) / 8; }

int64_t meta_row_bytes(int64_t cols, int word_bytes) {
  const int64_t groups = cols / 4, per = static_cast<int64_t>(word_bytes) * 2;
  return ((groups + per - 1) / per) * word_bytes;
}

Status sparse_select(const SelectArgs& a) {
  Status st = check_select(a);
  if (!st.ok()) return st;
  if (a.src.rows == 0 || a.src.cols == 0) return Status::Ok();
  if (a.kernel == Kernel::Cuda) return cuda_sparse_select(a);
  SelectRowFn fn = pick_select(a, &st);
  if (!fn) return st;
  const sm::SelectCtx c = sm::make_ctx(a);
  const int64_t cols = a.src.cols;
  FirstBad bad;
  parallel_for(a.src.rows, row_grain(cols * c.esize), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (bad.before(r * cols)) return;
      const int64_t col = fn(a, c, r);
      if (col >= 0) {
        bad.offer(r * cols + col);
        return;
      }
    }
  }, a.threads);
  const int64_t flat = bad.v.load();
  if (flat != INT64_MAX) return describe_select_error(a, flat / cols, flat % cols);
  return Status::Ok();
}

Status sparse_select_quant(const QuantSelectArgs& a) {
  if (a.bits != 4 && a.bits != 8) return Status::Error(Code::Value, "codes must be 4 or 8 bits");
  if (a.rows < 0 || a.cols < 0) return Status::Error(Code::Shape, "negative dimension");
  if (a.cols % 4 != 0) return Status::Error(Code::Shape, "row length " + std::to_string(a.cols) + " is not a multiple of 4 (pattern 2:4)");
  if (a.group <= 0 || a.cols % a.group != 0 || a.group % 4 != 0) {
    return Status::Error(Code::Shape, "the quantization group (" + std::to_string(a.group) + ") must divide the row (" + std::to_string(a.cols) +
                                          ") and be a multiple of 4, so that each group keeps half its codes");
  }
  if (a.score != SparseScore::NonZero && a.score != SparseScore::Mask) return Status::Error(Code::Value, "quantized inputs are compressed as they are (or by a mask)");
  if (a.score == SparseScore::Mask && !a.mask_in) return Status::Error(Code::Value, "score 'mask' needs a mask");
  if (a.rows == 0 || a.cols == 0) return Status::Ok();
  FirstBad bad;
  parallel_for(a.rows, row_grain(a.cols * a.bits / 8), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (bad.before(r * a.cols)) return;
      const int64_t col = ref::select_quant_row(a, r);
      if (col >= 0) {
        bad.offer(r * a.cols + col);
        return;
      }
    }
  }, a.threads);
  const int64_t flat = bad.v.load();
  if (flat == INT64_MAX) return Status::Ok();
  const int64_t row = flat / a.cols, col = flat % a.cols;
  if (a.score == SparseScore::Mask) return Status::Error(Code::Value, "mask: " + group_name(row, col, 4) + " does not keep exactly 2 elements");
  return Status::Error(Code::Value, "the quantized input is not 2:4 sparse: " + group_name(row, col, 4) +
                                        " has more than 2 codes other than the zero point; quantize a pruned tensor");
}

Status sparse_expand(const ExpandArgs& a) {
  if (a.rows < 0 || a.cols < 0) return Status::Error(Code::Shape, "negative dimension");
  if (a.cols % 4 != 0) return Status::Error(Code::Shape, "row length " + std::to_string(a.cols) + " is not a multiple of 4");
  if (a.bits != 0 && a.bits != 4 && a.bits != 8) return Status::Error(Code::Value, "codes must be 4 or 8 bits");
  if (a.bits == 0 && !is_float_dtype(a.dtype)) return Status::Error(Code::DType, "values must be f32, f16 or bf16");
  // A group of 4 columns reads one zero point, and the kept codes share
  // scales with half the group: both need groups of whole 2:4 groups.
  if (a.bits != 0 && (a.group <= 0 || a.cols % a.group != 0 || a.group % 4 != 0)) {
    return Status::Error(Code::Shape, "the quantization group (" + std::to_string(a.group) + ") must divide the row (" + std::to_string(a.cols) +
                                          ") and be a multiple of 4");
  }
  if (a.meta_word_bytes != 2 && a.meta_word_bytes != 4) return Status::Error(Code::Value, "meta words are 2 or 4 bytes");
  if (a.kernel == Kernel::Cuda) return Status::Error(Code::Unsupported, "decompress24 has no CUDA kernel; use the CPU ('auto')");
  Status st = check_cpu_kernel(a.kernel, "decompress24", false);
  if (!st.ok()) return st;
  if (a.rows == 0 || a.cols == 0) return Status::Ok();  // empty buffers are null
  if (!a.meta && !a.mask) return Status::Error(Code::Value, "decompress24 needs the meta or the bitmask");
  FirstBad bad;
  const int64_t row_bytes = a.bits == 0 ? a.cols * static_cast<int64_t>(dtype_size(a.dtype)) : a.cols * a.bits / 8;
  parallel_for(a.rows, row_grain(row_bytes), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (bad.before(r * a.cols)) return;
      const int64_t col = ref::expand_row(a, r);
      if (col >= 0) {
        bad.offer(r * a.cols + col);
        return;
      }
    }
  }, a.threads);
  const int64_t flat = bad.v.load();
  if (flat == INT64_MAX) return Status::Ok();
  const int64_t row = flat / a.cols, col = flat % a.cols;
  if (a.meta) {
    const int64_t g = col / 4;
    const uint32_t code = (a.meta[row * meta_row_bytes(a.cols, a.meta_word_bytes) + (g >> 1)] >> (4 * (g & 1))) & 15u;
    char bin[8];
    std::snprintf(bin, sizeof bin, "0b%u%u%u%u", (code >> 3) & 1u, (code >> 2) & 1u, (code >> 1) & 1u, code & 1u);
    return Status::Error(Code::Value, "not 2:4: meta of " + group_name(row, col, 4) + " is " + bin +
                                          ", not a 2:4 code (idx0 | idx1 << 2 with idx0 < idx1)");
  }
  return Status::Error(Code::Value, "not 2:4: the bitmask of " + group_name(row, col, 4) + " does not keep exactly 2 elements");
}

// ---- spmm24 -----------------------------------------------------------------

namespace {

Spmm24Fn spmm_fn(Kernel k) {
  switch (k) {
    case Kernel::Reference: return ref::spmm24_rows;
    case Kernel::Avx2: return cpu_enabled().avx2 ? avx2::spmm24_fn() : nullptr;
    case Kernel::Avx512: return cpu_enabled().avx512 ? avx512::spmm24_fn() : nullptr;
    case Kernel::Auto: {
      Spmm24Fn f = cpu_enabled().avx512 ? avx512::spmm24_fn() : nullptr;
      if (!f && cpu_enabled().avx2) f = avx2::spmm24_fn();
      return f ? f : ref::spmm24_rows;
    }
    case Kernel::Cuda: break;
  }
  return nullptr;
}

}  // namespace

const char* spmm24_kernel_name(Kernel k) {
  const Spmm24Fn f = spmm_fn(k);
  if (!f) return "unavailable";
  if (f == ref::spmm24_rows) return "reference";
  if (cpu_enabled().avx512 && f == avx512::spmm24_fn()) return "avx512";
  return "avx2";
}

Status spmm24(const Spmm24Args& a) {
  if (a.rows < 0 || a.cols < 0 || a.n < 0) return Status::Error(Code::Shape, "negative dimension");
  if (a.cols % 4 != 0) return Status::Error(Code::Shape, "the sparse matrix's row length " + std::to_string(a.cols) + " is not a multiple of 4");
  if (!is_float_dtype(a.dtype)) return Status::Error(Code::DType, std::string("values must be f32, f16 or bf16, got ") + dtype_name(a.dtype));
  if (a.kernel == Kernel::Cuda) return Status::Error(Code::Unsupported, "spmm24 has no CUDA kernel (cuSPARSELt's layout is opaque); use the CPU ('auto')");
  Status st = check_cpu_kernel(a.kernel, "spmm24", true);
  if (!st.ok()) return st;
  if (a.rows == 0 || a.n == 0) return Status::Ok();
  if (a.cols == 0) {
    if (!a.accumulate) std::fill(a.y, a.y + a.rows * a.n, 0.0f);
    return Status::Ok();
  }
  const Spmm24Fn fn = spmm_fn(a.kernel);
  if (!fn) return Status::Error(Code::Unsupported, "the requested spmm24 kernel is not in this build");
  Spmm24Plan p;
  p.rows = a.rows;
  p.cols = a.cols;
  p.n = a.n;
  p.dtype = a.dtype;
  p.values = a.values;
  p.meta = a.meta;
  p.meta_row_bytes = meta_row_bytes(a.cols, 2);
  p.y = a.y;
  p.accumulate = a.accumulate;
  // X grouped, [cols/4][n][4]: the caller's memory when it already is (one
  // column), else rearranged once (n·cols floats, small beside A).
  std::vector<float> xg;
  if (a.n == 1) {
    p.xg = a.x;
  } else {
    xg.resize(static_cast<size_t>(a.n * a.cols));
    const int64_t groups = a.cols / 4;
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t j = 0; j < a.n; ++j) {
        float* dst = xg.data() + (g * a.n + j) * 4;
        for (int64_t c = 0; c < 4; ++c) dst[c] = a.trans_x ? a.x[j * a.cols + 4 * g + c] : a.x[(4 * g + c) * a.n + j];
      }
    }
    p.xg = xg.data();
  }
  // Blocks of 8 rows (the SIMD kernels' lanes), ~256 KiB of values per chunk.
  const int64_t blocks = (a.rows + 7) / 8;
  const int64_t block_bytes = 8 * (a.cols / 2) * static_cast<int64_t>(dtype_size(a.dtype));
  parallel_for(blocks, std::max<int64_t>(1, (int64_t{256} << 10) / std::max<int64_t>(1, block_bytes)), [&](int64_t b0, int64_t b1) {
    fn(p, b0 * 8, std::min(a.rows, b1 * 8));
  }, a.threads);
  return Status::Ok();
}

// ---- unstructured -------------------------------------------------------------

namespace {

// A run of rows of one tensor: the unit of the passes that write (a mask
// byte never straddles two chunks).
struct Chunk {
  size_t t;
  int64_t r0, r1;
};

uint32_t key_at(const MatrixView& m, int64_t i) {
  float v;
  if (m.dtype == DType::F32) v = static_cast<const float*>(m.data)[i];
  else {
    const uint16_t h = static_cast<const uint16_t*>(m.data)[i];
    v = m.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
  return f32_bits(v) & 0x7fffffffu;
}

constexpr int kHi = 16, kLo = 15;  // key bits: 31 = 16 (pass 1) + 15 (pass 2)

struct Problem {
  std::vector<size_t> tensors;
  int64_t k = 0, total = 0;
};

// The passes below count the same elements more than once: an input that
// changes between them (an async caller writing into it) is reported, and
// no count it produces is used as an index without a bound.
Status changed_input() {
  return Status::Error(Code::Value, "the input changed while the operation ran (its passes counted different values); keep it unchanged until the call returns");
}

Status solve(UnstructuredArgs* a, const Problem& pb) {
  const int nthreads = a->threads;
  std::vector<Chunk> chunks;
  for (size_t t : pb.tensors) {
    const MatrixView& m = a->src[t];
    if (m.rows == 0 || m.cols == 0) continue;  // nothing to select: no chunks, however many empty rows
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / m.cols);
    for (int64_t r = 0; r < m.rows; r += grain) chunks.push_back({t, r, std::min(m.rows, r + grain)});
  }
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
  // Pass 1: histogram of the high 16 bits; the first NaN.
  std::vector<int64_t> hist1(size_t{1} << kHi, 0);
  std::mutex mu;
  std::atomic<int64_t> nan_chunk{INT64_MAX};
  parallel_for(nchunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<int64_t> h(size_t{1} << kHi, 0);
    for (int64_t ci = c0; ci < c1; ++ci) {
      const Chunk& ch = chunks[static_cast<size_t>(ci)];
      const MatrixView& m = a->src[ch.t];
      for (int64_t i = ch.r0 * m.cols; i < ch.r1 * m.cols; ++i) {
        const uint32_t key = key_at(m, i);
        if (key > sm::kInfBits) {
          int64_t cur = nan_chunk.load();
          while (ci < cur && !nan_chunk.compare_exchange_weak(cur, ci)) {}
          break;
        }
        ++h[key >> kLo];
      }
    }
    std::lock_guard<std::mutex> lk(mu);
    for (size_t b = 0; b < h.size(); ++b) hist1[b] += h[b];
  }, nthreads);
  if (nan_chunk.load() != INT64_MAX) {
    const Chunk& ch = chunks[static_cast<size_t>(nan_chunk.load())];
    const MatrixView& m = a->src[ch.t];
    for (int64_t i = ch.r0 * m.cols; i < ch.r1 * m.cols; ++i) {
      if (key_at(m, i) > sm::kInfBits) {
        const std::string who = a->src.size() == 1 ? std::string("input") : "tensor " + std::to_string(ch.t);
        return Status::Error(Code::Value, who + " has a NaN at " + pos(i / m.cols, i % m.cols) + " (flat " +
                                              std::to_string(i) + "); NaN weights cannot be ranked");
      }
    }
    return changed_input();  // the NaN pass 1 saw is gone
  }
  uint32_t threshold = 0;
  int64_t ties_kept = 0;       // of the elements equal to the threshold, the first ties_kept (by position) stay
  bool prune_equal = false;    // elements equal to the threshold are candidates
  if (pb.k > 0) {
    int64_t less = 0;
    size_t b = 0;
    while (b < hist1.size() && less + hist1[b] < pb.k) less += hist1[b++];
    if (b == hist1.size()) return changed_input();
    // Pass 2: the low 15 bits inside bucket b.
    std::vector<int64_t> hist2(size_t{1} << kLo, 0);
    parallel_for(nchunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<int64_t> h(size_t{1} << kLo, 0);
      for (int64_t ci = c0; ci < c1; ++ci) {
        const Chunk& ch = chunks[static_cast<size_t>(ci)];
        const MatrixView& m = a->src[ch.t];
        for (int64_t i = ch.r0 * m.cols; i < ch.r1 * m.cols; ++i) {
          const uint32_t key = key_at(m, i);
          if ((key >> kLo) == b) ++h[key & ((1u << kLo) - 1)];
        }
      }
      std::lock_guard<std::mutex> lk(mu);
      for (size_t q = 0; q < h.size(); ++q) hist2[q] += h[q];
    }, nthreads);
    size_t q = 0;
    while (q < hist2.size() && less + hist2[q] < pb.k) less += hist2[q++];
    if (q == hist2.size()) return changed_input();
    threshold = static_cast<uint32_t>((b << kLo) | q);
    const int64_t equal = hist2[q];
    const int64_t prune_ties = pb.k - less;  // 1..equal
    ties_kept = equal - prune_ties;
    prune_equal = true;
  }
  // Ties kept before each chunk (only needed when some ties stay and some go).
  std::vector<int64_t> eq_before(chunks.size() + 1, 0);
  if (prune_equal && ties_kept > 0) {
    std::vector<int64_t> eq(chunks.size(), 0);
    parallel_for(nchunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ci = c0; ci < c1; ++ci) {
        const Chunk& ch = chunks[static_cast<size_t>(ci)];
        const MatrixView& m = a->src[ch.t];
        int64_t e = 0;
        for (int64_t i = ch.r0 * m.cols; i < ch.r1 * m.cols; ++i) e += key_at(m, i) == threshold ? 1 : 0;
        eq[static_cast<size_t>(ci)] = e;
      }
    }, nthreads);
    for (size_t ci = 0; ci < chunks.size(); ++ci) eq_before[ci + 1] = eq_before[ci] + eq[ci];
  }
  // Pass 3: write.
  std::vector<int64_t> pruned(chunks.size(), 0);
  parallel_for(nchunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      const Chunk& ch = chunks[static_cast<size_t>(ci)];
      const MatrixView& m = a->src[ch.t];
      const int esize = static_cast<int>(dtype_size(m.dtype));
      void* dense = a->dense[ch.t];
      uint8_t* mask = a->mask[ch.t];
      const int64_t mrb = bitmask_row_bytes(m.cols);
      int64_t ties = eq_before[static_cast<size_t>(ci)];
      int64_t count = 0;
      for (int64_t r = ch.r0; r < ch.r1; ++r) {
        if (mask) std::memset(mask + r * mrb, 0, static_cast<size_t>(mrb));
        for (int64_t c = 0; c < m.cols; ++c) {
          const int64_t i = r * m.cols + c;
          const uint32_t key = key_at(m, i);
          bool cut = false;
          if (prune_equal) {
            if (key < threshold) cut = true;
            else if (key == threshold) cut = ties++ >= ties_kept;
          }
          count += cut ? 1 : 0;
          if (dense) sm::store_raw(dense, esize, i, cut ? 0u : sm::load_raw(m.data, esize, i));
          if (mask && !cut) mask[r * mrb + (c >> 3)] = static_cast<uint8_t>(mask[r * mrb + (c >> 3)] | (1u << (c & 7)));
        }
      }
      pruned[static_cast<size_t>(ci)] = count;
    }
  }, nthreads);
  for (size_t t : pb.tensors) {
    a->threshold_bits[t] = pb.k > 0 ? threshold : 0u;
    a->pruned[t] = 0;
  }
  for (size_t ci = 0; ci < chunks.size(); ++ci) a->pruned[chunks[ci].t] += pruned[ci];
  return Status::Ok();
}

}  // namespace

Status prune_unstructured(UnstructuredArgs* a) {
  const size_t nt = a->src.size();
  if (a->dense.size() != nt || a->mask.size() != nt) return Status::Error(Code::Internal, "one output per tensor");
  if (a->k.size() != (a->global ? size_t{1} : nt)) return Status::Error(Code::Internal, "one count per selection");
  a->threshold_bits.assign(nt, 0);
  a->pruned.assign(nt, 0);
  int64_t total = 0;
  for (size_t t = 0; t < nt; ++t) {
    const MatrixView& m = a->src[t];
    if (!is_float_dtype(m.dtype)) return Status::Error(Code::DType, "tensor " + std::to_string(t) + " must be f32, f16 or bf16");
    if (m.rows < 0 || m.cols < 0) return Status::Error(Code::Shape, "negative dimension");
    if (!a->dense[t] && m.rows * m.cols > 0) return Status::Error(Code::Value, "no output for tensor " + std::to_string(t));
    total += m.rows * m.cols;
    if (!a->global && (a->k[t] < 0 || a->k[t] > m.rows * m.cols)) return Status::Error(Code::Value, "count to prune out of range");
  }
  if (a->global) {
    if (a->k[0] < 0 || a->k[0] > total) return Status::Error(Code::Value, "count to prune out of range");
    Problem pb;
    for (size_t t = 0; t < nt; ++t) pb.tensors.push_back(t);
    pb.k = a->k[0];
    pb.total = total;
    return solve(a, pb);
  }
  for (size_t t = 0; t < nt; ++t) {
    Problem pb;
    pb.tensors.push_back(t);
    pb.k = a->k[t];
    pb.total = a->src[t].rows * a->src[t].cols;
    Status st = solve(a, pb);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace st
