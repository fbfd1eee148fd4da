// Native tests of the calib room (GPTQ), built with AddressSanitizer and
// UndefinedBehaviorSanitizer by scripts/native-test.cjs: a diagonal Hessian
// reproduces quantize() byte for byte; on a correlated Hessian GPTQ's
// layer-output error, computed here from dequantize(), is below
// round-to-nearest's and equals the statistics; every output byte is
// written (outputs poisoned with two patterns); the GEMM kernels agree bit
// for bit; the error statuses. Buffers are exactly the documented sizes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "calib/gptq.h"
#include "calib/gptq_kernels.h"
#include "calib/gptq_math.h"
#include "calib/stats.h"
#include "check.h"
#include "cpu.h"
#include "quant/quant.h"

using namespace st;
using st::test::check;
using st::test::check_error;
using st::test::Isa;
using st::test::isa_usable;

namespace {


struct Out {
  std::vector<uint8_t> data, scales;
  std::vector<int8_t> zeros;
};

Out make_out(QFormat f, int64_t rows, int64_t cols, int64_t group, bool symmetric, uint8_t fill) {
  const QFormatTraits& tr = qformat_traits(f);
  const QuantSizes sz = quant_sizes(f, cols, tr.ggml ? 32 : group);
  Out o;
  o.data.assign(static_cast<size_t>(rows * sz.data_row_bytes), fill);
  if (!tr.ggml) {
    o.scales.assign(static_cast<size_t>(rows * sz.groups_per_row * 2), fill);  // f16 scales
    if (!symmetric) o.zeros.assign(static_cast<size_t>(rows * sz.groups_per_row), static_cast<int8_t>(fill));
  }
  return o;
}

GptqArgs args_for(QFormat f, const std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<float>& h,
                  int64_t group, bool symmetric, Out* o) {
  GptqArgs a;
  a.weight = MatrixView{w.data(), DType::F32, rows, cols};
  a.hessian = h.data();
  a.format = f;
  a.group = group;
  a.symmetric = symmetric;
  a.block = 16;
  a.data = o->data.data();
  a.scales = o->scales.empty() ? nullptr : o->scales.data();
  a.zeros = o->zeros.empty() ? nullptr : o->zeros.data();
  return a;
}

std::vector<float> dequant(QFormat f, const Out& o, int64_t rows, int64_t cols, int64_t group) {
  DequantizeArgs d;
  d.format = f;
  d.rows = rows;
  d.cols = cols;
  d.group = qformat_traits(f).ggml ? 32 : group;
  d.data = o.data.data();
  d.scales = o.scales.empty() ? nullptr : o.scales.data();
  d.zeros = o.zeros.empty() ? nullptr : o.zeros.data();
  std::vector<float> out(static_cast<size_t>(rows * cols));
  check(dequantize(d, out.data(), DType::F32).ok(), "dequantize");
  return out;
}

double layer_error(const std::vector<float>& w, const std::vector<float>& q, const std::vector<float>& h, int64_t rows,
                   int64_t n, double damp) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      const double ei = static_cast<double>(w[r * n + i]) - q[r * n + i];
      double s = damp * ei;
      for (int64_t j = 0; j < n; ++j) s += static_cast<double>(h[i * n + j]) * (static_cast<double>(w[r * n + j]) - q[r * n + j]);
      total += ei * s;
    }
  }
  return total;
}

struct Variant { QFormat f; int64_t group; bool symmetric; };

// H = XᵀX of `tokens` inputs n wide, correlated along the row.
std::vector<float> correlated_hessian(std::mt19937& gen, int64_t n, int64_t tokens) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> h(static_cast<size_t>(n * n), 0.0f);
  std::vector<double> hd(h.size(), 0.0), x(static_cast<size_t>(n));
  for (int64_t t = 0; t < tokens; ++t) {
    double v = nd(gen);
    for (int64_t j = 0; j < n; ++j) x[j] = v = 0.9 * v + nd(gen);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) hd[i * n + j] += x[i] * x[j];
    }
  }
  for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>(hd[i]);
  return h;
}

