// The table of weight formats and the kernel choice for one weight; the 2:4
// path (the sparse room's spmm24, called per row range); activation
// quantization; linear() for tests and benchmarks.
#include <algorithm>
#include <string>
#include <vector>

#include "../cpu.h"
#include "../lowrank/gemm.h"
#include "../sparse/sparse.h"
#include "matmul.h"
#include "model_cuda.h"
#include "model_math.h"

namespace st {
namespace model {

namespace {

// One row per WFormat value, in order.
const FormatInfo kFormats[kFormatCount] = {
    {"f32", 1, 0}, {"f16", 1, 0}, {"bf16", 1, 0}, {"q4_0", 32, 18}, {"q4_1", 32, 20},
    {"q8_0", 32, 34}, {"int4", 1, 0}, {"int8", 1, 0}, {"2:4", 4, 0},
    {"q5_0", 32, 0}, {"q5_1", 32, 0}, {"q2_k", 256, 0}, {"q3_k", 256, 0}, {"q4_k", 256, 0}, {"q5_k", 256, 0}, {"q6_k", 256, 0},
};

// The formats multiplied through the quant room's dequantization.
bool is_dequantized(WFormat f) { return static_cast<int>(f) >= static_cast<int>(WFormat::Q5_0); }

// Y = W·X for a 2:4 weight through spmm24 (one fma chain per output over the
// kept values): rows [r0, r1) of the compressed values and meta, X [n, cols]
// read transposed, Y [rows, n] from spmm24 transposed into y.
void sparse24_rows(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const Weight& w = *a.w;
  Spmm24Args s;
  s.rows = r1 - r0;
  s.cols = w.cols;
  s.n = a.n;
  s.dtype = w.values_dtype;
  s.values = w.data + r0 * w.row_bytes;
  s.meta = w.meta + r0 * w.meta_row_bytes;
  s.x = a.x;
  s.trans_x = true;
  s.kernel = a.kernel;
  s.threads = 1;
  if (a.n == 1) {
    s.y = a.y + r0;
    s.accumulate = a.accumulate;
    spmm24(s);  // arguments validated at load
    return;
  }
  thread_local std::vector<float> tmp;
  tmp.resize(static_cast<size_t>(s.rows * a.n));
  s.y = tmp.data();
  spmm24(s);
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int64_t t = 0; t < a.n; ++t) {
      float* y = a.y + t * a.ldy + r0 + r;
      const float v = tmp[static_cast<size_t>(r * a.n + t)];
      *y = a.accumulate ? *y + v : v;
    }
  }
}

// Y = X·Wᵀ for f32/f16/bf16 weights: the lowrank room's GEMM (one fma chain
// per output in column order on every kernel: the same bits), rows [r0, r1)
// of W as the columns of its op(B), the conversion fused into its packing.
void floats_gemm(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const Weight& w = *a.w;
  GemmArgs g;
  g.m = a.n;
  g.n = r1 - r0;
  g.k = w.cols;
  g.a = GemmOperand{a.x, DType::F32, a.ldx, false};
  const DType dt = w.format == WFormat::F32 ? DType::F32 : w.format == WFormat::F16 ? DType::F16 : DType::BF16;
  g.b = GemmOperand{w.data + r0 * w.row_bytes, dt, w.cols, true};
  g.c = a.y + r0;
  g.ldc = a.ldy;
  g.accumulate = a.accumulate;
  g.kernel = a.kernel;
  g.threads = 1;
  gemm(g);  // arguments validated at load
}

// Y = X·Wᵀ for the formats without kernel-table entries (q5_0, q5_1, the
// K-quants): per tile of kDequantRows rows, the quant room's dequantization
// (its AVX2 twins unless the reference is asked for; they give the same
// floats) writes the rows into per-thread scratch and the f32 GEMM
// multiplies them: one fma chain per output in column order over the
// dequantized values, as the reference of the other block formats. The
// scratch (kDequantRows rows of floats) is the only copy: the model stays
// in its stored form.
constexpr int64_t kDequantRows = 16;
void dequantized_gemm(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const Weight& w = *a.w;
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(std::min(kDequantRows, r1 - r0) * w.cols));
  for (int64_t t0 = r0; t0 < r1; t0 += kDequantRows) {
    const int64_t rows = std::min(kDequantRows, r1 - t0);
    DequantizeArgs d;
    quant_format_of(w.format, &d.format);
    d.rows = rows;
    d.cols = w.cols;
    d.data = w.data + t0 * w.row_bytes;
    d.kernel = a.kernel == Kernel::Reference ? Kernel::Reference : Kernel::Auto;
    d.threads = 1;
    (void)dequantize(d, tile.data(), DType::F32);  // arguments validated at load
    GemmArgs g;
    g.m = a.n;
    g.n = rows;
    g.k = w.cols;
    g.a = GemmOperand{a.x, DType::F32, a.ldx, false};
    g.b = GemmOperand{tile.data(), DType::F32, w.cols, true};
    g.c = a.y + t0;
    g.ldc = a.ldy;
    g.accumulate = a.accumulate;
    g.kernel = a.kernel;
    g.threads = 1;
    gemm(g);
  }
}

