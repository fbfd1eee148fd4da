// CUDA kernels of the distill room. One row per block of 256 threads, or
// one row per warp when rows are short (<= 2048 logits: a block holds 8
// rows), running the sweeps of the scalar reference (distill_ref.cc) over
// the same __host__ __device__ arithmetic (distill_math.h): each thread
// takes every TPR-th logit, partial maxima / log-sum-exps / loss sums are
// merged by warp shuffles (and shared memory across the warps of a block)
// in a fixed order. The results match the CPU within the tolerance of a
// different summation order, not bit for bit.
//
// The host side (distill_device.cc, plain C++ the native tests run on a
// fake device) moves chunks of rows to the device (inputs; then the per-row
// errors and losses back, then the gradients of the rows before the first
// failing one), so device memory is bounded whatever N is. The device reads
// its own copy of the student, so in place on the host needs nothing
// special; the label and top-k values are written after the dense sweep,
// behind a barrier.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "../cuda.h"
#include "distill_cuda.h"

namespace st {

namespace {

constexpr int kBlock = 256;
constexpr int64_t kWarpRowMax = 2048;                // rows up to this long: one warp each

// ---- reductions over the TPR threads of a row --------------------------------
// TPR == 32: one warp, xor shuffles (every lane gets the result).
// TPR == kBlock: warps first, then the 8 warp results in order through
// shared memory; every thread gets the result.

template <int TPR>
__device__ double sum_all(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (TPR == 32) return v;
  __shared__ double sh[kBlock / 32];
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  double r = sh[0];
  for (int w = 1; w < kBlock / 32; ++w) r += sh[w];
  return r;
}

template <int TPR>
__device__ bool all_true(bool v) {
  if (TPR == 32) return __all_sync(0xffffffffu, v) != 0;
  return __syncthreads_and(v ? 1 : 0) != 0;
}

template <int TPR>
__device__ dm::Lse lse_all(dm::Lse a, float inv_t) {
  for (int o = 16; o > 0; o >>= 1) {
    dm::Lse b;
    b.m = __shfl_xor_sync(0xffffffffu, a.m, o);
    b.s = __shfl_xor_sync(0xffffffffu, a.s, o);
    // Lanes combine in lane order so every lane computes the same value.
    a = (threadIdx.x & o) ? dm::lse_merge(b, a, inv_t) : dm::lse_merge(a, b, inv_t);
  }
  if (TPR == 32) return a;
  __shared__ float shm[kBlock / 32];
  __shared__ double shs[kBlock / 32];
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    shm[threadIdx.x >> 5] = a.m;
    shs[threadIdx.x >> 5] = a.s;
  }
  __syncthreads();
  dm::Lse r = {shm[0], shs[0]};
  for (int w = 1; w < kBlock / 32; ++w) r = dm::lse_merge(r, dm::Lse{shm[w], shs[w]}, inv_t);
  return r;
}

template <int TPR>
__device__ void row_barrier() {
  if (TPR == 32) __syncwarp();
  else __syncthreads();
}

// ---- the row kernel -----------------------------------------------------------

template <int TPR>
__global__ void distill_kernel(DistillChunk c) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kBlock / TPR) + threadIdx.x / TPR;
  const int lane = static_cast<int>(threadIdx.x % TPR);
  if (row >= c.rows) return;  // whole warps (TPR 32) or never (TPR 256: one row per block)
  const DistillPlan& p = c.p;
  const dm::Coeffs& cf = p.c;
  const int64_t cols = c.cols, base = row * cols;
  const bool dense = p.kd && !p.topk;

  if (c.labels && c.labels[row] == c.ignore) {
    if (p.grad) for (int64_t j = lane; j < cols; j += TPR) dm::store_grad(c.grad, c.zt, base + j, 0.0f);
    if (lane == 0) {
      c.loss[row] = 0;
      c.err[row] = static_cast<int32_t>(RowError::Ok);
    }
    return;
  }

  // Sweep 1.
  dm::Lse u = dm::lse_init(), z1 = dm::lse_init(), t = dm::lse_init();
  bool ok = true;
  for (int64_t j = lane; j < cols; j += TPR) {
    const float z = dm::load_logit(c.z, c.zt, base + j);
    ok = ok && dm::student_ok(z);
    dm::lse_push(u, z, cf.inv_t);
    if (p.ce && !p.t1) dm::lse_push(z1, z, 1.0f);
    if (dense) {
      const float tv = dm::load_logit(c.t, c.tt, base + j);
      ok = ok && dm::teacher_ok(tv);
      dm::lse_push(t, tv, cf.inv_t);
    }
  }
  ok = all_true<TPR>(ok);
  u = lse_all<TPR>(u, cf.inv_t);
  if (p.ce && !p.t1) z1 = lse_all<TPR>(z1, 1.0f);
  if (dense) t = lse_all<TPR>(t, cf.inv_t);
  RowError error = RowError::Ok;
  if (!ok) error = RowError::NonFinite;
  else if (dense && !(t.m > dm::neg_inf())) error = RowError::NoTeacher;
  dm::RowStats rs;
  rs.mz = u.m;
  rs.lsu = dm::log_sum(u.s);
  rs.lsz = p.t1 ? rs.lsu : p.ce ? dm::log_sum(z1.s) : 0.0f;
  rs.mt = dense ? t.m : 0.0f;
  rs.lst = dense && error == RowError::Ok ? dm::log_sum(t.s) : 0.0f;

  double d = 0;
  float kl = 0;
  float* topk_p = nullptr;
  if (error == RowError::Ok && p.kd && p.topk) {
    // The top-k distribution, spread over the row's threads.
    const float* lp = c.lp + row * c.k;
    const int32_t* idx = c.idx + row * c.k;
    topk_p = c.topk_p + row * c.k;
    dm::Lse l = dm::lse_init();
    bool lok = true;
    for (int64_t i = lane; i < c.k; i += TPR) {
      lok = lok && dm::teacher_ok(lp[i]);
      dm::lse_push(l, lp[i], cf.inv_t);
    }
    lok = all_true<TPR>(lok);
    l = lse_all<TPR>(l, cf.inv_t);
    if (!lok) error = RowError::NonFinite;
    else if (!(l.m > dm::neg_inf())) error = RowError::NoTeacher;
    const float ls = error == RowError::Ok ? dm::log_sum(l.s) : 0.0f;
    double part = 0;
    for (int64_t i = lane; i < c.k && error == RowError::Ok; i += TPR) {
      const float lpi = dm::floor_log((lp[i] - l.m) * cf.inv_t) - ls;
      const float pi = dm::exp32(lpi);
      topk_p[i] = pi;
      part += dm::kl_term(pi, lpi, dm::log_q(rs, cf, dm::load_logit(c.z, c.zt, base + idx[i])));
    }
    d = sum_all<TPR>(part);
  } else if (error == RowError::Ok && dense && p.div != Divergence::ForwardKL) {
    double kpm = 0, kqm = 0;
    for (int64_t j = lane; j < cols; j += TPR) {
      const float lq = dm::log_q(rs, cf, dm::load_logit(c.z, c.zt, base + j));
      const float lp = dm::log_p(rs, cf, dm::load_logit(c.t, c.tt, base + j));
      const float q = dm::exp32(lq);
      if (p.div == Divergence::ReverseKL) {
        kqm += dm::kl_term(q, lq, lp);
      } else {
        const float lm = dm::log_m(cf, lp, lq);
        kpm += dm::kl_term(dm::exp32(lp), lp, lm);
        kqm += dm::kl_term(q, lq, lm);
      }
    }
    kqm = sum_all<TPR>(kqm);
    if (p.div == Divergence::JSD) kpm = sum_all<TPR>(kpm);
    kl = static_cast<float>(kqm);
    d = p.div == Divergence::ReverseKL ? kqm : static_cast<double>(c.beta) * kpm + (1.0 - c.beta) * kqm;
  }
  if (error != RowError::Ok) {
    if (lane == 0) {
      c.loss[row] = 0;
      c.err[row] = static_cast<int32_t>(error);
    }
    return;
  }

  // Sweep 2: the dense gradient, forward-kl's divergence.
  const bool forward_dense = dense && p.div == Divergence::ForwardKL;
  if (p.grad || forward_dense) {
    double dfw = 0;
    for (int64_t j = lane; j < cols; j += TPR) {
      const float z = dm::load_logit(c.z, c.zt, base + j);
      const float lq = dm::log_q(rs, cf, z);
      const float q = dm::exp32(lq);
      const float s = !p.ce ? 0.0f : p.t1 ? q : dm::exp32(dm::log_s(rs, z));
      float g;
      if (!dense) {
        g = dm::grad_forward(cf, q, 0.0f, s, 0.0f);
      } else {
        const float lp = dm::log_p(rs, cf, dm::load_logit(c.t, c.tt, base + j));
        if (p.div == Divergence::ForwardKL) {
          const float pj = dm::exp32(lp);
          dfw += dm::kl_term(pj, lp, lq);
          g = dm::grad_forward(cf, q, pj, s, 0.0f);
        } else if (p.div == Divergence::ReverseKL) {
          g = dm::grad_reverse(cf, q, lq, lp, kl, s, 0.0f);
        } else {
          g = dm::grad_jsd(cf, q, lq, dm::log_m(cf, lp, lq), kl, s, 0.0f);
        }
      }
      if (p.grad) dm::store_grad(c.grad, c.zt, base + j, g);
    }
    if (forward_dense) d = sum_all<TPR>(dfw);
  }

  // The label and top-k values, over the dense ones.
  if (p.grad) {
    row_barrier<TPR>();
    const int64_t y = c.labels ? c.labels[row] : -1;
    bool label_done = !p.ce || y < 0;
    if (p.kd && p.topk) {
      const int32_t* idx = c.idx + row * c.k;
      for (int64_t i = 0; i < c.k; ++i) label_done = label_done || idx[i] == y;
      for (int64_t i = lane; i < c.k; i += TPR) {
        const float z = dm::load_logit(c.z, c.zt, base + idx[i]);
        const float g = dm::grad_element(cf, rs, p.term, p.ce, p.t1, z, 0.0f, topk_p[i], kl, idx[i] == y && p.ce ? 1.0f : 0.0f);
        dm::store_grad(c.grad, c.zt, base + idx[i], g);
      }
    }
    if (!label_done && lane == 0) {
      const float z = dm::load_logit(c.z, c.zt, base + y);
      const float tv = p.term == dm::TeacherTerm::Given ? 0.0f : dm::load_logit(c.t, c.tt, base + y);
      dm::store_grad(c.grad, c.zt, base + y, dm::grad_element(cf, rs, p.term, p.ce, p.t1, z, tv, 0.0f, kl, 1.0f));
    }
  }

  if (lane == 0) {
    double ce = 0;
    if (p.ce) ce = static_cast<double>(rs.lsz) - static_cast<double>(dm::load_logit(c.z, c.zt, base + c.labels[row]) - rs.mz);
    const double loss = (p.kd ? p.kd_weight * d : 0.0) + (p.ce ? p.ce_weight * ce : 0.0);
    c.loss[row] = loss;
    c.err[row] = static_cast<int32_t>(isfinite(loss) ? RowError::Ok : RowError::Overflow);
  }
}

// ---- host side (distill_device.cc) ---------------------------------------------

void launch_distill(const DistillChunk& c, gpu::Stream s) {
  if (c.cols <= kWarpRowMax) {
    const int64_t per_block = kBlock / 32;
    distill_kernel<32><<<static_cast<unsigned int>((c.rows + per_block - 1) / per_block), kBlock, 0, s>>>(c);
  } else {
    distill_kernel<kBlock><<<static_cast<unsigned int>(c.rows), kBlock, 0, s>>>(c);
  }
}

}  // namespace

Status cuda_distill_rows(const DistillArgs& a, const DistillPlan& p, RowOut* out) {
  ST_TRY(gpu::device_ready());
  return distill_rows_on_device(gpu::cuda_runtime(), launch_distill, a, p, out);
}

}  // namespace st
