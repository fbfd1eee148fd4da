// Native tests of the sparse core, built with AddressSanitizer and
// UndefinedBehaviorSanitizer by scripts/native-test.cjs and run under each
// SLIMTENSOR_ISA: the selection (prune / compress24) of every kernel against
// the scalar reference and an independent model of the rule, with every
// output poisoned twice so unwritten bytes show; int4/int8 compression and
// the expansion back; spmm24 of every kernel against a plain fma chain;
// unstructured pruning against a sort; the error statuses; concurrent
// calls. Buffers are exactly the documented sizes, so an overrun is an ASan
// report.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "numeric.h"
#include "sparse/sparse.h"

using namespace st;
using st::test::check;
using st::test::check_error;
using st::test::Isa;
using st::test::isa_usable;

namespace {


// Element storage of one dtype, built from floats (f16/bf16 rounded).
struct Matrix {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> bytes;
  int esize() const { return dtype == DType::F32 ? 4 : 2; }
  float at(int64_t i) const {
    if (dtype == DType::F32) {
      float v;
      std::memcpy(&v, bytes.data() + 4 * i, 4);
      return v;
    }
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    return dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
  MatrixView view() const { return {bytes.data(), dtype, rows, cols}; }
};

Matrix make_matrix(const std::vector<float>& v, int64_t rows, int64_t cols, DType t) {
  Matrix m;
  m.dtype = t;
  m.rows = rows;
  m.cols = cols;
  m.bytes.resize(static_cast<size_t>(rows * cols) * (t == DType::F32 ? 4 : 2));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(m.bytes.data() + 4 * i, &v[i], 4);
    } else {
      const uint16_t h = t == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
      std::memcpy(m.bytes.data() + 2 * i, &h, 2);
    }
  }
  return m;
}

// Many exact ties (signed zeros, equal magnitudes of both signs) and normals.
std::vector<float> tied(std::mt19937& rng, size_t n) {
  static const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 0.5f, -0.5f, 3.0f, 60000.0f};
  std::uniform_int_distribution<int> pick(0, 13);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (auto& x : v) {
    const int k = pick(rng);
    x = k < 10 ? pool[k] : normal(rng);
  }
  return v;
}

const char* dtype_str(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

// The CPU kernels sparse_select accepts on this machine (and ISA setting);
// a SIMD one that cannot run is recorded as a skipped variant of `what`.
std::vector<Kernel> select_kernels(const std::string& what) {
  std::vector<Kernel> k = {Kernel::Reference, Kernel::Auto};
  if (isa_usable(Isa::Avx2, what)) k.push_back(Kernel::Avx2);
  return k;
}

std::vector<Kernel> spmm_kernels(const std::string& what) {
  std::vector<Kernel> k = {Kernel::Reference, Kernel::Auto};
  if (isa_usable(Isa::Avx2, what)) k.push_back(Kernel::Avx2);
  if (isa_usable(Isa::Avx512, what)) k.push_back(Kernel::Avx512);
  return k;
}

const char* kernel_str(Kernel k) {
  switch (k) {
    case Kernel::Auto: return "auto";
    case Kernel::Reference: return "reference";
    case Kernel::Avx2: return "avx2";
    case Kernel::Avx512: return "avx512";
    case Kernel::Cuda: return "cuda";
  }
  return "?";
}

// The model of the rule: the n highest scores of each group of m, a higher
// score first, equal scores by lower column. Scores as in the contract:
// |w|, or |w|·norm rounded to f32.
std::vector<uint8_t> model_keep(const Matrix& a, int n, int m, const std::vector<float>* norms) {
  std::vector<uint8_t> keep(static_cast<size_t>(a.rows * a.cols), 0);
  std::vector<int> order(static_cast<size_t>(m));
  std::vector<float> s(static_cast<size_t>(m));
  for (int64_t g0 = 0; g0 < a.rows * a.cols; g0 += m) {
    for (int k = 0; k < m; ++k) {
      const float mag = std::fabs(a.at(g0 + k));
      s[static_cast<size_t>(k)] = norms ? mag * (*norms)[static_cast<size_t>((g0 + k) % a.cols)] : mag;
      order[static_cast<size_t>(k)] = k;
    }
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return s[static_cast<size_t>(x)] > s[static_cast<size_t>(y)]; });
    for (int k = 0; k < n; ++k) keep[static_cast<size_t>(g0 + order[static_cast<size_t>(k)])] = 1;
  }
  return keep;
}

std::vector<uint8_t> pack_bits(const std::vector<uint8_t>& keep, int64_t rows, int64_t cols) {
  const int64_t rb = (cols + 7) / 8;
  std::vector<uint8_t> out(static_cast<size_t>(rows * rb), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (keep[static_cast<size_t>(r * cols + c)]) out[static_cast<size_t>(r * rb + c / 8)] |= static_cast<uint8_t>(1u << (c % 8));
    }
  }
  return out;
}

// Meta of a 2:4 keep set: nibble idx0 | idx1 << 2 of group g in byte g/2 of its row.
std::vector<uint8_t> model_meta(const std::vector<uint8_t>& keep, int64_t rows, int64_t cols, int word_bytes) {
  const int64_t rb = meta_row_bytes(cols, word_bytes);
  std::vector<uint8_t> out(static_cast<size_t>(rows * rb), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols / 4; ++g) {
      int idx[2] = {0, 0}, k = 0;
      for (int i = 0; i < 4; ++i) {
        if (keep[static_cast<size_t>(r * cols + 4 * g + i)] && k < 2) idx[k++] = i;
      }
      out[static_cast<size_t>(r * rb + g / 2)] |= static_cast<uint8_t>((idx[0] | idx[1] << 2) << (4 * (g % 2)));
    }
  }
  return out;
}

