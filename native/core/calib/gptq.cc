// GPTQ on the CPU: validation, the f64 Cholesky factorisation of the damped
// Hessian (the lowrank room's), the column sweep with lazy batch updates
// (the trailing update of each batch is one call of the lowrank room's
// GEMM), packing, and the optional error measurement.
#include "gptq.h"

#include <algorithm>
#include <memory>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "../cpu.h"
#include "../lowrank/gemm.h"
#include "../lowrank/linalg.h"
#include "../quant/quant_kernels.h"
#include "gptq_kernels.h"
#include "gptq_math.h"

namespace st {

namespace {

bool is_ggml(QFormat f) { return f == QFormat::Q4_0 || f == QFormat::Q4_1 || f == QFormat::Q8_0 || gq::is_k(f); }

Status check_args(const GptqArgs& a) {
  if (static_cast<int32_t>(a.format) < 0 || static_cast<int32_t>(a.format) >= kQFormatCount) {
    return Status::Error(Code::Value, "unknown quantization format code");
  }
  if (a.format == QFormat::Q5_0 || a.format == QFormat::Q5_1) {
    return Status::Error(Code::Unsupported, std::string("gptq writes q4_0, q4_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, int4 and int8, not ") +
                                                qformat_traits(a.format).name);
  }
  const int64_t rows = a.weight.rows, cols = a.weight.cols;
  if (rows < 0 || cols < 0) return Status::Error(Code::Shape, "negative dimension");
  if (!is_float_dtype(a.weight.dtype)) {
    return Status::Error(Code::DType, std::string("weight must be f32, f16 or bf16, got ") + dtype_name(a.weight.dtype));
  }
  if (is_ggml(a.format)) {
    const int block = qformat_traits(a.format).block;
    if (cols % block != 0) {
      return Status::Error(Code::Shape, std::string(qformat_traits(a.format).name) + " needs rows whose length is a multiple of " +
                                            std::to_string(block) + ", got " + std::to_string(cols));
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

// An uninitialised work buffer of `count` elements on transparent huge
// pages: on a busy VM faulting in hundreds of MB of 4 KiB pages costs
// seconds, more than the arithmetic.
template <typename T>
std::unique_ptr<T[]> workspace(size_t count) {
  std::unique_ptr<T[]> p(new T[count]);
  hint_huge_pages(p.get(), count * sizeof(T));
  return p;
}

// Element `i` of a float matrix as f32.
float element(const MatrixView& m, int64_t i) {
  if (m.dtype == DType::F32) return static_cast<const float*>(m.data)[i];
  const uint16_t h = static_cast<const uint16_t*>(m.data)[i];
  return m.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// The GPTQ sweep: codes[r·n + col] for every weight, in original column
// order, and stats->damped_error.
Status sweep(const GptqArgs& a, const std::vector<int64_t>& perm, const std::vector<char>& dead, const std::vector<double>& diag,
             const std::vector<gq::Coder>& coders, int8_t* codes_out, GptqStats* stats) {
  const int64_t rows = a.weight.rows, n = a.weight.cols;
  const int threads = a.threads;
  const int64_t group = gq::coder_group(a.format, a.group);
  const int64_t ngroups = n / group;
  const size_t nn = static_cast<size_t>(n) * static_cast<size_t>(n);
  Status st;
  // GPTQ's recurrence, as the paper writes it, uses U, the upper Cholesky
  // factor of Hp⁻¹ (Hp: the damped H in processing order): the error
  // Err_i = (w̃_i − q_i)/U_ii of column i moves the later columns by
  // −Err_i·U[i, j]. Unrolled, with V = U⁻¹ (upper, Hp = V·Vᵀ), this is
  //   w̃_j = w_j + Σ_{k<j} (w_k − q_k)·V_kj / V_jj
  // (W − Q = Err·U, so Err = (W − Q)·V), and V needs no inverse: with J
  // the reversal, J·Hp·J = RᵀR (R upper, Cholesky) gives V = J·Rᵀ·J. The
  // sweep below accumulates the sum in `t` with V' = V·diag(V)⁻¹.
  std::unique_ptr<float[]> vs = workspace<float>(nn);  // V', upper triangle (the rest unset)
  std::vector<double> vdiag(static_cast<size_t>(n));
  // One buffer holds G (f64 n²) for the factorisation, then t (f32
  // rows·n): the pages G faulted in serve t, and faulting in hundreds of
  // MB (the kernel zeroing them, compacting for huge pages) costs as much
  // as the arithmetic on a busy VM.
  const size_t tn = static_cast<size_t>(rows) * static_cast<size_t>(n);
  std::unique_ptr<double[]> shared = workspace<double>(std::max(nn, (tn + 1) / 2));
  {
    // G = J·Hp·J + damp·I, upper triangle, with Hp the symmetrised (H + Hᵀ)/2
    // in processing order; by tiles, so that Hᵀ is read a tile at a time.
    double* g = shared.get();
    constexpr int64_t kTile = 64;
    const int64_t tiles = (n + kTile - 1) / kTile;
    parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t ti = t0; ti < t1; ++ti) {
        for (int64_t tj = ti; tj < tiles; ++tj) {
          for (int64_t i = ti * kTile; i < std::min(n, (ti + 1) * kTile); ++i) {
            const int64_t pi = perm[n - 1 - i];
            for (int64_t j = std::max(i, tj * kTile); j < std::min(n, (tj + 1) * kTile); ++j) {
              const int64_t pj = perm[n - 1 - j];
              g[i * n + j] = i == j ? diag[pi] + stats->damp
                                    : 0.5 * (static_cast<double>(a.hessian[pi * n + pj]) + static_cast<double>(a.hessian[pj * n + pi]));
            }
          }
        }
      }
    }, threads);
    const int64_t bad = la::cholesky_upper(g, n, n, 1e-15, threads);
    if (bad >= 0) {
      return Status::Error(Code::Value, "hessian + dampening·mean(diag)·I is not positive definite (pivot of input column " +
                                            std::to_string(perm[n - 1 - bad]) + " vanished with dampening " +
                                            std::to_string(a.dampening) + "); raise options.dampening");
    }
    for (int64_t j = 0; j < n; ++j) vdiag[j] = g[(n - 1 - j) * n + (n - 1 - j)];
    // V'[i][j] = R[n−1−j][n−1−i] / V_jj, j >= i: a reversed transpose, by tiles.
    parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t ti = t0; ti < t1; ++ti) {
        for (int64_t tj = ti; tj < tiles; ++tj) {
          for (int64_t i = ti * kTile; i < std::min(n, (ti + 1) * kTile); ++i) {
            for (int64_t j = std::max(i, tj * kTile); j < std::min(n, (tj + 1) * kTile); ++j) {
              vs[i * n + j] = static_cast<float>(g[(n - 1 - j) * n + (n - 1 - i)] / vdiag[j]);
            }
          }
        }
      }
    }, threads);
  }

