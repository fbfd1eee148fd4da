// The host side of the lowrank room's CUDA path (see lowrank_cuda.h): the
// GEMM's copies, and the SVD by cuSOLVER with its buffers, limits and
// fallback.
//
// The SVD works on a tall column-major operand T (R x C, R >= C): Xᵀ when
// n >= m (the row-major memory as it is), else X (transposed on the
// device). Its buffers, the same for every routine:
//   T  R x C (lda R)   destroyed by every routine
//   S  C               the singular values
//   U  R x C (ldu R)   gesvdj (econ) and gesvd ('S') write min(m,n) = C
//                      columns, and Xgesvdr's jobu 'S' is documented the
//                      same way: never fewer columns, whatever k is
//   V  C x C (ldv C)   V for gesvdj and Xgesvdr, Vᵀ for gesvd
// Xgesvdr is documented for k < min(m,n) and k + p < min(m,n): p is
// clamped to C − k − 1, and a k >= C (a forced randomized method with a
// rank that large) runs the exact SVD instead, which gives every value.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "lowrank_cuda.h"

namespace st {

namespace {

// A cuSOLVER handle working on the call's stream, and the parameter
// objects of one SVD. Destroyed only after the stream has drained.
struct Solver {
  gpu::DeviceCall& call;
  const cusolver::Api& api;
  cusolver::Handle h = nullptr;
  cusolver::GesvdjInfo jacobi = nullptr;
  cusolver::Params params = nullptr;
  Solver(gpu::DeviceCall& c, const cusolver::Api& a) : call(c), api(a) {}
  Solver(const Solver&) = delete;
  Solver& operator=(const Solver&) = delete;
  ~Solver() {
    call.drain();
    if (jacobi) api.destroy_gesvdj_info(jacobi);
    if (params) api.destroy_params(params);
    if (h) api.destroy(h);
  }
  Status begin() {
    if (int e = api.create(&h)) {
      h = nullptr;
      return call.solver_failed("cusolverDnCreate", e);
    }
    if (int e = api.set_stream(h, call.stream())) return call.solver_failed("cusolverDnSetStream", e);
    return Status::Ok();
  }
};

// What the device SVD leaves for the factor products.
struct DeviceSvd {
  std::vector<float> sigma;       // kk values, descending
  int64_t kk = 0;
  bool exact = true;
  int64_t samples = 0;            // Xgesvdr: k + p
  DeviceVectors left, right;      // of X: m x kk and n x kk
};

Status read_info(gpu::DeviceCall& call, const int* dev_info, int* info) {
  ST_TRY(call.to_host(info, dev_info, sizeof(int)));
  return call.sync();
}

Status device_svd(gpu::DeviceCall& call, const cusolver::Api& api, const LowrankLaunch& launch, const MatrixView& x,
                  bool exact, int64_t k, int64_t oversample, int64_t iters, DeviceSvd* out) {
  const int64_t m = x.rows, n = x.cols;
  const bool t_is_xt = n >= m;
  const int64_t R = t_is_xt ? n : m, C = t_is_xt ? m : n;
  const bool randomized = !exact && k < C;
  if (!randomized && R > INT_MAX) {
    // gesvdj and gesvd take int dimensions.
    return Status::Error(Code::Unsupported, "cuSOLVER's exact SVD takes at most " + std::to_string(INT_MAX) + " rows; the matrix has " +
                                                std::to_string(R));
  }
  const size_t mn = static_cast<size_t>(m) * static_cast<size_t>(n);
  void* raw = nullptr;
  float *t = nullptr, *s = nullptr, *u = nullptr, *v = nullptr;
  int* info = nullptr;
  ST_TRY(call.alloc(mn * dtype_size(x.dtype), &raw));
  ST_TRY(call.alloc(mn, &t));
  ST_TRY(call.alloc(static_cast<size_t>(C), &s));
  ST_TRY(call.alloc(static_cast<size_t>(R) * static_cast<size_t>(C), &u));
  ST_TRY(call.alloc(static_cast<size_t>(C) * static_cast<size_t>(C), &v));
  ST_TRY(call.alloc(1, &info));
  ST_TRY(call.to_device(raw, x.data, mn * dtype_size(x.dtype)));
  // T from the stored input; again before a second routine (each destroys T).
  auto make_t = [&]() {
    launch.to_f32(raw, x.dtype, R, C, !t_is_xt, t, call.stream());
    return call.launched("to_f32_kernel");
  };
  ST_TRY(make_t());
  std::vector<char> hwork;  // Xgesvdr's host workspace: outlives the solver's drain
  Solver sv(call, api);
  ST_TRY(sv.begin());
  const int r32 = static_cast<int>(std::min<int64_t>(R, INT_MAX)), c32 = static_cast<int>(std::min<int64_t>(C, INT_MAX));
  DeviceVectors uvec{u, 1, R}, vvec{v, 1, C};  // column-major U and V
  int dev_info = 0;
  if (randomized) {
    const int64_t p = std::min(oversample, C - 1 - k);
    if (int e = api.create_params(&sv.params)) {
      sv.params = nullptr;
      return call.solver_failed("cusolverDnCreateParams", e);
    }
    size_t dbytes = 0, hbytes = 0;
    const int f = cusolver::kR32F;
    if (int e = api.xgesvdr_buffer_size(sv.h, sv.params, 'S', 'S', R, C, k, p, iters, f, t, R, f, s, f, u, R, f, v, C, f, &dbytes,
                                        &hbytes)) {
      return call.solver_failed("cusolverDnXgesvdr_bufferSize", e);
    }
    void* dwork = nullptr;
    ST_TRY(call.alloc(dbytes, &dwork));
    hwork.assign(std::max<size_t>(hbytes, 1), 0);
    if (int e = api.xgesvdr(sv.h, sv.params, 'S', 'S', R, C, k, p, iters, f, t, R, f, s, f, u, R, f, v, C, f, dwork, dbytes,
                            hwork.data(), hbytes, info)) {
      return call.solver_failed("cusolverDnXgesvdr", e);
    }
    ST_TRY(read_info(call, info, &dev_info));
    ST_TRY(call.release(dwork));
    if (dev_info != 0) {
      return Status::Error(Code::Internal, "cuSOLVER: Xgesvdr reported info = " + std::to_string(dev_info) +
                                               (dev_info < 0 ? " (parameter " + std::to_string(-dev_info) + " is wrong)" : ""));
    }
    out->kk = k;
    out->exact = false;
    out->samples = k + p;
  } else {
    if (int e = api.create_gesvdj_info(&sv.jacobi)) {
      sv.jacobi = nullptr;
      return call.solver_failed("cusolverDnCreateGesvdjInfo", e);
    }
    if (int e = api.gesvdj_set_tolerance(sv.jacobi, gesvdj_tolerance(R))) return call.solver_failed("cusolverDnXgesvdjSetTolerance", e);
    if (int e = api.gesvdj_set_max_sweeps(sv.jacobi, kGesvdjMaxSweeps)) return call.solver_failed("cusolverDnXgesvdjSetMaxSweeps", e);
    int lwork = 0;
    if (int e = api.sgesvdj_buffer_size(sv.h, cusolver::kEigModeVector, 1, r32, c32, t, r32, s, u, r32, v, c32, &lwork, sv.jacobi)) {
      return call.solver_failed("cusolverDnSgesvdj_bufferSize", e);
    }
    float* work = nullptr;
    ST_TRY(call.alloc(static_cast<size_t>(std::max(lwork, 0)), &work));
    if (int e = api.sgesvdj(sv.h, cusolver::kEigModeVector, 1, r32, c32, t, r32, s, u, r32, v, c32, work, lwork, info, sv.jacobi)) {
      return call.solver_failed("cusolverDnSgesvdj", e);
    }
    ST_TRY(read_info(call, info, &dev_info));
    ST_TRY(call.release(work));
    if (dev_info < 0) {
      return Status::Error(Code::Internal, "cuSOLVER: gesvdj reported info = " + std::to_string(dev_info) + " (parameter " +
                                               std::to_string(-dev_info) + " is wrong)");
    }
    if (dev_info > 0) {
      // Not converged within kGesvdjMaxSweeps (info = min(m,n) + 1): the
      // QR-based SVD, on a fresh T. V then holds Vᵀ.
      ST_TRY(make_t());
      if (int e = api.sgesvd_buffer_size(sv.h, r32, c32, &lwork)) return call.solver_failed("cusolverDnSgesvd_bufferSize", e);
      float* rwork = nullptr;
      ST_TRY(call.alloc(static_cast<size_t>(std::max(lwork, 0)), &work));
      ST_TRY(call.alloc(static_cast<size_t>(C), &rwork));
      if (int e = api.sgesvd(sv.h, 'S', 'S', r32, c32, t, r32, s, u, r32, v, c32, work, lwork, rwork, info)) {
        return call.solver_failed("cusolverDnSgesvd", e);
      }
      ST_TRY(read_info(call, info, &dev_info));
      ST_TRY(call.release(work));
      ST_TRY(call.release(rwork));
      if (dev_info != 0) {
        return Status::Error(Code::Internal, "cuSOLVER: gesvdj did not converge in " + std::to_string(kGesvdjMaxSweeps) +
                                                 " sweeps and gesvd reported info = " + std::to_string(dev_info) +
                                                 (dev_info > 0 ? " (superdiagonals that did not converge)" : " (a wrong parameter)"));
      }
      vvec = DeviceVectors{v, C, 1};
    }
    out->kk = C;
    out->exact = true;
    out->samples = 0;
  }
  out->sigma.assign(static_cast<size_t>(out->kk), 0.0f);
  ST_TRY(call.to_host(out->sigma.data(), s, static_cast<size_t>(out->kk) * sizeof(float)));
  ST_TRY(call.sync());
  // T = Xᵀ: X = V_T·Σ·U_Tᵀ (left = V_T, right = U_T); T = X: left = U_T, right = V_T.
  out->left = t_is_xt ? vvec : uvec;
  out->right = t_is_xt ? uvec : vvec;
  return Status::Ok();
}

// left (m x r) and right (r x n), row-major, from the device vectors
// scaled by `scale` (r values).
Status form_factors(gpu::DeviceCall& call, const LowrankLaunch& launch, const DeviceSvd& d, int64_t m, int64_t n, int64_t r,
                    const std::vector<float>& scale, std::vector<float>* left, std::vector<float>* right) {
  left->assign(static_cast<size_t>(m * r), 0.0f);
  right->assign(static_cast<size_t>(r * n), 0.0f);
  if (r == 0) return Status::Ok();
  float *sc = nullptr, *l = nullptr, *rr = nullptr;
  ST_TRY(call.alloc(static_cast<size_t>(r), &sc));
  ST_TRY(call.alloc(static_cast<size_t>(m * r), &l));
  ST_TRY(call.alloc(static_cast<size_t>(r * n), &rr));
  ST_TRY(call.to_device(sc, scale.data(), static_cast<size_t>(r) * sizeof(float)));
  launch.factor(d.left, m, r, sc, false, l, call.stream());
  launch.factor(d.right, n, r, sc, true, rr, call.stream());
  ST_TRY(call.launched("factor_kernel"));
  ST_TRY(call.to_host(left->data(), l, static_cast<size_t>(m * r) * sizeof(float)));
  ST_TRY(call.to_host(right->data(), rr, static_cast<size_t>(r * n) * sizeof(float)));
  return call.sync();
}

}  // namespace

Status gemm_on_device(const gpu::Runtime& rt, const LowrankLaunch& launch, const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return Status::Ok();
  const int64_t gy = (g.m + kGemmTile - 1) / kGemmTile, gx = (g.n + kGemmTile - 1) / kGemmTile;
  if (gy > kGemmMaxRowBlocks || gx > kGemmMaxColBlocks) {
    return Status::Error(Code::Unsupported, "the CUDA GEMM takes at most " + std::to_string(kGemmMaxRowBlocks * kGemmTile) +
                                                " rows of C; this one has " + std::to_string(g.m));
  }
  const int64_t ar = g.a.trans ? g.k : g.m, ac = g.a.trans ? g.m : g.k;
  const int64_t br = g.b.trans ? g.n : g.k, bc = g.b.trans ? g.k : g.n;
  const size_t abytes = static_cast<size_t>(ar == 0 ? 0 : (ar - 1) * g.a.ld + ac) * dtype_size(g.a.dtype);
  const size_t bbytes = static_cast<size_t>(br == 0 ? 0 : (br - 1) * g.b.ld + bc) * dtype_size(g.b.dtype);
  const size_t row = static_cast<size_t>(g.n) * sizeof(float), host_pitch = static_cast<size_t>(g.ldc) * sizeof(float);
  gpu::DeviceCall call(rt);
  ST_TRY(call.begin());
  void *a = nullptr, *b = nullptr;
  float* c = nullptr;
  ST_TRY(call.alloc(abytes, &a));
  ST_TRY(call.alloc(bbytes, &b));
  ST_TRY(call.alloc(static_cast<size_t>(g.m) * static_cast<size_t>(g.n), &c));
  ST_TRY(call.to_device(a, g.a.data, abytes));
  ST_TRY(call.to_device(b, g.b.data, bbytes));
  if (g.accumulate) ST_TRY(call.to_device_2d(c, row, g.c, host_pitch, row, static_cast<size_t>(g.m)));
  launch.gemm(GemmDev{g.m, g.n, g.k, a, g.a.dtype, g.a.ld, g.a.trans, b, g.b.dtype, g.b.ld, g.b.trans, c, g.n, g.accumulate},
              call.stream());
  ST_TRY(call.launched("gemm_kernel"));
  ST_TRY(call.to_host_2d(g.c, host_pitch, c, row, row, static_cast<size_t>(g.m)));
  return call.sync();
}

Status factor_on_device(const gpu::Runtime& rt, const cusolver::Api& api, const LowrankLaunch& launch, const CudaFactor& a,
                        CudaFactorResult* out) {
  DeviceSvd d;  // host memory the stream copies into: declared before the call that drains it
  gpu::DeviceCall call(rt);
  ST_TRY(call.begin());
  ST_TRY(device_svd(call, api, launch, a.x, a.exact, a.k, a.oversample, a.power_iters, &d));
  out->exact = d.exact;
  out->samples = d.samples;
  out->sigma.assign(d.sigma.begin(), d.sigma.end());
  const int64_t r = a.choose(out->sigma);
  if (r < 0) {
    out->retry = true;
    return Status::Ok();
  }
  out->rank = r;
  std::vector<float> scale(static_cast<size_t>(r));
  for (int64_t c = 0; c < r; ++c) scale[static_cast<size_t>(c)] = static_cast<float>(std::sqrt(out->sigma[static_cast<size_t>(c)]));
  return form_factors(call, launch, d, a.x.rows, a.x.cols, r, scale, &out->left, &out->right);
}

Status svd_on_device(const gpu::Runtime& rt, const cusolver::Api& api, const LowrankLaunch& launch, const MatrixView& a,
                     int64_t k, SvdResult* out) {
  DeviceSvd d;
  gpu::DeviceCall call(rt);
  ST_TRY(call.begin());
  ST_TRY(device_svd(call, api, launch, a, true, 0, 0, 0, &d));
  out->k = k;
  out->cuda = true;
  out->s.assign(d.sigma.begin(), d.sigma.begin() + k);
  return form_factors(call, launch, d, a.rows, a.cols, k, std::vector<float>(static_cast<size_t>(k), 1.0f), &out->u, &out->vt);
}

}  // namespace st