struct SelectOut {
  std::vector<uint8_t> mask, dense, values, meta;
  Status status;
};

// sparse_select with every output poisoned with `fill` first.
SelectOut run_select(const SelectArgs& base, uint8_t fill, bool compress) {
  SelectArgs a = base;
  SelectOut o;
  const int64_t rows = a.src.rows, cols = a.src.cols;
  const size_t es = dtype_size(a.src.dtype);
  o.mask.assign(static_cast<size_t>(rows * bitmask_row_bytes(cols)), fill);
  o.dense.assign(static_cast<size_t>(rows * cols) * es, fill);
  a.mask = o.mask.data();
  a.dense = o.dense.data();
  if (compress) {
    o.values.assign(static_cast<size_t>(rows * cols / 2) * es, fill);
    o.meta.assign(static_cast<size_t>(rows * meta_row_bytes(cols, a.meta_word_bytes)), fill);
    a.values = o.values.data();
    a.meta = o.meta.data();
  }
  o.status = sparse_select(a);
  return o;
}

void test_layout_sizes() {
  check(bitmask_row_bytes(0) == 0 && bitmask_row_bytes(1) == 1 && bitmask_row_bytes(8) == 1 && bitmask_row_bytes(9) == 2, "bitmask_row_bytes");
  // int16 words hold 4 groups (16 columns), int32 words 8 (32 columns).
  check(meta_row_bytes(4, 2) == 2 && meta_row_bytes(16, 2) == 2 && meta_row_bytes(20, 2) == 4 && meta_row_bytes(64, 2) == 8, "meta_row_bytes int16");
  check(meta_row_bytes(4, 4) == 4 && meta_row_bytes(32, 4) == 4 && meta_row_bytes(36, 4) == 8, "meta_row_bytes int32");
}

void test_select_matches_reference_and_model() {
  std::mt19937 rng(1);
  const int patterns[][2] = {{2, 4}, {1, 4}, {3, 4}, {4, 4}, {4, 8}, {2, 6}, {1, 3}, {5, 32}};
  const DType dtypes[] = {DType::F32, DType::F16, DType::BF16};
  const std::vector<Kernel> kernels = select_kernels("selection vs reference and model");
  for (const auto& pat : patterns) {
    const int n = pat[0], m = pat[1];
    // Row lengths around the AVX2 step (32) and the mask byte (8).
    for (const int64_t groups : {1, 2, 7, 8, 9, 17, 33}) {
      const int64_t cols = m * groups, rows = 1 + static_cast<int64_t>(rng() % 5);
      for (DType t : dtypes) {
        for (int sc = 0; sc < 2; ++sc) {
          const Matrix a = make_matrix(tied(rng, static_cast<size_t>(rows * cols)), rows, cols, t);
          std::vector<float> norms(static_cast<size_t>(cols));
          std::uniform_real_distribution<float> u(0.0f, 4.0f);
          for (auto& v : norms) v = (rng() % 3 == 0) ? 0.0f : u(rng);
          SelectArgs args;
          args.src = a.view();
          args.n = n;
          args.m = m;
          args.score = sc ? SparseScore::Wanda : SparseScore::Magnitude;
          args.norms = sc ? norms.data() : nullptr;
          args.threads = 1 + static_cast<int>(rng() % 3);
          const bool compress = n == 2 && m == 4;
          const std::vector<uint8_t> keep = model_keep(a, n, m, sc ? &norms : nullptr);
          const std::vector<uint8_t> want_mask = pack_bits(keep, rows, cols);
          const std::string what = std::to_string(n) + ":" + std::to_string(m) + " " + dtype_str(t) + " " + std::to_string(rows) + "x" +
                                   std::to_string(cols) + (sc ? " wanda" : " magnitude");
          args.kernel = Kernel::Reference;
          const SelectOut ref = run_select(args, 0x00, compress);
          check(ref.status.ok(), what + ": reference status " + ref.status.message);
          check(ref.mask == want_mask, what + ": reference mask vs model");
          bool dense_ok = true;
          for (int64_t i = 0; i < rows * cols; ++i) {
            const size_t es = static_cast<size_t>(a.esize());
            const bool k = keep[static_cast<size_t>(i)] != 0;
            for (size_t b = 0; b < es; ++b) {
              const uint8_t want = k ? a.bytes[static_cast<size_t>(i) * es + b] : 0;
              dense_ok = dense_ok && ref.dense[static_cast<size_t>(i) * es + b] == want;
            }
          }
          check(dense_ok, what + ": reference dense vs model");
          if (compress) check(ref.meta == model_meta(keep, rows, cols, 2), what + ": reference meta vs model");
          for (Kernel k : kernels) {
            for (uint8_t fill : {uint8_t{0x00}, uint8_t{0xff}}) {
              args.kernel = k;
              const SelectOut o = run_select(args, fill, compress);
              const std::string w = what + " " + kernel_str(k) + " fill " + std::to_string(fill);
              check(o.status.ok(), w + ": status " + o.status.message);
              check(o.mask == ref.mask && o.dense == ref.dense && o.values == ref.values && o.meta == ref.meta, w + ": outputs vs reference");
            }
          }
        }
      }
    }
  }
}