// One format on weights [rows, n]: a diagonal H gives quantize()'s bytes
// (K-quants: with imatrix off, the reference search), a correlated one
// writes every byte, measures its error and beats round-to-nearest, and
// every GEMM kernel gives the same bits.
void check_variant(const Variant& v, const std::vector<float>& w, const std::vector<float>& h, int64_t rows, int64_t n) {
  std::vector<float> diag(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i) diag[i * n + i] = 1.0f + static_cast<float>(i % 5);
  {
    const std::string name = qformat_traits(v.f).name;
    // Diagonal H: quantize()'s bytes.
    {
      Out g = make_out(v.f, rows, n, v.group, v.symmetric, 0xa5), q = make_out(v.f, rows, n, v.group, v.symmetric, 0x5a);
      GptqArgs a = args_for(v.f, w, rows, n, diag, v.group, v.symmetric, &g);
      a.act_order = true;
      a.imatrix = false;
      GptqStats s;
      check(gptq(a, &s).ok(), name + " diagonal: ok");
      QuantizeArgs qa;
      qa.src = MatrixView{w.data(), DType::F32, rows, n};
      qa.format = v.f;
      qa.group = qformat_traits(v.f).ggml ? qformat_traits(v.f).block : v.group;
      qa.symmetric = v.symmetric;
      qa.data = q.data.data();
      qa.scales = q.scales.empty() ? nullptr : q.scales.data();
      qa.zeros = q.zeros.empty() ? nullptr : q.zeros.data();
      check(quantize(qa).ok(), name + " quantize: ok");
      check(g.data == q.data && g.scales == q.scales && g.zeros == q.zeros, name + " diagonal H: quantize()'s bytes");
      check(s.gptq_error == s.rtn_error, name + " diagonal H: the RTN error");
    }
    // Correlated H: every byte written (two poisons agree), error below RTN's and as measured here.
    Out o1 = make_out(v.f, rows, n, v.group, v.symmetric, 0x00), o2 = make_out(v.f, rows, n, v.group, v.symmetric, 0xff);
    GptqStats s1, s2;
    check(gptq(args_for(v.f, w, rows, n, h, v.group, v.symmetric, &o1), &s1).ok(), name + ": ok");
    check(gptq(args_for(v.f, w, rows, n, h, v.group, v.symmetric, &o2), &s2).ok(), name + ": ok again");
    check(o1.data == o2.data && o1.scales == o2.scales && o1.zeros == o2.zeros, name + ": every output byte written");
    const std::vector<float> deq = dequant(v.f, o1, rows, n, v.group);
    const double err = layer_error(w, deq, h, rows, n, 0), derr = layer_error(w, deq, h, rows, n, s1.damp);
    check(std::fabs(s1.gptq_error - err) <= 1e-4 * err, name + ": gptq_error is tr(E·H·Eᵀ)");
    check(std::fabs(s1.damped_error - derr) <= 1e-3 * derr, name + ": damped_error is tr(E·(H+damp)·Eᵀ)");
    check(s1.gptq_error < 0.7 * s1.rtn_error, name + ": below round-to-nearest (" + std::to_string(s1.gptq_error) + " vs " +
                                                  std::to_string(s1.rtn_error) + ")");
    // GEMM kernels: the same bits.
    for (Kernel k : {Kernel::Reference, Kernel::Avx2, Kernel::Avx512}) {
      if (k == Kernel::Avx2 && !isa_usable(Isa::Avx2, name + " avx2 GEMM")) continue;
      if (k == Kernel::Avx512 && !isa_usable(Isa::Avx512, name + " avx512 GEMM")) continue;
      Out o3 = make_out(v.f, rows, n, v.group, v.symmetric, 0x11);
      GptqArgs a = args_for(v.f, w, rows, n, h, v.group, v.symmetric, &o3);
      a.kernel = k;
      GptqStats s3;
      check(gptq(a, &s3).ok() && o3.data == o1.data && s3.gptq_error == s1.gptq_error, name + ": kernel " + std::to_string(static_cast<int>(k)) + " same bits");
    }
  }
}

}  // namespace