bool is_float(WFormat f) { return f == WFormat::F32 || f == WFormat::F16 || f == WFormat::BF16; }

const KernelSet* set_for(Kernel k) {
  const CpuFeatures& cpu = cpu_enabled();
  switch (k) {
    case Kernel::Reference: return &ref::kernels();
    case Kernel::Avx2: return cpu.avx2 ? avx2::kernels() : nullptr;
    case Kernel::Avx512: return cpu.avx512vnni ? avx512::kernels() : nullptr;
    default: return nullptr;
  }
}

}  // namespace

const FormatInfo& format_info(WFormat f) { return kFormats[static_cast<int>(f)]; }

bool valid_format(int32_t code) { return code >= 0 && code < kFormatCount; }

bool quant_format_of(WFormat f, QFormat* out) {
  switch (f) {
    case WFormat::Q4_0: *out = QFormat::Q4_0; return true;
    case WFormat::Q4_1: *out = QFormat::Q4_1; return true;
    case WFormat::Q8_0: *out = QFormat::Q8_0; return true;
    case WFormat::Int4: *out = QFormat::Int4; return true;
    case WFormat::Int8: *out = QFormat::Int8; return true;
    case WFormat::Q5_0: *out = QFormat::Q5_0; return true;
    case WFormat::Q5_1: *out = QFormat::Q5_1; return true;
    case WFormat::Q2_K: *out = QFormat::Q2_K; return true;
    case WFormat::Q3_K: *out = QFormat::Q3_K; return true;
    case WFormat::Q4_K: *out = QFormat::Q4_K; return true;
    case WFormat::Q5_K: *out = QFormat::Q5_K; return true;
    case WFormat::Q6_K: *out = QFormat::Q6_K; return true;
    case WFormat::F32:
    case WFormat::F16:
    case WFormat::BF16:
    case WFormat::Sparse24: break;
  }
  return false;
}

int64_t stored_row_bytes(WFormat f, int64_t cols, DType values_dtype) {
  QFormat q = QFormat::Q4_0;
  if (is_dequantized(f) && quant_format_of(f, &q)) return quant_sizes(q, cols, 32).data_row_bytes;
  switch (f) {
    case WFormat::F32: return cols * 4;
    case WFormat::F16:
    case WFormat::BF16: return cols * 2;
    case WFormat::Q4_0:
    case WFormat::Q4_1:
    case WFormat::Q8_0: return cols / 32 * format_info(f).block_bytes;
    case WFormat::Int4: return (cols * 4 + 31) / 32 * 4;
    case WFormat::Int8: return (cols * 8 + 31) / 32 * 4;
    case WFormat::Sparse24: return cols / 2 * static_cast<int64_t>(dtype_size(values_dtype));
    default: break;  // the dequantized formats, above
  }
  return 0;
}

bool q8_layout_ok(const Weight& w) {
  if (w.cols % mm::QK != 0) return false;
  switch (w.format) {
    case WFormat::Q4_0:
    case WFormat::Q4_1:
    case WFormat::Q8_0: return true;
    case WFormat::Int4: return w.group % mm::QK == 0;
    // (q - z) of int8 codes does not fit an int8 lane: asymmetric int8 reads f32.
    case WFormat::Int8: return w.group % mm::QK == 0 && w.zeros == nullptr;
    default: return false;
  }
}