void test_select_meta_words_and_nonzero() {
  // 2:4 with int32 meta words (8 groups per word), the NonZero score and the Mask score.
  std::mt19937 rng(2);
  for (const int64_t cols : {4, 12, 32, 36, 100}) {
    const int64_t rows = 3;
    std::vector<float> v(static_cast<size_t>(rows * cols), 0.0f);
    std::normal_distribution<float> normal;
    for (int64_t g0 = 0; g0 < rows * cols; g0 += 4) {
      const int64_t a = rng() % 4, b = (a + 1 + rng() % 3) % 4;
      v[static_cast<size_t>(g0 + a)] = normal(rng);
      if (rng() % 4) v[static_cast<size_t>(g0 + b)] = normal(rng);  // sometimes one non-zero only
    }
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      const Matrix a = make_matrix(v, rows, cols, t);
      SelectArgs args;
      args.src = a.view();
      args.score = SparseScore::NonZero;
      args.meta_word_bytes = 4;
      args.kernel = Kernel::Reference;
      const SelectOut ref = run_select(args, 0xff, true);
      check(ref.status.ok(), "nonzero reference status");
      // The model: the non-zeros, then the lowest-index zeros.
      std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
      for (int64_t g0 = 0; g0 < rows * cols; g0 += 4) {
        int k = 0;
        for (int i = 0; i < 4; ++i) {
          if (a.at(g0 + i) != 0.0f) {
            keep[static_cast<size_t>(g0 + i)] = 1;
            ++k;
          }
        }
        for (int i = 0; i < 4 && k < 2; ++i) {
          if (!keep[static_cast<size_t>(g0 + i)]) {
            keep[static_cast<size_t>(g0 + i)] = 1;
            ++k;
          }
        }
      }
      const std::string what = std::string("nonzero ") + dtype_str(t) + " cols " + std::to_string(cols);
      check(ref.mask == pack_bits(keep, rows, cols), what + ": mask");
      check(ref.meta == model_meta(keep, rows, cols, 4), what + ": int32 meta");
      for (Kernel k : select_kernels(what)) {
        args.kernel = k;
        const SelectOut o = run_select(args, 0x00, true);
        check(o.status.ok() && o.mask == ref.mask && o.values == ref.values && o.meta == ref.meta && o.dense == ref.dense,
              what + " " + kernel_str(k) + " vs reference");
      }
      // Mask score: exactly those bits, whatever the values.
      SelectArgs ma = args;
      ma.score = SparseScore::Mask;
      ma.mask_in = ref.mask.data();
      ma.meta_word_bytes = 2;
      ma.kernel = Kernel::Reference;
      const SelectOut mo = run_select(ma, 0x5a, true);
      check(mo.status.ok() && mo.mask == ref.mask && mo.values == ref.values && mo.meta == model_meta(keep, rows, cols, 2), what + ": mask score");
    }
  }
}

