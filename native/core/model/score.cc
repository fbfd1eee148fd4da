// Scoring logits for perplexity and KL divergence (lib/model/evaluate.ts):
// per row, the negative log-likelihood of the target under log-softmax and,
// against a base model's logits, KL(base ‖ model) and whether both rank the
// same token first. Sums in double; rows split over the thread pool, so a
// 512 × 152k chunk is scored off the event loop in a few milliseconds.
#include <cmath>

#include "../cpu.h"
#include "model.h"

namespace st {
namespace model {

namespace {

// max, log Σ exp(x - max) and the first index of the maximum.
struct RowStats {
  double max = -INFINITY, lse = 0;
  int64_t argmax = 0;
};

RowStats row_stats(const float* x, int64_t n) {
  RowStats s;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] > s.max) {
      s.max = x[i];
      s.argmax = i;
    }
  }
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - s.max);
  s.lse = std::log(sum);
  return s;
}

}  // namespace

Status score_logits(const ScoreArgs& a) {
  if (a.rows < 0 || a.vocab < 1) return Status::Error(Code::Shape, "bad logits shape");
  for (int64_t r = 0; r < a.rows; ++r) {
    if (a.targets[r] < 0 || a.targets[r] >= a.vocab) return Status::Error(Code::Value, "target " + std::to_string(r) + " is outside the vocabulary");
  }
  parallel_for(a.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = a.logits + r * a.vocab;
      const RowStats m = row_stats(x, a.vocab);
      const int32_t t = a.targets[r];
      a.nll[r] = m.max + m.lse - x[t];
      if (!a.base) continue;
      const float* b = a.base + r * a.vocab;
      const RowStats bs = row_stats(b, a.vocab);
      a.base_nll[r] = bs.max + bs.lse - b[t];
      double kl = 0;
      for (int64_t i = 0; i < a.vocab; ++i) {
        const double lb = static_cast<double>(b[i]) - bs.max - bs.lse;
        const double lm = static_cast<double>(x[i]) - m.max - m.lse;
        kl += std::exp(lb) * (lb - lm);
      }
      a.kl[r] = kl > 0 ? kl : 0;
      a.same_top[r] = m.argmax == bs.argmax ? 1 : 0;
    }
  }, a.threads);
  return Status::Ok();
}

}  // namespace model
}  // namespace st
