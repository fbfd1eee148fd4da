// GPTQ on the CPU: validation, the f64 Cholesky factor of the damped inverse
// Hessian, the column sweep with lazy batch updates (the trailing update of
// each batch is one call of the lowrank room's GEMM), packing, and the
// optional error measurement.
#include "gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "../cpu.h"
#include "../lowrank/gemm.h"
#include "../lowrank/linalg.h"
#include "../quant/quant_kernels.h"
#include "gptq_math.h"

namespace st {

namespace {

bool is_ggml(QFormat f) { return f == QFormat::Q4_0 || f == QFormat::Q4_1 || f == QFormat::Q8_0; }

Status check_args(const GptqArgs& a) {
  if (static_cast<int32_t>(a.format) < 0 || static_cast<int32_t>(a.format) > 4) {
    return Status::Error(Code::Value, "unknown quantization format code");
  }
  const int64_t rows = a.weight.rows, cols = a.weight.cols;
  if (rows < 0 || cols < 0) return Status::Error(Code::Shape, "negative dimension");
  if (!is_float_dtype(a.weight.dtype)) {
    return Status::Error(Code::DType, std::string("weight must be f32, f16 or bf16, got ") + dtype_name(a.weight.dtype));
  }
  if (is_ggml(a.format)) {
    if (cols % qm::QK != 0) {
      return Status::Error(Code::Shape, std::string(qformat_traits(a.format).name) +
                                            " needs rows whose length is a multiple of 32, got " + std::to_string(cols));
    }
  } else {
    if (a.group <= 0 || (cols > 0 && cols % a.group != 0)) {
      return Status::Error(Code::Shape, "row length " + std::to_string(cols) + " is not a multiple of the group size " +
                                            std::to_string(a.group));
    }
    if (a.scale_dtype != DType::F16 && a.scale_dtype != DType::BF16 && a.scale_dtype != DType::F32) {
      return Status::Error(Code::DType, std::string("scale dtype must be f16, bf16 or f32, got ") + dtype_name(a.scale_dtype));
    }
  }
  if (!(a.dampening >= 0 && a.dampening < 1e6)) {
    return Status::Error(Code::Value, "dampening must be a finite number >= 0, got " + std::to_string(a.dampening));
  }
  if (a.block <= 0) return Status::Error(Code::Value, "block size must be positive, got " + std::to_string(a.block));
  if (a.kernel == Kernel::Cuda) return Status::Error(Code::Unsupported, "gptq runs on the CPU only");
  if (rows > 0 && cols > 0) {
    if (!a.weight.data || !a.hessian || !a.data) return Status::Error(Code::Value, "missing buffer");
    if (!is_ggml(a.format) && (!a.scales || (!a.symmetric && !a.zeros))) return Status::Error(Code::Value, "missing buffer");
  }
  return Status::Ok();
}

// Row r of the weight as f32; ERR_VALUE naming the first non-finite element.
Status load_row(const MatrixView& w, int64_t r, float* out) {
  const int64_t bad = load_f32(w.data, w.dtype, r * w.cols, w.cols, out, NonFinite::Error);
  if (bad >= 0) {
    return Status::Error(Code::Value, "weight[" + std::to_string(r) + ", " + std::to_string(bad) +
                                          "] is not finite; GPTQ needs finite weights");
  }
  return Status::Ok();
}

// The first error a parallel loop met (the lowest row, so the message does
// not depend on the thread count).
struct FirstError {
  std::vector<Status> per_row;
  explicit FirstError(int64_t rows) : per_row(static_cast<size_t>(rows)) {}
  Status get() const {
    for (const Status& s : per_row) {
      if (!s.ok()) return s;
    }
    return Status::Ok();
  }
};

}  // namespace

Status gptq(const GptqArgs& a, GptqStats* stats) {
  Status st = check_args(a);
  if (!st.ok()) return st;
  *stats = GptqStats{};
  const int64_t rows = a.weight.rows, n = a.weight.cols;
  if (rows == 0 || n == 0) {
    if (a.measure) stats->gptq_error = stats->rtn_error = 0;
    return Status::Ok();
  }
  const int threads = a.threads;
  const QFormatTraits& tr = qformat_traits(a.format);
  const bool ggml = tr.ggml;
  const int64_t group = ggml ? qm::QK : a.group;
  const int64_t ngroups = n / group;
  const QuantSizes sizes = quant_sizes(a.format, n, group);
  const size_t nn = static_cast<size_t>(n) * static_cast<size_t>(n);

  // H in f64, symmetrised; finite, diagonal >= 0.
  std::vector<double> h(nn);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float v = a.hessian[i * n + j];
      if (!std::isfinite(v)) {
        return Status::Error(Code::Value, "hessian[" + std::to_string(i) + ", " + std::to_string(j) + "] is not finite");
      }
      h[i * n + j] = j >= i ? 0.5 * (static_cast<double>(v) + static_cast<double>(a.hessian[j * n + i])) : h[j * n + i];
    }
    if (h[i * n + i] < 0) {
      return Status::Error(Code::Value, "hessian[" + std::to_string(i) + ", " + std::to_string(i) + "] is " +
                                            std::to_string(h[i * n + i]) + "; a Hessian X·Xᵀ has a diagonal >= 0");
    }
  }
  // Dead inputs (never non-zero in calibration): their weights cannot change
  // the output; as the reference, H_ii := 1 and the weights := 0.
  std::vector<char> dead(static_cast<size_t>(n), 0);
  double diag_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (h[i * n + i] == 0) {
      dead[i] = 1;
      h[i * n + i] = 1;
      ++stats->dead_columns;
    }
    diag_sum += h[i * n + i];
  }
  stats->damp = a.dampening * diag_sum / static_cast<double>(n);
  // Processing order: descending diag(H) (stable), or the identity.
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (a.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t x, int64_t y) { return h[x * n + x] > h[y * n + y]; });
  }

  // The working weights in processing order, and every group's coder taken
  // from the (dead-zeroed) original weights, which also writes the stored
  // parameters (GGUF block headers, scales, zero points).
  std::vector<float> w(static_cast<size_t>(rows) * static_cast<size_t>(n));
  std::vector<gq::Coder> coders(static_cast<size_t>(rows * ngroups));
  {
    FirstError errs(rows);
    parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(n));
      for (int64_t r = r0; r < r1; ++r) {
        Status s = load_row(a.weight, r, row.data());
        if (!s.ok()) { errs.per_row[r] = s; continue; }
        for (int64_t j = 0; j < n; ++j) {
          if (dead[j]) row[j] = 0.0f;
        }
        uint8_t* out_row = a.data + r * sizes.data_row_bytes;
        for (int64_t g = 0; g < ngroups; ++g) {
          uint8_t* block = ggml ? out_row + g * tr.block_bytes : nullptr;
          coders[r * ngroups + g] = gq::make_coder(a.format, row.data() + g * group, static_cast<int>(group), a.symmetric,
                                                   a.scale_dtype, block, a.scales, a.zeros, r * ngroups + g);
        }
        float* wr = w.data() + r * n;
        for (int64_t j = 0; j < n; ++j) wr[j] = row[perm[j]];
      }
    }, threads);
    st = errs.get();
    if (!st.ok()) return st;
  }

  // U = the upper Cholesky factor of (H + damp·I)⁻¹ in processing order,
  // without forming the inverse: with J the reversal, J·Hp·J = RᵀR gives
  // Hp = V·Vᵀ for the upper V = J·Rᵀ·J, so Hp⁻¹ = UᵀU with U = V⁻¹ = J·R⁻ᵀ·J.
  std::vector<float> u(nn, 0.0f);
  {
    std::vector<double> g(nn);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pi = perm[n - 1 - i];
      for (int64_t j = 0; j < n; ++j) g[i * n + j] = h[pi * n + perm[n - 1 - j]];
      g[i * n + i] += stats->damp;
    }
    std::vector<double>().swap(h);
    const int64_t bad = la::cholesky_upper(g.data(), n, n, 1e-15, threads);
    if (bad >= 0) {
      return Status::Error(Code::Value, "hessian + dampening·mean(diag)·I is not positive definite (pivot of input column " +
                                            std::to_string(perm[n - 1 - bad]) + " vanished with dampening " +
                                            std::to_string(a.dampening) + "); raise options.dampening");
    }
    la::invert_upper(g.data(), n, n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = i; j < n; ++j) u[i * n + j] = static_cast<float>(g[(n - 1 - j) * n + (n - 1 - i)]);
    }
  }

  // The sweep. Codes land in original column order.
  std::vector<int8_t> codes(static_cast<size_t>(rows) * static_cast<size_t>(n));
  std::vector<double> row_err(static_cast<size_t>(rows), 0.0);
  const int64_t bmax = std::min(a.block, n);
  std::vector<float> neg_err(static_cast<size_t>(rows * bmax));
  for (int64_t i1 = 0; i1 < n; i1 += bmax) {
    const int64_t i2 = std::min(n, i1 + bmax), b = i2 - i1;
    parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* wr = w.data() + r * n;
        float* er = neg_err.data() + r * b;
        int8_t* cr = codes.data() + r * n;
        const gq::Coder* cd = coders.data() + r * ngroups;
        double acc = 0;
        for (int64_t i = i1; i < i2; ++i) {
          const int64_t col = perm[i];
          const gq::Coder& c = cd[col / group];
          const int q = gq::code(a.format, c, wr[i]);
          const float deq = gq::dequant(a.format, c, q);
          cr[col] = static_cast<int8_t>(q);
          const float* ui = u.data() + i * n;
          const float e = (wr[i] - deq) / ui[i];
          acc += static_cast<double>(e) * e;
          er[i - i1] = -e;
          for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
        }
        row_err[r] += acc;
      }
    }, threads);
    if (i2 < n) {
      // W[:, i2:] += (−Err)·U[i1:i2, i2:]
      GemmArgs g;
      g.m = rows;
      g.n = n - i2;
      g.k = b;
      g.a = GemmOperand{neg_err.data(), DType::F32, b, false};
      g.b = GemmOperand{u.data() + i1 * n + i2, DType::F32, n, false};
      g.c = w.data() + i2;
      g.ldc = n;
      g.accumulate = true;
      g.kernel = a.kernel;
      g.threads = threads;
      st = gemm(g);
      if (!st.ok()) return st;
    }
  }
  for (double e : row_err) stats->damped_error += e;
  std::vector<float>().swap(u);
  std::vector<float>().swap(w);

  // Codes into the output layout.
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      uint8_t* out_row = a.data + r * sizes.data_row_bytes;
      const int8_t* cr = codes.data() + r * n;
      if (ggml) {
        for (int64_t g = 0; g < ngroups; ++g) {
          uint8_t* y = out_row + g * tr.block_bytes;
          const int8_t* c = cr + g * qm::QK;
          if (a.format == QFormat::Q8_0) {
            for (int j = 0; j < qm::QK; ++j) y[2 + j] = static_cast<uint8_t>(c[j]);
          } else {
            int q[qm::QK];
            for (int j = 0; j < qm::QK; ++j) q[j] = c[j];
            qm::pack_nibbles_split(q, y + (a.format == QFormat::Q4_1 ? 4 : 2));
          }
        }
      } else {
        // Padding nibbles of the last int32 word stay zero.
        std::fill(out_row, out_row + sizes.data_row_bytes, uint8_t{0});
        for (int64_t j = 0; j < n; ++j) qm::put_code(out_row, j, cr[j], tr.bits);
      }
    }
  }, threads);

  if (!a.measure) return Status::Ok();
  // tr(E·H·Eᵀ) for GPTQ and RTN (the same coders on the original weights):
  // for a chunk of rows, both error matrices stacked times H in one GEMM.
  const int64_t chunk = std::max<int64_t>(8, std::min<int64_t>(rows, (int64_t{1} << 22) / n));
  std::vector<float> e(static_cast<size_t>(2 * chunk * n)), eh(e.size());
  std::vector<double> sums(static_cast<size_t>(2 * chunk));
  double gptq_sum = 0, rtn_sum = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t m = std::min(chunk, rows - r0);
    parallel_for(m, 4, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t r = r0 + q;
        float* eg = e.data() + q * n;
        float* er = e.data() + (m + q) * n;
        load_f32(a.weight.data, a.weight.dtype, r * n, n, eg, NonFinite::Error);
        const gq::Coder* cd = coders.data() + r * ngroups;
        const int8_t* cr = codes.data() + r * n;
        for (int64_t j = 0; j < n; ++j) {
          const float x = eg[j];
          const gq::Coder& c = cd[j / group];
          const float deq_rtn = gq::dequant(a.format, c, gq::code(a.format, c, dead[j] ? 0.0f : x));
          const float deq_gptq = gq::dequant(a.format, c, cr[j]);
          eg[j] = x - deq_gptq;
          er[j] = x - deq_rtn;
        }
      }
    }, threads);
    GemmArgs g;
    g.m = 2 * m;
    g.n = n;
    g.k = n;
    g.a = GemmOperand{e.data(), DType::F32, n, false};
    g.b = GemmOperand{a.hessian, DType::F32, n, false};
    g.c = eh.data();
    g.ldc = n;
    g.kernel = a.kernel;
    g.threads = threads;
    st = gemm(g);
    if (!st.ok()) return st;
    parallel_for(2 * m, 4, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        double s = 0;
        for (int64_t j = 0; j < n; ++j) s += static_cast<double>(e[q * n + j]) * eh[q * n + j];
        sums[q] = s;
      }
    }, threads);
    for (int64_t q = 0; q < m; ++q) {
      gptq_sum += sums[q];
      rtn_sum += sums[m + q];
    }
  }
  stats->gptq_error = gptq_sum;
  stats->rtn_error = rtn_sum;
  return Status::Ok();
}

}  // namespace st