void test_select_errors() {
  std::vector<float> v(static_cast<size_t>(40 * 64), 1.0f);
  v[static_cast<size_t>(29 * 64 + 50)] = NAN;
  v[static_cast<size_t>(31 * 64 + 2)] = NAN;
  const Matrix a = make_matrix(v, 40, 64, DType::F32);
  std::vector<uint8_t> mask(static_cast<size_t>(40 * 8));
  SelectArgs args;
  args.src = a.view();
  args.mask = mask.data();
  for (Kernel k : select_kernels("NaN named")) {
    args.kernel = k;
    args.threads = 3;
    check_error(sparse_select(args), Code::Value, "NaN at [29, 50] (flat 1906)", std::string("NaN ") + kernel_str(k));
  }
  args.kernel = Kernel::Reference;
  args.threads = 0;
  SelectArgs b = args;
  b.n = 5;
  check_error(sparse_select(b), Code::Value, "pattern 5:4", "n > m");
  b = args;
  b.m = 33;
  b.n = 1;
  check_error(sparse_select(b), Code::Value, "M <= 32", "m > 32");
  b = args;
  b.m = 6;
  b.n = 2;
  check_error(sparse_select(b), Code::Shape, "not a multiple of M = 6", "cols % m");
  b = args;
  b.src.dtype = DType::I8;
  check_error(sparse_select(b), Code::DType, "f32, f16 or bf16", "integer input");
  b = args;
  b.mask = nullptr;
  check_error(sparse_select(b), Code::Value, "no output", "no output");
  b = args;
  b.score = SparseScore::Wanda;
  check_error(sparse_select(b), Code::Value, "activation norms", "Wanda without norms");
  b = args;
  b.score = SparseScore::Mask;
  check_error(sparse_select(b), Code::Value, "needs a mask", "Mask without mask");
  b = args;
  b.kernel = Kernel::Avx512;
  check_error(sparse_select(b), Code::Unsupported, "no AVX-512 kernel", "avx512");
  b = args;
  b.kernel = Kernel::Cuda;
  check(sparse_select(b).code == Code::Unsupported, "cuda without CUDA");
  if (!cpu_enabled().avx2) {
    b = args;
    b.kernel = Kernel::Avx2;
    check_error(sparse_select(b), Code::Unsupported, "not available", "avx2 where it is disabled");
  }
  // Compressed outputs: 2:4 only, values and meta together.
  std::vector<uint8_t> values(static_cast<size_t>(40 * 32 * 4)), meta(static_cast<size_t>(40 * 8));
  b = args;
  b.n = 1;
  b.values = values.data();
  b.meta = meta.data();
  check_error(sparse_select(b), Code::Value, "2:4 only", "compress 1:4");
  b.n = 2;
  b.meta = nullptr;
  check_error(sparse_select(b), Code::Value, "both values and meta", "values without meta");
  b.meta = meta.data();
  b.meta_word_bytes = 3;
  check_error(sparse_select(b), Code::Value, "2 or 4 bytes", "meta word size");
  // Not 2:4 (NonZero) and a bad mask group, named.
  std::vector<float> w(static_cast<size_t>(40 * 64), 0.0f);
  for (size_t i = 0; i < w.size(); i += 4) w[i] = 1.0f;
  w[static_cast<size_t>(17 * 64 + 41)] = -3.0f;
  w[static_cast<size_t>(17 * 64 + 42)] = 2.0f;  // group 10 of row 17: 3 non-zeros
  w[static_cast<size_t>(30 * 64 + 1)] = -1.0f;
  w[static_cast<size_t>(30 * 64 + 2)] = -1.0f;
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    const Matrix c = make_matrix(w, 40, 64, t);
    for (Kernel k : select_kernels(std::string("not 2:4 named, ") + dtype_str(t))) {
      SelectArgs n = b;
      n.src = c.view();
      n.meta_word_bytes = 2;
      n.score = SparseScore::NonZero;
      n.kernel = k;
      n.threads = 4;
      check_error(sparse_select(n), Code::Value, "group 10 of row 17 (columns 40..43) has 3 non-zeros",
                  std::string("not 2:4 ") + dtype_str(t) + " " + kernel_str(k));
    }
  }
  std::vector<uint8_t> bad(static_cast<size_t>(40 * 8), 0x33);
  bad[static_cast<size_t>(12 * 8 + 5)] = 0x37;  // row 12, group 10 (columns 40..43) keeps 3
  SelectArgs mk = args;
  mk.score = SparseScore::Mask;
  mk.mask_in = bad.data();
  const Matrix keepalive = make_matrix(w, 40, 64, DType::F32);
  mk.src = keepalive.view();
  check_error(sparse_select(mk), Code::Value, "mask: group 10 of row 12 (columns 40..43) keeps 3 elements; 2:4 needs exactly 2", "bad mask");
  // Wanda: Inf · 0 is a NaN score, named with its norm.
  std::vector<float> x(64, 1.0f);
  x[37] = INFINITY;
  std::vector<float> norms(64, 1.0f);
  norms[37] = 0.0f;
  const Matrix xi = make_matrix(x, 1, 64, DType::F32);
  std::vector<uint8_t> m1(8);
  for (Kernel k : select_kernels("Wanda Inf·0 named")) {
    SelectArgs wa;
    wa.src = xi.view();
    wa.score = SparseScore::Wanda;
    wa.norms = norms.data();
    wa.mask = m1.data();
    wa.kernel = k;
    check_error(sparse_select(wa), Code::Value, "activationNorms[37] of [0, 37] is NaN (w = Infinity, norm = 0)", std::string("wanda NaN ") + kernel_str(k));
  }
  // Empty matrices need no buffers.
  SelectArgs e;
  e.src = {nullptr, DType::F32, 0, 8};
  check(sparse_select(e).ok(), "0 rows");
  e.src = {nullptr, DType::F16, 5, 0};
  check(sparse_select(e).ok(), "0 columns");
}

// Packs signed codes (compressed-tensors: biased by 2^(bits-1), first element lowest).
std::vector<int32_t> pack_codes(const std::vector<int>& codes, int64_t rows, int64_t cols, int bits) {
  const int64_t words = (cols * bits + 31) / 32, per = 32 / bits;
  std::vector<int32_t> out(static_cast<size_t>(rows * words), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t u = static_cast<uint32_t>(codes[static_cast<size_t>(r * cols + c)] + (1 << (bits - 1))) & ((1u << bits) - 1u);
      uint32_t w = static_cast<uint32_t>(out[static_cast<size_t>(r * words + c / per)]);
      w |= u << (bits * (c % per));
      out[static_cast<size_t>(r * words + c / per)] = static_cast<int32_t>(w);
    }
  }
  return out;
}

