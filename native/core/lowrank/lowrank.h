// Low-rank factorization: the public entry points of the lowrank room.
//
//   exact_svd:  A = U·diag(s)·Vᵀ (thin, descending), optionally the top k.
//   low_rank:   W ≈ L·R with L m x r, R r x n, r chosen by a rule, by the
//               exact SVD or by the randomized SVD of Halko, Martinsson and
//               Tropp (FORMATS.md), optionally activation-aware (ASVD
//               diagonal scaling, SVD-LLM Cholesky whitening).
//
// Outputs are owned vectors: the rank (and so the factor sizes) may only
// be known once the spectrum is (energy rule).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../tensor.h"
#include "gemm.h"

namespace st {

enum class LrMethod : int32_t { Auto = 0, Exact = 1, Randomized = 2 };
enum class RankRule : int32_t { Rank = 0, Energy = 1, Ratio = 2 };
enum class Whiten : int32_t { None = 0, Gram = 1, Scale = 2 };

struct SvdArgs {
  MatrixView a;                // m x n, f32/f16/bf16
  int64_t k = 0;               // keep the top k triplets (0: all min(m, n))
  GemmKernel kernel = GemmKernel::Auto;
  int threads = 0;
};

struct SvdResult {
  int64_t k = 0;
  std::vector<float> u;        // m x k
  std::vector<double> s;       // k, descending
  std::vector<float> vt;       // k x n
  bool cuda = false;
};

Status exact_svd(const SvdArgs& a, SvdResult* out);

struct LowRankArgs {
  MatrixView w;                // m x n, f32/f16/bf16
  RankRule rule = RankRule::Rank;
  int64_t rank = 0;            // RankRule::Rank
  double energy = 0;           // RankRule::Energy: fraction of Σσ² kept, (0, 1]
  double ratio = 0;            // RankRule::Ratio: r·(m+n) <= ratio·m·n
  LrMethod method = LrMethod::Auto;
  int64_t oversample = 10;
  int64_t power_iters = 2;
  uint64_t seed = 0;
  Whiten whiten = Whiten::None;
  const float* gram = nullptr;   // n x n, XᵀX of the layer's inputs (Whiten::Gram)
  const float* scale = nullptr;  // n, > 0 (Whiten::Scale)
  GemmKernel kernel = GemmKernel::Auto;
  int threads = 0;
};

struct LowRankResult {
  int64_t rank = 0;
  std::vector<float> left;     // m x rank
  std::vector<float> right;    // rank x n
  // Exact: all min(m, n) singular values; randomized: the k + p estimates.
  // Of the matrix that was factored (W, W·diag(scale) or W·S).
  std::vector<double> sigma;
  double rel_error = 0;          // measured (see low_rank)
  double optimal_rel_error = 0;  // Eckart–Young from `sigma`
  LrMethod method = LrMethod::Exact;  // the one that ran
  bool cuda = false;
  int64_t samples = 0;         // randomized: k + p columns of the sketch
  double damping = 0;          // Whiten::Gram: λ added to the Gram's diagonal (0 unless it was singular)
};

// The rank a rule picks from a spectrum (descending) whose total energy is
// `total` (Σ of all σ², which may include singular values not in `sigma`):
//   Rank:   min(rank, min(m, n))
//   Ratio:  floor(ratio·m·n / (m + n)), at most min(m, n)
//   Energy: the smallest r with Σ_{i<r} σ_i² >= energy·total; -1 when the
//           given values do not reach it.
int64_t pick_rank(RankRule rule, int64_t rank, double energy, double ratio, int64_t m, int64_t n,
                  const std::vector<double>& sigma, double total);

// Factorizes (see LowRankArgs). Errors (relative, Frobenius):
//   none / scale: relError = ‖X − L·R̂‖ / ‖X‖ with X = W (or W·diag(scale))
//                 and R̂ = R (or R·diag(scale)), measured by forming L·R̂
//                 tile by tile; optimalRelError = sqrt(Σ_{i>r} σ_i²) / ‖X‖.
//   gram:         output space, ‖(W − L·R)·Xᵀ‖ / ‖W·Xᵀ‖ = ‖(W − L·R)·S‖ /
//                 ‖W·S‖ for XᵀX = S·Sᵀ, measured on W·S.
// For 'randomized', σ_i for i > k + p are not known: the optimum is taken
// as sqrt(‖X‖² − Σ_{i<=r} σ̃_i²), the energy the estimates miss (an upper
// bound of the true optimum, equal to the achieved error in exact
// arithmetic).
Status low_rank(const LowRankArgs& a, LowRankResult* out);

// Σ (X − L·R)² over the m x n matrix X (f32/f16/bf16, row stride ldx) and,
// when norm_sq is not null, Σ X². Fixed tiling: the same bits for any
// thread count.
Status residual_sq(const MatrixView& x, const float* l, const float* r, int64_t k, double* res_sq, double* norm_sq,
                   GemmKernel kernel, int threads);

// The benchmark's machine probes: the clock from a dependent chain of
// register adds (one cycle each), and FMA throughput from 12 independent
// chains of 8-lane (ymm) or 16-lane (zmm) FMAs. Seconds for `iters`
// iterations; 0 when the instructions are unavailable.
struct PeakProbe {
  double add_seconds = 0;     // iters x 10 dependent adds
  double fma256_seconds = 0;  // iters x 12 ymm FMAs
  double fma512_seconds = 0;  // iters x 12 zmm FMAs
};
PeakProbe probe_peak(int64_t iters);

}  // namespace st