// The sweep's in-block kernel (gptq_kernels.h) of every build the CPU runs
// against the loop it replaced, written here one row at a time: the same
// codes, errors, t and error sums, bit for bit. 7 rows (a group of four and
// three single ones), a 40-wide block from column 8 (not a multiple of the
// vector width), a reversed processing order and a dead column.
static void check_block_kernels(std::mt19937& gen, QFormat f, int64_t group) {
  const int64_t rows = 7, n = 64, i1 = 8, i2 = 48, b = i2 - i1, ngroups = n / group;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * n)), t0(w.size()), vblock(static_cast<size_t>(b * b), 0.0f);
  for (float& v : w) v = nd(gen);
  for (float& v : t0) v = 0.1f * nd(gen);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = i; j < b; ++j) vblock[i * b + j] = j == i ? 1.0f : 0.3f * nd(gen);
  }
  std::vector<double> vdiag(static_cast<size_t>(n));
  for (double& v : vdiag) v = 0.5 + std::fabs(nd(gen));
  std::vector<int64_t> perm(static_cast<size_t>(n)), group_of(perm.size());
  for (int64_t i = 0; i < n; ++i) perm[i] = n - 1 - i;
  for (int64_t i = 0; i < n; ++i) group_of[i] = i == 20 ? -1 : perm[i] / group;
  std::vector<gq::Coder> coders(static_cast<size_t>(rows * ngroups));
  std::vector<uint8_t> blocks(64);
  std::vector<uint8_t> scales(static_cast<size_t>(rows * ngroups * 4));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < ngroups; ++g) {
      coders[r * ngroups + g] = gq::make_coder(f, w.data() + r * n + g * group, static_cast<int>(group), true, DType::F32,
                                               blocks.data(), scales.data(), nullptr, r * ngroups + g);
    }
  }
  // The expected values: one row at a time.
  std::vector<float> te = t0, erre(static_cast<size_t>(rows * b));
  std::vector<int8_t> codese(w.size(), 0);
  std::vector<double> rowe(static_cast<size_t>(rows), 0.25);
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (int64_t i = i1; i < i2; ++i) {
      const int64_t col = perm[i], gi = group_of[i];
      const float w0 = gi < 0 ? 0.0f : w[r * n + col];
      const float x = w0 + te[r * n + i];
      const gq::Coder& c = coders[r * ngroups + (gi < 0 ? col / group : gi)];
      const int q = gq::code(f, c, x);
      const float deq = gq::dequant(f, c, q);
      codese[r * n + col] = static_cast<int8_t>(q);
      const double sc = static_cast<double>(x - deq) * vdiag[i];
      acc += sc * sc;
      const float e = w0 - deq;
      erre[r * b + i - i1] = e;
      for (int64_t j = i + 1; j < i2; ++j) te[r * n + j] += e * vblock[(i - i1) * b + j - i1];
    }
    rowe[r] += acc;
  }
  struct Build {
    const char* name;
    const gk::Kernels* k;
    bool usable;
  };
  const std::string fmt = qformat_traits(f).name;
  const Build builds[] = {{"reference", &gk::ref::kernels(), true},
                          {"avx2", gk::avx2::kernels(), isa_usable(Isa::Avx2, "gptq block kernel avx2 " + fmt)},
                          {"avx512", gk::avx512::kernels(), isa_usable(Isa::Avx512, "gptq block kernel avx512 " + fmt)}};
  for (const Build& bd : builds) {
    if (!bd.usable || !bd.k) continue;
    std::vector<float> t = t0, err(static_cast<size_t>(rows * b));
    std::vector<int8_t> codes(w.size(), 0);
    std::vector<double> rowv(static_cast<size_t>(rows), 0.25);
    gk::BlockArgs a;
    a.format = f;
    a.weight = w.data();
    a.dtype = DType::F32;
    a.n = n;
    a.i1 = i1;
    a.i2 = i2;
    a.perm = perm.data();
    a.group_of = group_of.data();
    a.group = group;
    a.ngroups = ngroups;
    a.coders = coders.data();
    a.vblock = vblock.data();
    a.vdiag = vdiag.data();
    a.t = t.data();
    a.err = err.data();
    a.codes = codes.data();
    a.row_err = rowv.data();
    bd.k->block(a, 0, rows);
    bool t_same = true;  // columns [i1, i2) are the kernel's scratch; the rest must be untouched
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        if (j >= i1 && j < i2) continue;
        t_same = t_same && std::memcmp(&t[r * n + j], &te[r * n + j], 4) == 0;
      }
    }
    const std::string what = std::string("gptq block kernel ") + bd.name + " " + fmt;
    check(codes == codese, what + ": codes equal the row-by-row loop's");
    check(std::memcmp(err.data(), erre.data(), err.size() * 4) == 0, what + ": errors equal bit for bit");
    check(std::memcmp(rowv.data(), rowe.data(), rowv.size() * 8) == 0, what + ": damped error sums equal bit for bit");
    check(t_same, what + ": t outside the block untouched");
  }
}