void test_quant_compress_and_expand() {
  std::mt19937 rng(3);
  for (int bits : {4, 8}) {
    for (const int64_t cols : {8, 24, 64, 200}) {
      for (bool asym : {false, true}) {
        const int64_t rows = 5, group = cols == 24 ? 12 : cols == 200 ? 20 : 8;
        const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
        std::uniform_int_distribution<int> code(lo, hi);
        std::vector<int8_t> zeros(static_cast<size_t>(rows * (cols / group)));
        for (auto& z : zeros) z = static_cast<int8_t>(asym ? code(rng) : 0);
        // 2:4 in codes: per group of 4, at most two codes differ from the zero point.
        std::vector<int> codes(static_cast<size_t>(rows * cols));
        std::vector<uint8_t> keep(codes.size(), 0);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t g0 = 0; g0 < cols; g0 += 4) {
            const int z = zeros[static_cast<size_t>(r * (cols / group) + g0 / group)];
            for (int i = 0; i < 4; ++i) codes[static_cast<size_t>(r * cols + g0 + i)] = z;
            const int64_t a = rng() % 4, b = (a + 1 + rng() % 3) % 4;
            for (int64_t i : {a, b}) {
              int c = code(rng);
              if (c == z) c = c == hi ? lo : c + 1;
              if (rng() % 5 == 0) c = z;  // a kept position whose code is the zero point
              codes[static_cast<size_t>(r * cols + g0 + i)] = c;
            }
            int k = 0;
            for (int i = 0; i < 4; ++i) {
              const size_t at = static_cast<size_t>(r * cols + g0 + i);
              if (codes[at] != z) {
                keep[at] = 1;
                ++k;
              }
            }
            for (int i = 0; i < 4 && k < 2; ++i) {
              const size_t at = static_cast<size_t>(r * cols + g0 + i);
              if (!keep[at]) {
                keep[at] = 1;
                ++k;
              }
            }
          }
        }
        const std::vector<int32_t> packed = pack_codes(codes, rows, cols, bits);
        std::vector<int> kept_codes;
        for (size_t i = 0; i < codes.size(); ++i) {
          if (keep[i]) kept_codes.push_back(codes[i]);
        }
        const std::vector<int32_t> want_values = pack_codes(kept_codes, rows, cols / 2, bits);
        const std::string what = "int" + std::to_string(bits) + " cols " + std::to_string(cols) + (asym ? " asym" : " sym");
        std::vector<int32_t> values;
        std::vector<uint8_t> meta, mask;
        for (uint8_t fill : {uint8_t{0x00}, uint8_t{0xff}}) {
          values.assign(static_cast<size_t>(rows * ((cols / 2 * bits + 31) / 32)), fill ? -1 : 0);
          meta.assign(static_cast<size_t>(rows * meta_row_bytes(cols, 4)), fill);
          mask.assign(static_cast<size_t>(rows * bitmask_row_bytes(cols)), fill);
          QuantSelectArgs q;
          q.bits = bits;
          q.rows = rows;
          q.cols = cols;
          q.group = group;
          q.codes = packed.data();
          q.zeros = asym ? zeros.data() : nullptr;
          q.threads = 2;
          q.values = values.data();
          q.meta = meta.data();
          q.mask = mask.data();
          const Status s = sparse_select_quant(q);
          check(s.ok(), what + ": status " + s.message);
          check(values == want_values, what + ": kept codes");
          check(meta == model_meta(keep, rows, cols, 4), what + ": int32 meta");
          check(mask == pack_bits(keep, rows, cols), what + ": bitmask");
        }
        // Back to the dense codes, from the meta and from the bitmask.
        for (int from_mask = 0; from_mask < 2; ++from_mask) {
          for (uint8_t fill : {uint8_t{0x00}, uint8_t{0xff}}) {
            std::vector<int32_t> out(packed.size(), fill ? -1 : 0);
            ExpandArgs e;
            e.rows = rows;
            e.cols = cols;
            e.bits = bits;
            e.values = values.data();
            e.meta = from_mask ? nullptr : meta.data();
            e.meta_word_bytes = 4;
            e.mask = from_mask ? mask.data() : nullptr;
            e.group = group;
            e.zeros = asym ? zeros.data() : nullptr;
            e.threads = 3;
            e.out = out.data();
            const Status s = sparse_expand(e);
            check(s.ok() && out == packed, what + (from_mask ? ": expand from the bitmask" : ": expand from meta"));
          }
        }
      }
    }
  }
  // Errors.
  std::vector<int32_t> codes(8, 0), values(4), out(8);
  std::vector<uint8_t> meta(8), mask(4);
  QuantSelectArgs q;
  q.rows = 1;
  q.cols = 24;
  q.group = 6;
  q.codes = codes.data();
  q.values = values.data();
  q.meta = meta.data();
  check_error(sparse_select_quant(q), Code::Shape, "multiple of 4", "quant group 6");
  q.group = 8;
  q.bits = 3;
  check_error(sparse_select_quant(q), Code::Value, "4 or 8 bits", "bits 3");
  q.bits = 4;
  q.score = SparseScore::Magnitude;
  check_error(sparse_select_quant(q), Code::Value, "as they are", "quant magnitude");
  q.score = SparseScore::NonZero;
  q.cols = 6;
  q.group = 6;
  check_error(sparse_select_quant(q), Code::Shape, "not a multiple of 4", "quant cols 6");
  // int8 codes of one row, 3 codes off the zero point in group 1.
  std::vector<int> c8(16, 0);
  c8[4] = 1;
  c8[5] = -2;
  c8[7] = 3;
  const std::vector<int32_t> p8 = pack_codes(c8, 1, 16, 8);
  std::vector<int32_t> v8(2);
  std::vector<uint8_t> m8(4), b8(2);
  q = QuantSelectArgs();
  q.bits = 8;
  q.rows = 1;
  q.cols = 16;
  q.group = 16;
  q.codes = p8.data();
  q.values = v8.data();
  q.meta = m8.data();
  q.mask = b8.data();
  check_error(sparse_select_quant(q), Code::Value, "group 1 of row 0 (columns 4..7) has more than 2 codes", "quant not 2:4");
  ExpandArgs e;
  e.rows = 1;
  e.cols = 24;
  e.bits = 4;
  e.group = 6;
  e.values = values.data();
  e.mask = mask.data();
  e.out = out.data();
  check_error(sparse_expand(e), Code::Shape, "multiple of 4", "expand quant group 6");
}