  // The sweep: t[r][j] = Σ_{k<j} E[r][k]·V'[k][j] over the columns done,
  // within a block column by column, and for the columns after it one GEMM
  // per block. Codes land in original column order.
  // t in G's buffer (G is no longer needed). Objects of a trivial type
  // start their life when first written: every float is stored before it
  // is read.
  float* const t = reinterpret_cast<float*>(shared.get());
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) { std::fill(t + r0 * n, t + r1 * n, 0.0f); }, threads);
  std::vector<double> row_err(static_cast<size_t>(rows), 0.0);
  const gk::Kernels& kern = gk::kernels();
  const int64_t bmax = std::min(a.block, n);
  std::vector<float> err(static_cast<size_t>(rows * bmax));
  std::vector<float> vblock(static_cast<size_t>(bmax * bmax));  // V'[i1:i2, i1:i2], contiguous, zeros below the diagonal
  // Per processing position: the column's group and whether it is dead.
  std::vector<int64_t> group_of(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) group_of[i] = dead[perm[i]] ? -1 : perm[i] / group;
  for (int64_t i1 = 0; i1 < n; i1 += bmax) {
    const int64_t i2 = std::min(n, i1 + bmax), b = i2 - i1;
    for (int64_t i = 0; i < b; ++i) {
      std::fill(vblock.data() + i * b, vblock.data() + i * b + i, 0.0f);
      std::copy(vs.get() + (i1 + i) * n + i1 + i, vs.get() + (i1 + i) * n + i2, vblock.data() + i * b + i);
    }
    gk::BlockArgs ba;
    ba.format = a.format;
    ba.weight = a.weight.data;
    ba.dtype = a.weight.dtype;
    ba.n = n;
    ba.i1 = i1;
    ba.i2 = i2;
    ba.perm = perm.data();
    ba.group_of = group_of.data();
    ba.group = group;
    ba.ngroups = ngroups;
    ba.coders = coders.data();
    ba.vblock = vblock.data();
    ba.vdiag = vdiag.data();
    ba.t = t;
    ba.err = err.data();
    ba.codes = codes_out;
    ba.row_err = row_err.data();
    // Column by column within the block (gptq_kernels.h), rows in parallel.
    parallel_for(rows, 32, [&](int64_t r0, int64_t r1) { kern.block(ba, r0, r1); }, threads);
    if (i2 < n) {
      // t[:, i2:] += E[:, i1:i2]·V'[i1:i2, i2:]
      GemmArgs g;
      g.m = rows;
      g.n = n - i2;
      g.k = b;
      g.a = GemmOperand{err.data(), DType::F32, b, false};
      g.b = GemmOperand{vs.get() + i1 * n + i2, DType::F32, n, false};
      g.c = t + i2;
      g.ldc = n;
      g.accumulate = true;
      g.kernel = a.kernel;
      g.threads = threads;
      st = gemm(g);
      if (!st.ok()) return st;
    }
  }
  for (double e : row_err) stats->damped_error += e;
  vs.reset();
  shared.reset();
  return Status::Ok();
}
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
  const bool kquant = gq::is_k(a.format);
  const int64_t group = gq::coder_group(a.format, a.group);
  const int64_t ngroups = n / group;
  const QuantSizes sizes = quant_sizes(a.format, n, group);

  // H: finite, diagonal >= 0 (rows in parallel; the first bad element in
  // row-major order is reported).
  std::vector<double> diag(static_cast<size_t>(n));
  {
    FirstError errs(n);
    parallel_for(n, 64, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const float* hr = a.hessian + i * n;
        for (int64_t j = 0; j < n; ++j) {
          if (!std::isfinite(hr[j])) {
            errs.per_row[i] = Status::Error(Code::Value, "hessian[" + std::to_string(i) + ", " + std::to_string(j) + "] is not finite");
            break;
          }
        }
        diag[i] = hr[i];
        if (errs.per_row[i].ok() && diag[i] < 0) {
          errs.per_row[i] = Status::Error(Code::Value, "hessian[" + std::to_string(i) + ", " + std::to_string(i) + "] is " +
                                                           std::to_string(diag[i]) + "; a Hessian X·Xᵀ has a diagonal >= 0");
        }
      }
    }, threads);
    st = errs.get();
    if (!st.ok()) return st;
  }
  // K-quants' importance: diag(H) as given.
  std::vector<float> importance;
  if (kquant && a.imatrix) {
    importance.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) importance[i] = a.hessian[i * n + i];
  }
  // Dead inputs (never non-zero in calibration): their weights cannot change
  // the output; as the reference, H_ii := 1 and the weights := 0.
  std::vector<char> dead(static_cast<size_t>(n), 0);
  double diag_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (diag[i] == 0) {
      dead[i] = 1;
      diag[i] = 1;
      ++stats->dead_columns;
    }
    diag_sum += diag[i];
  }
  stats->damp = a.dampening * diag_sum / static_cast<double>(n);
  // Processing order: descending diag(H) (stable), or the identity.
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (a.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t x, int64_t y) { return diag[x] > diag[y]; });
  }

  // Every group's coder, taken from the (dead-zeroed) original weights; it
  // also writes the stored parameters (GGUF block headers, scales, zero
  // points).
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
        if (kquant) {
          // Per super-block: the header (and codes the sweep replaces), and its sub-blocks' coders.
          const int64_t subs = qk::QK_K / group;
          for (int64_t b = 0; b < n / qk::QK_K; ++b) {
            gq::make_k_coders(a.format, row.data() + b * qk::QK_K, importance.empty() ? nullptr : importance.data() + b * qk::QK_K,
                              out_row + b * tr.block_bytes, coders.data() + r * ngroups + b * subs);
          }
          continue;
        }
        for (int64_t g = 0; g < ngroups; ++g) {
          uint8_t* block = ggml ? out_row + g * tr.block_bytes : nullptr;
          coders[r * ngroups + g] = gq::make_coder(a.format, row.data() + g * group, static_cast<int>(group), a.symmetric,
                                                   a.scale_dtype, block, a.scales, a.zeros, r * ngroups + g);
        }
      }
    }, threads);
    st = errs.get();
    if (!st.ok()) return st;
  }

  std::unique_ptr<int8_t[]> codes = workspace<int8_t>(static_cast<size_t>(rows) * static_cast<size_t>(n));
  if (a.sweep) {
    st = sweep(a, perm, dead, diag, coders, codes.get(), stats);
    if (!st.ok()) return st;
  } else {
    // Round to nearest with the same coders (dead columns as 0).
    parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const gq::Coder* cd = coders.data() + r * ngroups;
        int8_t* cr = codes.get() + r * n;
        for (int64_t j = 0; j < n; ++j) {
          cr[j] = static_cast<int8_t>(gq::code(a.format, cd[j / group], dead[j] ? 0.0f : element(a.weight, r * n + j)));
        }
      }
    }, threads);
  }

  // Codes into the output layout.
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      uint8_t* out_row = a.data + r * sizes.data_row_bytes;
      const int8_t* cr = codes.get() + r * n;
      if (kquant) {
        for (int64_t b = 0; b < n / qk::QK_K; ++b) gq::pack_k_codes(a.format, cr + b * qk::QK_K, out_row + b * tr.block_bytes);
      } else if (ggml) {
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
  // for a chunk of rows, both error matrices stacked times H in one GEMM
  // (without the sweep the codes are RTN's: one matrix).
  const int64_t stack = a.sweep ? 2 : 1;
  const int64_t chunk = std::max<int64_t>(8, std::min<int64_t>(rows, (int64_t{1} << 22) / n));
  std::unique_ptr<float[]> e = workspace<float>(static_cast<size_t>(2 * chunk * n)), eh = workspace<float>(static_cast<size_t>(2 * chunk * n));
  std::vector<double> sums(static_cast<size_t>(2 * chunk));
  double gptq_sum = 0, rtn_sum = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t m = std::min(chunk, rows - r0);
    parallel_for(m, 4, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t r = r0 + q;
        float* eg = e.get() + q * n;
        float* er = e.get() + (m + q) * n;
        load_f32(a.weight.data, a.weight.dtype, r * n, n, eg, NonFinite::Error);
        const gq::Coder* cd = coders.data() + r * ngroups;
        const int8_t* cr = codes.get() + r * n;
        for (int64_t j = 0; j < n; ++j) {
          const float x = eg[j];
          const gq::Coder& c = cd[j / group];
          const float deq_rtn = gq::dequant(a.format, c, gq::code(a.format, c, dead[j] ? 0.0f : x));
          const float deq_gptq = gq::dequant(a.format, c, cr[j]);
          eg[j] = x - deq_gptq;
          if (stack == 2) er[j] = x - deq_rtn;
        }
      }
    }, threads);
    GemmArgs g;
    g.m = stack * m;
    g.n = n;
    g.k = n;
    g.a = GemmOperand{e.get(), DType::F32, n, false};
    g.b = GemmOperand{a.hessian, DType::F32, n, false};
    g.c = eh.get();
    g.ldc = n;
    g.kernel = a.kernel;
    g.threads = threads;
    st = gemm(g);
    if (!st.ok()) return st;
    parallel_for(stack * m, 4, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        double s = 0;
        for (int64_t j = 0; j < n; ++j) s += static_cast<double>(e[q * n + j]) * eh[q * n + j];
        sums[q] = s;
      }
    }, threads);
    for (int64_t q = 0; q < m; ++q) {
      gptq_sum += sums[q];
      rtn_sum += sums[stack == 2 ? m + q : q];
    }
  }
  stats->gptq_error = gptq_sum;
  stats->rtn_error = rtn_sum;
  return Status::Ok();
}

}  // namespace st