int main() {
  const int64_t rows = 12, n = 64, tokens = 200;
  std::mt19937 gen(16);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * n));
  for (float& v : w) v = nd(gen);
  const std::vector<float> h = correlated_hessian(gen, n, tokens);
  const Variant variants[] = {{QFormat::Q4_0, 32, true}, {QFormat::Q4_1, 32, true}, {QFormat::Q8_0, 32, true},
                              {QFormat::Int4, 32, false}, {QFormat::Int8, 64, true}};
  for (const Variant& v : variants) check_variant(v, w, h, rows, n);
  check_block_kernels(gen, QFormat::Int4, 16);
  check_block_kernels(gen, QFormat::Q4_0, 32);
  // K-quants: super-blocks of 256.
  {
    const int64_t nk = 256;
    std::vector<float> wk(static_cast<size_t>(4 * nk));
    for (float& v : wk) v = nd(gen);
    const std::vector<float> hk = correlated_hessian(gen, nk, 300);
    for (QFormat f : {QFormat::Q2_K, QFormat::Q3_K, QFormat::Q4_K, QFormat::Q5_K, QFormat::Q6_K}) check_variant({f, 256, true}, wk, hk, 4, nk);
  }

  // Errors.
  {
    Out o = make_out(QFormat::Q4_0, rows, n, 32, true, 0);
    GptqStats s;
    std::vector<float> bad = w;
    bad[3 * n + 5] = NAN;
    check_error(gptq(args_for(QFormat::Q4_0, bad, rows, n, h, 32, true, &o), &s), Code::Value, "weight[3, 5] is not finite", "NaN weight");
    std::vector<float> hb = h;
    hb[1 * n + 2] = INFINITY;
    check_error(gptq(args_for(QFormat::Q4_0, w, rows, n, hb, 32, true, &o), &s), Code::Value, "hessian[1, 2] is not finite", "Inf hessian");
    std::vector<float> zero(h.size(), 0.0f);
    zero[0] = 1.0f;
    for (int64_t i = 1; i < n; ++i) zero[i * n + i] = 1.0f;
    zero[0 * n + 1] = zero[1 * n + 0] = 4.0f;  // indefinite 2x2 block
    check_error(gptq(args_for(QFormat::Q4_0, w, rows, n, zero, 32, true, &o), &s), Code::Value, "not positive definite", "indefinite H");
    GptqArgs a = args_for(QFormat::Int4, w, rows, n, h, 48, true, &o);
    check_error(gptq(a, &s), Code::Shape, "multiple of the group size", "group 48");
    a = args_for(QFormat::Q4_0, w, rows, n, h, 32, true, &o);
    a.kernel = Kernel::Cuda;
    check_error(gptq(a, &s), Code::Unsupported, "CPU", "cuda kernel");
    a.kernel = Kernel::Auto;
    a.dampening = -1;
    check_error(gptq(a, &s), Code::Value, "dampening", "negative dampening");
  }
  // Activation statistics: two batches of 37 rows × 300 columns (not a
  // multiple of the column block of 64, the Hessian's block rows of 256 or
  // its mirror tiles of 64) against f64 loops; every thread count and
  // kernel the same bits; H exactly symmetric.
  {
    const int64_t width = 300, r1 = 37;
    std::vector<float> x(static_cast<size_t>(2 * r1 * width));
    for (float& v : x) v = nd(gen);
    std::vector<double> ss_ref(width, 0.0), sa_ref(width, 0.0), h_ref(static_cast<size_t>(width * width), 0.0);
    std::vector<double> h_batch(h_ref.size(), 0.0);
    for (int64_t b = 0; b < 2; ++b) {
      std::fill(h_batch.begin(), h_batch.end(), 0.0);
      for (int64_t r = b * r1; r < (b + 1) * r1; ++r) {
        for (int64_t i = 0; i < width; ++i) {
          const double v = x[r * width + i];
          ss_ref[i] += v * v;
          sa_ref[i] += std::fabs(v);
          for (int64_t j = 0; j < width; ++j) h_batch[i * width + j] += v * x[r * width + j];
        }
      }
      for (size_t i = 0; i < h_ref.size(); ++i) h_ref[i] += h_batch[i];
    }
    std::vector<float> first;
    for (const int threads : {1, 3}) {
      for (const Kernel k : {Kernel::Reference, Kernel::Auto}) {
        std::vector<double> ss(width, 0.0), sa(width, 0.0);
        std::vector<float> hh(h_ref.size(), 0.0f), scratch(h_ref.size(), NAN);
        for (int64_t b = 0; b < 2; ++b) {
          ActStatsArgs a;
          a.x = x.data() + b * r1 * width;
          a.rows = r1;
          a.width = width;
          a.sum_squares = ss.data();
          a.sum_abs = sa.data();
          a.hessian = hh.data();
          a.scratch = scratch.data();
          a.kernel = k;
          a.threads = threads;
          check(accumulate_activation_stats(a).ok(), "activation stats: ok");
        }
        const std::string name = "activation stats (threads " + std::to_string(threads) + ", kernel " + std::to_string(static_cast<int>(k)) + ")";
        check(ss == ss_ref && sa == sa_ref, name + ": column sums are the f64 sums in row order");
        double worst = 0;
        for (int64_t i = 0; i < width; ++i) {
          for (int64_t j = 0; j < width; ++j) worst = std::max(worst, std::fabs(hh[i * width + j] - h_ref[i * width + j]) / std::sqrt(ss_ref[i] * ss_ref[j]));
        }
        check(worst < 1e-6, name + ": H within f32 rounding of the f64 XᵀX (" + std::to_string(worst) + ")");
        bool symmetric = true;
        for (int64_t i = 0; i < width; ++i) {
          for (int64_t j = 0; j < i; ++j) symmetric = symmetric && std::memcmp(&hh[i * width + j], &hh[j * width + i], sizeof(float)) == 0;
        }
        check(symmetric, name + ": H exactly symmetric");
        if (first.empty()) first = hh;
        check(std::memcmp(first.data(), hh.data(), hh.size() * sizeof(float)) == 0, name + ": same bits as the first run");
      }
    }
    std::vector<double> ss(width, 0.0), sa(width, 0.0);
    std::vector<float> hh(h_ref.size(), 0.0f);
    ActStatsArgs a;
    a.x = x.data();
    a.rows = r1;
    a.width = width;
    a.sum_squares = ss.data();
    a.sum_abs = sa.data();
    a.hessian = hh.data();
    check_error(accumulate_activation_stats(a), Code::Value, "scratch", "activation stats without scratch");
    a.hessian = nullptr;
    a.rows = -1;
    check_error(accumulate_activation_stats(a), Code::Shape, "negative", "activation stats: negative rows");
    a.rows = r1;
    a.kernel = Kernel::Cuda;
    check_error(accumulate_activation_stats(a), Code::Unsupported, "CPU", "activation stats: cuda");
  }
  return st::test::finish("native calib core");
}