void test_expand_floats_and_errors() {
  std::mt19937 rng(4);
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    for (const int64_t cols : {4, 20, 36, 128}) {
      const int64_t rows = 4;
      std::vector<float> v(static_cast<size_t>(rows * cols), 0.0f);
      std::normal_distribution<float> normal;
      for (int64_t g0 = 0; g0 < rows * cols; g0 += 4) {
        const int64_t a = rng() % 4, b = (a + 1 + rng() % 3) % 4;
        v[static_cast<size_t>(g0 + a)] = normal(rng);
        v[static_cast<size_t>(g0 + b)] = normal(rng);
      }
      const Matrix a = make_matrix(v, rows, cols, t);
      SelectArgs s;
      s.src = a.view();
      s.score = SparseScore::NonZero;
      const SelectOut c = run_select(s, 0, true);
      check(c.status.ok(), "compress for expand");
      for (int from_mask = 0; from_mask < 2; ++from_mask) {
        for (uint8_t fill : {uint8_t{0x00}, uint8_t{0xff}}) {
          std::vector<uint8_t> out(a.bytes.size(), fill);
          ExpandArgs e;
          e.rows = rows;
          e.cols = cols;
          e.dtype = t;
          e.values = c.values.data();
          e.meta = from_mask ? nullptr : c.meta.data();
          e.mask = from_mask ? c.mask.data() : nullptr;
          e.out = out.data();
          const Status st = sparse_expand(e);
          check(st.ok() && out == a.bytes, std::string("expand ") + dtype_str(t) + " cols " + std::to_string(cols) + (from_mask ? " mask" : " meta"));
        }
      }
    }
  }
  std::vector<float> values(8, 1.0f), out(16);
  std::vector<uint8_t> meta(4, 0x44), mask(4, 0x33);
  ExpandArgs e;
  e.rows = 2;
  e.cols = 8;
  e.values = values.data();
  e.meta = meta.data();
  e.out = out.data();
  check(sparse_expand(e).ok(), "expand: valid meta");
  meta[2] = 0x45;  // row 1, group 0: 0b0101 (idx0 = idx1)
  check_error(sparse_expand(e), Code::Value, "meta of group 0 of row 1 (columns 0..3) is 0b0101", "expand: bad nibble");
  e.meta = nullptr;
  e.mask = mask.data();
  mask[1] = 0x73;  // row 1, group 1 keeps 3
  check_error(sparse_expand(e), Code::Value, "bitmask of group 1 of row 1 (columns 4..7) does not keep exactly 2", "expand: bad mask");
  e.mask = nullptr;
  check_error(sparse_expand(e), Code::Value, "meta or the bitmask", "expand: neither");
  e.mask = mask.data();
  e.cols = 6;
  check_error(sparse_expand(e), Code::Shape, "not a multiple of 4", "expand: cols 6");
  e.cols = 8;
  e.kernel = Kernel::Cuda;
  check_error(sparse_expand(e), Code::Unsupported, "no CUDA kernel", "expand: cuda");
  e.kernel = Kernel::Auto;
  e.dtype = DType::I32;
  check_error(sparse_expand(e), Code::DType, "f32, f16 or bf16", "expand: dtype");
}

// One fma chain per output over the row's kept values in column order.
std::vector<float> chain_spmm(const Matrix& dense, const std::vector<float>& x, int64_t n, bool trans_x, const std::vector<float>* init) {
  const int64_t rows = dense.rows, cols = dense.cols;
  std::vector<float> y(static_cast<size_t>(rows * n));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = init ? (*init)[static_cast<size_t>(i * n + j)] : 0.0f;
      for (int64_t c = 0; c < cols; ++c) {
        const float xv = x[static_cast<size_t>(trans_x ? j * cols + c : c * n + j)];
        acc = std::fma(dense.at(i * cols + c), xv, acc);  // the dense chain: its zero terms change nothing here
      }
      y[static_cast<size_t>(i * n + j)] = acc;
    }
  }
  return y;
}

void test_spmm24() {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const std::vector<Kernel> kernels = spmm_kernels("spmm24 vs an fma chain");
  // Row counts around the 8- and 16-row blocks, row lengths around the
  // 16-column meta word (the tail runs element by element).
  const int64_t shapes[][2] = {{1, 4}, {7, 12}, {17, 36}, {33, 100}, {24, 160}};
  for (const auto& sh : shapes) {
    const int64_t rows = sh[0], cols = sh[1];
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      std::vector<float> w(static_cast<size_t>(rows * cols));
      for (auto& v : w) v = normal(rng);
      const Matrix a = make_matrix(w, rows, cols, t);
      SelectArgs s;
      s.src = a.view();
      const SelectOut c = run_select(s, 0, true);  // magnitude 2:4: dense holds the pruned matrix
      Matrix dense = a;
      dense.bytes = c.dense;
      for (const int64_t n : {1, 3, 8, 9, 17}) {
        for (int variant = 0; variant < 4; ++variant) {
          const bool trans_x = variant & 1, acc = variant & 2;
          std::vector<float> x(static_cast<size_t>(cols * n)), init(static_cast<size_t>(rows * n));
          for (auto& v : x) v = normal(rng);
          for (auto& v : init) v = normal(rng);
          const std::vector<float> want = chain_spmm(dense, x, n, trans_x, acc ? &init : nullptr);
          for (Kernel k : kernels) {
            for (int fill = 0; fill < (acc ? 1 : 2); ++fill) {
              std::vector<float> y = acc ? init : std::vector<float>(static_cast<size_t>(rows * n), fill ? NAN : 7.0f);
              Spmm24Args p;
              p.rows = rows;
              p.cols = cols;
              p.n = n;
              p.dtype = t;
              p.values = c.values.data();
              p.meta = c.meta.data();
              p.x = x.data();
              p.trans_x = trans_x;
              p.y = y.data();
              p.accumulate = acc;
              p.kernel = k;
              p.threads = 1 + static_cast<int>(n % 3);
              const Status st = spmm24(p);
              check(st.ok() && std::memcmp(y.data(), want.data(), want.size() * 4) == 0,
                    std::string("spmm24 ") + kernel_str(k) + " " + dtype_str(t) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                        " n=" + std::to_string(n) + " variant " + std::to_string(variant) + (st.ok() ? "" : ": " + st.message));
            }
          }
        }
      }
    }
  }
  check(std::string(spmm24_kernel_name(Kernel::Reference)) == "reference", "spmm24 kernel name");
  check(std::string(spmm24_kernel_name(Kernel::Auto)) == (cpu_enabled().avx512 ? "avx512" : cpu_enabled().avx2 ? "avx2" : "reference"), "spmm24 auto name");
  Spmm24Args p;
  p.rows = 1;
  p.cols = 6;
  check_error(spmm24(p), Code::Shape, "not a multiple of 4", "spmm24 cols 6");
  p.cols = 4;
  p.dtype = DType::U8;
  check_error(spmm24(p), Code::DType, "f32, f16 or bf16", "spmm24 dtype");
  p.dtype = DType::F32;
  p.kernel = Kernel::Cuda;
  check_error(spmm24(p), Code::Unsupported, "no CUDA kernel", "spmm24 cuda");
  if (!cpu_enabled().avx512) {
    p.kernel = Kernel::Avx512;
    check(spmm24(p).code == Code::Unsupported, "spmm24 avx512 where it is disabled");
  }
  // No columns: zeros, or out untouched when accumulating.
  std::vector<float> y = {1, 2, 3};
  Spmm24Args z;
  z.rows = 3;
  z.cols = 0;
  z.n = 1;
  z.y = y.data();
  check(spmm24(z).ok() && y == std::vector<float>({0, 0, 0}), "spmm24 of no columns");
}