Status plan_linear(const Weight& w, Kernel kernel, ActMode act, LinearPlan* p) {
  std::vector<const KernelSet*> chain;  // widest first
  switch (kernel) {
    case Kernel::Auto:
      for (Kernel k : {Kernel::Avx512, Kernel::Avx2}) {
        if (const KernelSet* s = set_for(k)) chain.push_back(s);
      }
      break;
    case Kernel::Reference: break;
    case Kernel::Avx2:
    case Kernel::Avx512: {
      const KernelSet* s = set_for(kernel);
      if (!s) {
        return Status::Error(Code::Unsupported, std::string("the runtime's ") + (kernel == Kernel::Avx2 ? "AVX2" : "AVX-512 (VNNI)") +
                                                    " kernels are not available on this CPU or build");
      }
      chain.push_back(s);
      if (kernel == Kernel::Avx512 && set_for(Kernel::Avx2)) chain.push_back(set_for(Kernel::Avx2));
      break;
    }
    case Kernel::Cuda: return Status::Error(Code::Unsupported, "the runtime runs on the CPU ('auto'); its CUDA kernels are compiled but not wired to a model");
  }
  chain.push_back(&ref::kernels());
  const int f = static_cast<int>(w.format);
  *p = LinearPlan{};
  if (w.format == WFormat::Sparse24) {
    // spmm24 picks its own SIMD loop; pin it to the set asked for.
    p->fn = sparse24_rows;
    p->rows = 16;
    p->set = chain.front()->name;
    p->kernel = kernel == Kernel::Avx512 ? Kernel::Avx512 : kernel == Kernel::Avx2 ? Kernel::Avx2 : kernel == Kernel::Reference ? Kernel::Reference : Kernel::Auto;
    return Status::Ok();
  }
  if (is_dequantized(w.format)) {
    // The quant room's dequantization, then the GEMM: pinned like the floats.
    p->fn = dequantized_gemm;
    p->rows = kDequantRows;
    p->set = chain.front()->name;
    p->kernel = kernel;
    return Status::Ok();
  }
  if (is_float(w.format)) {
    // The GEMM picks its loop: pin it to the set asked for.
    p->fn = floats_gemm;
    p->rows = 16;
    p->set = chain.front()->name;
    p->kernel = kernel;  // Auto: the GEMM's widest loop
    return Status::Ok();
  }
  const bool want_q8 = act == ActMode::Auto && q8_layout_ok(w);
  for (const KernelSet* s : chain) {
    MatmulFn fn = want_q8 ? s->q8[f] : s->f32[f];
    if (fn) {
      p->fn = fn;
      p->q8 = want_q8;
      p->rows = s->rows;
      p->set = s->name;
      return Status::Ok();
    }
  }
  return Status::Error(Code::Internal, std::string("no kernel for ") + format_info(w.format).name);
}

PointwiseKernels pointwise_kernels(Kernel kernel) {
  const KernelSet* s = nullptr;
  if (kernel == Kernel::Auto) {
    s = set_for(Kernel::Avx512);
    if (!s) s = set_for(Kernel::Avx2);
  } else if (kernel == Kernel::Avx2 || kernel == Kernel::Avx512) {
    s = set_for(kernel);
  }
  const KernelSet& r = ref::kernels();
  return {s && s->attend ? s->attend : r.attend, s && s->swiglu ? s->swiglu : r.swiglu};
}

void quantize_act_row(const float* x, int64_t k, int8_t* q, float* d, float* s) {
  for (int64_t b = 0; b < k / mm::QK; ++b) mm::quantize_act_block(x + b * mm::QK, q + b * mm::QK, d + b, s + b);
}

std::string linear_kernel_name(const Weight& w, Kernel kernel, ActMode act) {
  LinearPlan p;
  if (!plan_linear(w, kernel, act, &p).ok()) return "unavailable";
  return std::string(p.set) + (p.q8 ? "/q8" : "/f32");
}

Status linear(const Weight& w, const float* x, int64_t n, Kernel kernel, ActMode act, int threads, float* y) {
  if (kernel == Kernel::Cuda) {
    if (is_dequantized(w.format)) return Status::Error(Code::Unsupported, std::string(format_info(w.format).name) + " weights have no CUDA kernel in the runtime; use the CPU ('auto')");
    return cuda_linear(w, x, n, act, y);
  }
  LinearPlan p;
  Status st = plan_linear(w, kernel, act, &p);
  if (!st.ok()) return st;
  MatmulArgs a;
  a.w = &w;
  a.n = n;
  a.x = x;
  a.ldx = w.cols;
  a.y = y;
  a.ldy = w.rows;
  a.kernel = p.kernel;
  std::vector<int8_t> q;
  std::vector<float> d, s;
  if (p.q8) {
    q.resize(static_cast<size_t>(n * w.cols));
    d.resize(static_cast<size_t>(n * w.cols / mm::QK));
    s.resize(d.size());
    for (int64_t t = 0; t < n; ++t) {
      quantize_act_row(x + t * w.cols, w.cols, q.data() + t * w.cols, d.data() + t * (w.cols / mm::QK), s.data() + t * (w.cols / mm::QK));
    }
    a.xq = ActQ8{q.data(), d.data(), s.data(), w.cols};
  }
  const int64_t unit = p.rows, units = (w.rows + unit - 1) / unit;
  parallel_for(units, 1, [&](int64_t u0, int64_t u1) { p.fn(a, u0 * unit, std::min(w.rows, u1 * unit)); }, threads);
  return Status::Ok();
}

}  // namespace model
}  // namespace st