struct Elem {
  float mag;
  size_t t;
  int64_t i;
};

void test_unstructured() {
  std::mt19937 rng(6);
  for (int global = 0; global < 2; ++global) {
    for (int trial = 0; trial < 6; ++trial) {
      const size_t nt = global ? 3 : 1;
      std::vector<Matrix> ms;
      int64_t total = 0;
      for (size_t t = 0; t < nt; ++t) {
        const int64_t rows = 1 + rng() % 900, cols = 1 + rng() % 90;
        const DType dt = t % 3 == 0 ? DType::F32 : t % 3 == 1 ? DType::F16 : DType::BF16;
        ms.push_back(make_matrix(tied(rng, static_cast<size_t>(rows * cols)), rows, cols, dt));
        total += rows * cols;
      }
      const int64_t k = static_cast<int64_t>(rng() % static_cast<uint64_t>(total + 1));
      // The model: ascending |w|, and among equal |w| the later position goes first.
      std::vector<Elem> all;
      for (size_t t = 0; t < nt; ++t) {
        for (int64_t i = 0; i < ms[t].rows * ms[t].cols; ++i) all.push_back({std::fabs(ms[t].at(i)), t, i});
      }
      std::sort(all.begin(), all.end(), [](const Elem& x, const Elem& y) {
        if (x.mag != y.mag) return x.mag < y.mag;
        if (x.t != y.t) return x.t > y.t;
        return x.i > y.i;
      });
      std::vector<std::vector<uint8_t>> keep(nt);
      for (size_t t = 0; t < nt; ++t) keep[t].assign(static_cast<size_t>(ms[t].rows * ms[t].cols), 1);
      std::vector<int64_t> pruned(nt, 0);
      for (int64_t j = 0; j < k; ++j) {
        keep[all[static_cast<size_t>(j)].t][static_cast<size_t>(all[static_cast<size_t>(j)].i)] = 0;
        ++pruned[all[static_cast<size_t>(j)].t];
      }
      const float cut = k > 0 ? all[static_cast<size_t>(k - 1)].mag : 0.0f;
      for (uint8_t fill : {uint8_t{0x00}, uint8_t{0xff}}) {
        UnstructuredArgs u;
        u.global = global != 0;
        u.k = {k};
        u.threads = 1 + trial % 3;
        std::vector<std::vector<uint8_t>> dense(nt), mask(nt);
        for (size_t t = 0; t < nt; ++t) {
          u.src.push_back(ms[t].view());
          dense[t].assign(ms[t].bytes.size(), fill);
          mask[t].assign(static_cast<size_t>(ms[t].rows * bitmask_row_bytes(ms[t].cols)), fill);
          u.dense.push_back(dense[t].data());
          u.mask.push_back(mask[t].data());
        }
        const Status s = prune_unstructured(&u);
        const std::string what = std::string(global ? "global" : "layer") + " trial " + std::to_string(trial) + " fill " + std::to_string(fill);
        check(s.ok(), what + ": status " + s.message);
        for (size_t t = 0; t < nt; ++t) {
          std::vector<uint8_t> want = ms[t].bytes;
          const size_t es = static_cast<size_t>(ms[t].esize());
          for (size_t i = 0; i < keep[t].size(); ++i) {
            if (!keep[t][i]) std::fill(want.begin() + static_cast<std::ptrdiff_t>(i * es), want.begin() + static_cast<std::ptrdiff_t>((i + 1) * es), uint8_t{0});
          }
          check(dense[t] == want, what + ": tensor " + std::to_string(t));
          check(mask[t] == pack_bits(keep[t], ms[t].rows, ms[t].cols), what + ": mask " + std::to_string(t));
          check(u.pruned[t] == pruned[t], what + ": pruned count " + std::to_string(t));
          float th;
          std::memcpy(&th, &u.threshold_bits[t], 4);
          check(th == cut, what + ": threshold " + std::to_string(t));
        }
      }
    }
  }
  // Errors.
  std::vector<float> v(static_cast<size_t>(3000 * 30), 1.0f);
  v[static_cast<size_t>(2900 * 30 + 1)] = NAN;
  v[static_cast<size_t>(1200 * 30 + 29)] = NAN;
  const Matrix a = make_matrix(v, 3000, 30, DType::F32);
  std::vector<uint8_t> out(a.bytes.size());
  UnstructuredArgs u;
  u.src = {a.view()};
  u.dense = {out.data()};
  u.mask = {nullptr};
  u.k = {10};
  u.threads = 4;
  check_error(prune_unstructured(&u), Code::Value, "input has a NaN at [1200, 29] (flat 36029)", "unstructured NaN");
  u.k = {3000 * 30 + 1};
  check_error(prune_unstructured(&u), Code::Value, "out of range", "unstructured k too large");
  u.k = {1, 2};
  check(prune_unstructured(&u).code == Code::Internal, "unstructured: one count per tensor");
  u.k = {1};
  u.src[0].dtype = DType::I32;
  check(prune_unstructured(&u).code == Code::DType, "unstructured dtype");
}

void test_concurrent_calls() {
  std::mt19937 rng(7);
  const Matrix a = make_matrix(tied(rng, 300 * 256), 300, 256, DType::BF16);
  SelectArgs s;
  s.src = a.view();
  const SelectOut want = run_select(s, 0, true);
  std::vector<SelectOut> outs(4);
  std::vector<std::thread> th;
  for (int i = 0; i < 4; ++i) th.emplace_back([&, i] { outs[static_cast<size_t>(i)] = run_select(s, static_cast<uint8_t>(0x11 * i), true); });
  for (auto& t : th) t.join();
  for (const SelectOut& o : outs) check(o.status.ok() && o.mask == want.mask && o.values == want.values && o.meta == want.meta, "concurrent select");
}

// An input rewritten while the selection runs (an async JS caller writing
// into it): another thread flips every value between 2 and 1 while the
// passes count them, so a later pass may not find what an earlier one
// counted. The call must end with a threshold that was in the input, or
// with ERR_VALUE; ASan reports any read past a histogram. (The writes race
// with the kernel's reads on purpose: this is what such a caller does.)
// Unstructured pruning has no SIMD kernel, so it runs once (8 s of CPU
// under ASan, most of the room's run).
void test_unstructured_input_changed() {
  if (!st::test::isa_independent("unstructured, input rewritten during the call")) return;
  const int64_t rows = 64, cols = 1024;
  std::vector<float> v(static_cast<size_t>(rows * cols), 2.0f);
  std::vector<uint8_t> dense(v.size() * 4), mask(static_cast<size_t>(rows * bitmask_row_bytes(cols)));
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    volatile float* p = v.data();
    for (float x = 1.0f; !stop.load(std::memory_order_relaxed); x = 3.0f - x) {
      for (size_t i = 0; i < v.size(); ++i) p[i] = x;
    }
  });
  int ok = 0, changed = 0, other = 0;
  for (int rep = 0; rep < 300; ++rep) {
    UnstructuredArgs u;
    u.src = {MatrixView{v.data(), DType::F32, rows, cols}};
    u.dense = {dense.data()};
    u.mask = {mask.data()};
    u.k = {rows * cols};
    u.threads = 1 + rep % 2;
    const Status s = prune_unstructured(&u);
    float th = 0;
    std::memcpy(&th, &u.threshold_bits[0], 4);
    if (s.ok() && (th == 1.0f || th == 2.0f)) ++ok;
    else if (s.code == Code::Value && s.message.find("changed while the operation ran") != std::string::npos) ++changed;
    else ++other;
  }
  stop = true;
  flipper.join();
  check(other == 0, "unstructured, input rewritten during the call: " + std::to_string(ok) + " results, " + std::to_string(changed) +
                        " ERR_VALUE, " + std::to_string(other) + " neither");
}

// Degenerate shapes return at once: many empty rows (or columns) plan no work.
void test_unstructured_degenerate() {
  UnstructuredArgs u;
  u.src = {MatrixView{nullptr, DType::F32, int64_t{1} << 40, 0}, MatrixView{nullptr, DType::F32, 0, int64_t{1} << 40}};
  u.dense = {nullptr, nullptr};
  u.mask = {nullptr, nullptr};
  u.global = true;
  u.k = {0};
  const auto t0 = std::chrono::steady_clock::now();
  const Status s = prune_unstructured(&u);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  check(s.ok() && u.pruned[0] == 0 && u.pruned[1] == 0 && ms < 100, "unstructured [2^40, 0] and [0, 2^40]: at once (" + std::to_string(ms) + " ms) " + s.message);
}

}  // namespace

int main() {
  test_layout_sizes();
  test_select_matches_reference_and_model();
  test_select_meta_words_and_nonzero();
  test_select_errors();
  test_quant_compress_and_expand();
  test_expand_floats_and_errors();
  test_spmm24();
  test_unstructured();
  test_concurrent_calls();
  test_unstructured_input_changed();
  test_unstructured_degenerate();
  return st::test::finish(std::string("native sparse core (spmm24 ") + spmm24_kernel_name(Kernel::Auto) + ", select " +
                          (cpu_enabled().avx2 ? "avx2" : "reference") + ")");
}
