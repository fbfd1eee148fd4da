// CUDA side of the lowrank room (see lowrank_cuda.h).
//
//   cuda_gemm:    one thread per C element running the fma chain of gemm.h
//                 in k order through 16x16 shared-memory tiles: the same
//                 bits as the CPU kernels. f16/bf16 converted on load with
//                 numeric.h's __host__ __device__ functions.
//   cuda_factor / cuda_svd: cuSOLVER (loaded with dlopen, cusolver_loader.h)
//                 gesvdj for the exact SVD, Xgesvdr for the randomized one,
//                 on a tall column-major view of the matrix; the factors
//                 L = U·Σ^½ and R = Σ^½·Vᵀ (row-major, as the CPU returns
//                 them) are formed by a CUDA kernel from cuSOLVER's
//                 column-major vectors.
// Inputs are uploaded as stored (f32/f16/bf16) and converted on the device.
// Device memory: the matrix twice (input and f32 working copy) plus the
// singular vectors. cuSOLVER has no seed parameter: the randomized sketch
// on the GPU is cuSOLVER's own, so `seed` applies to the CPU path only.
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "../cuda.h"
#include "../numeric.h"
#include "cusolver_loader.h"
#include "lowrank_cuda.h"

namespace st {

namespace {

constexpr int kTile = 16;
constexpr int kThreads = 256;

std::string cuda_error(const char* call, cudaError_t e) {
  return std::string(call) + " failed: " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")";
}

// Owns one device allocation.
struct DevBuf {
  void* p = nullptr;
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  cudaError_t alloc(size_t bytes) { return cudaMalloc(&p, bytes == 0 ? 1 : bytes); }
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

#define ST_CUDA_TRY(call)                                                  \
  do {                                                                     \
    cudaError_t e_ = (call);                                               \
    if (e_ != cudaSuccess) {                                               \
      (void)cudaGetLastError();                                            \
      return Status::Error(Code::Internal, cuda_error(#call, e_));         \
    }                                                                      \
  } while (0)

__device__ float load_elem(const void* p, DType t, int64_t i) {
  if (t == DType::F32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

struct GemmDev {
  int64_t m, n, k;
  const void* a;
  DType at;
  int64_t lda;
  bool ta;
  const void* b;
  DType bt;
  int64_t ldb;
  bool tb;
  float* c;
  int64_t ldc;
  bool accumulate;
};

__global__ void gemm_kernel(GemmDev g) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kTile + ty;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTile + tx;
  float acc = (g.accumulate && row < g.m && col < g.n) ? g.c[row * g.ldc + col] : 0.0f;
  for (int64_t p0 = 0; p0 < g.k; p0 += kTile) {
    const int64_t ap = p0 + tx, bp = p0 + ty;
    as[ty][tx] = (row < g.m && ap < g.k) ? load_elem(g.a, g.at, g.ta ? ap * g.lda + row : row * g.lda + ap) : 0.0f;
    bs[ty][tx] = (bp < g.k && col < g.n) ? load_elem(g.b, g.bt, g.tb ? col * g.ldb + bp : bp * g.ldb + col) : 0.0f;
    __syncthreads();
    const int64_t steps = g.k - p0 < kTile ? g.k - p0 : kTile;
    for (int q = 0; q < steps; ++q) acc = fmaf(as[ty][q], bs[q][tx], acc);  // the chain, in k order
    __syncthreads();
  }
  if (row < g.m && col < g.n) g.c[row * g.ldc + col] = acc;
}

// dst (rows x cols, column-major, f32) from the row-major source: either
// the same memory read as f32 (transpose false: dst[i] = src[i]) or its
// transpose (dst[r + c*rows] = src[r*cols + c]).
__global__ void to_f32_kernel(const void* src, DType t, int64_t rows, int64_t cols, bool transpose, float* dst) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!transpose) {
      dst[i] = load_elem(src, t, i);
    } else {
      const int64_t r = i % rows, c = i / rows;
      dst[i] = load_elem(src, t, r * cols + c);
    }
  }
}

// Column c of the column-major src (len x r, leading dimension ld) times
// scale[c], written row-major: as rows of dst (dst[c*len + j], for R) or
// as columns (dst[j*r + c], for L).
__global__ void factor_kernel(const float* src, int64_t ld, int64_t len, int64_t r, const float* scale, bool as_rows,
                              float* dst) {
  const int64_t total = len * r;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % len, c = i / len;
    const float v = src[j + c * ld] * scale[c];
    if (as_rows) dst[c * len + j] = v;
    else dst[j * r + c] = v;
  }
}

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

Status ready(const cusolver::Api** api) {
  std::string why;
  if (!cusolver_available(&why, nullptr)) return Status::Error(Code::Unsupported, why);
  *api = cusolver::api(nullptr, nullptr);
  return Status::Ok();
}

std::string solver_error(const char* call, int status) {
  return std::string(call) + " failed with cusolverStatus " + std::to_string(status);
}

// SVD of X (host, m x n) on the device. The tall operand T (R x C, R >= C,
// column-major) is Xᵀ when n >= m (the row-major memory as it is) and X
// otherwise (transposed on the device). On return: sigma (kk values),
// lsrc/rsrc the left/right singular vectors of X as column-major m x kk
// and n x kk with leading dimensions ldl/ldr (pointers into u/v).
struct DeviceSvd {
  DevBuf u, v;
  std::vector<float> sigma;
  int64_t kk = 0;
  const float* lsrc = nullptr;
  const float* rsrc = nullptr;
  int64_t ldl = 0, ldr = 0;
};

Status device_svd(const MatrixView& x, bool exact, int64_t k, int64_t oversample, int64_t iters, DeviceSvd* out) {
  const cusolver::Api* api = nullptr;
  Status st = ready(&api);
  if (!st.ok()) return st;
  const int64_t m = x.rows, n = x.cols;
  const bool t_is_xt = n >= m;
  const int64_t R = t_is_xt ? n : m, C = t_is_xt ? m : n;
  const size_t esize = dtype_size(x.dtype);
  DevBuf raw, t, s, info;
  ST_CUDA_TRY(raw.alloc(static_cast<size_t>(m * n) * esize));
  ST_CUDA_TRY(cudaMemcpy(raw.p, x.data, static_cast<size_t>(m * n) * esize, cudaMemcpyHostToDevice));
  ST_CUDA_TRY(t.alloc(static_cast<size_t>(m * n) * sizeof(float)));
  to_f32_kernel<<<blocks_for(m * n), kThreads>>>(raw.p, x.dtype, R, C, !t_is_xt, t.as<float>());
  ST_CUDA_TRY(cudaGetLastError());
  ST_CUDA_TRY(s.alloc(static_cast<size_t>(C) * sizeof(float)));
  ST_CUDA_TRY(info.alloc(sizeof(int)));
  cusolver::Handle h = nullptr;
  if (int e = api->create(&h)) return Status::Error(Code::Internal, solver_error("cusolverDnCreate", e));
  struct HandleGuard {
    const cusolver::Api* api;
    cusolver::Handle h;
    ~HandleGuard() { api->destroy(h); }
  } guard{api, h};
  int dev_info = 0;
  if (exact) {
    out->kk = C;
    ST_CUDA_TRY(out->u.alloc(static_cast<size_t>(R * C) * sizeof(float)));
    ST_CUDA_TRY(out->v.alloc(static_cast<size_t>(C * C) * sizeof(float)));
    cusolver::GesvdjInfo params = nullptr;
    if (int e = api->create_gesvdj_info(&params)) return Status::Error(Code::Internal, solver_error("cusolverDnCreateGesvdjInfo", e));
    struct InfoGuard {
      const cusolver::Api* api;
      cusolver::GesvdjInfo p;
      ~InfoGuard() { api->destroy_gesvdj_info(p); }
    } pguard{api, params};
    int lwork = 0;
    if (int e = api->sgesvdj_buffer_size(h, cusolver::kEigModeVector, 1, static_cast<int>(R), static_cast<int>(C), t.as<float>(),
                                         static_cast<int>(R), s.as<float>(), out->u.as<float>(), static_cast<int>(R),
                                         out->v.as<float>(), static_cast<int>(C), &lwork, params)) {
      return Status::Error(Code::Internal, solver_error("cusolverDnSgesvdj_bufferSize", e));
    }
    DevBuf work;
    ST_CUDA_TRY(work.alloc(static_cast<size_t>(lwork) * sizeof(float)));
    if (int e = api->sgesvdj(h, cusolver::kEigModeVector, 1, static_cast<int>(R), static_cast<int>(C), t.as<float>(), static_cast<int>(R),
                             s.as<float>(), out->u.as<float>(), static_cast<int>(R), out->v.as<float>(), static_cast<int>(C),
                             work.as<float>(), lwork, info.as<int>(), params)) {
      return Status::Error(Code::Internal, solver_error("cusolverDnSgesvdj", e));
    }
  } else {
    out->kk = k;
    const int64_t p = oversample < C - k ? oversample : C - k;
    ST_CUDA_TRY(out->u.alloc(static_cast<size_t>(R * k) * sizeof(float)));
    ST_CUDA_TRY(out->v.alloc(static_cast<size_t>(C * k) * sizeof(float)));
    cusolver::Params params = nullptr;
    if (int e = api->create_params(&params)) return Status::Error(Code::Internal, solver_error("cusolverDnCreateParams", e));
    struct ParamsGuard {
      const cusolver::Api* api;
      cusolver::Params p;
      ~ParamsGuard() { api->destroy_params(p); }
    } pguard{api, params};
    size_t dbytes = 0, hbytes = 0;
    const int f = cusolver::kR32F;
    if (int e = api->xgesvdr_buffer_size(h, params, 'S', 'S', R, C, k, p, iters, f, t.p, R, f, s.p, f, out->u.p, R, f, out->v.p, C, f,
                                         &dbytes, &hbytes)) {
      return Status::Error(Code::Internal, solver_error("cusolverDnXgesvdr_bufferSize", e));
    }
    DevBuf dwork;
    ST_CUDA_TRY(dwork.alloc(dbytes));
    std::vector<char> hwork(hbytes == 0 ? 1 : hbytes);
    if (int e = api->xgesvdr(h, params, 'S', 'S', R, C, k, p, iters, f, t.p, R, f, s.p, f, out->u.p, R, f, out->v.p, C, f, dwork.p,
                             dbytes, hwork.data(), hbytes, info.as<int>())) {
      return Status::Error(Code::Internal, solver_error("cusolverDnXgesvdr", e));
    }
  }
  ST_CUDA_TRY(cudaMemcpy(&dev_info, info.p, sizeof(int), cudaMemcpyDeviceToHost));
  if (dev_info != 0) {
    return Status::Error(Code::Internal, std::string(exact ? "gesvdj" : "Xgesvdr") + " reported info = " + std::to_string(dev_info) +
                                             (dev_info > 0 ? " (no convergence)" : " (a bad parameter)"));
  }
  out->sigma.assign(static_cast<size_t>(out->kk), 0.0f);
  ST_CUDA_TRY(cudaMemcpy(out->sigma.data(), s.p, static_cast<size_t>(out->kk) * sizeof(float), cudaMemcpyDeviceToHost));
  // T = Xᵀ: X = V_T·Σ·U_Tᵀ (left = V_T, right = U_T); T = X: left = U_T, right = V_T.
  out->lsrc = t_is_xt ? out->v.as<float>() : out->u.as<float>();
  out->rsrc = t_is_xt ? out->u.as<float>() : out->v.as<float>();
  out->ldl = t_is_xt ? C : R;
  out->ldr = t_is_xt ? R : C;
  return Status::Ok();
}

// left (m x r) and right (r x n), row-major, from the device vectors
// scaled by `scale` (r values).
Status form_factors(const DeviceSvd& d, int64_t m, int64_t n, int64_t r, const std::vector<float>& scale,
                    std::vector<float>* left, std::vector<float>* right) {
  left->assign(static_cast<size_t>(m * r), 0.0f);
  right->assign(static_cast<size_t>(r * n), 0.0f);
  if (r == 0) return Status::Ok();
  DevBuf sc, l, rr;
  ST_CUDA_TRY(sc.alloc(static_cast<size_t>(r) * sizeof(float)));
  ST_CUDA_TRY(cudaMemcpy(sc.p, scale.data(), static_cast<size_t>(r) * sizeof(float), cudaMemcpyHostToDevice));
  ST_CUDA_TRY(l.alloc(static_cast<size_t>(m * r) * sizeof(float)));
  ST_CUDA_TRY(rr.alloc(static_cast<size_t>(r * n) * sizeof(float)));
  factor_kernel<<<blocks_for(m * r), kThreads>>>(d.lsrc, d.ldl, m, r, sc.as<float>(), false, l.as<float>());
  factor_kernel<<<blocks_for(n * r), kThreads>>>(d.rsrc, d.ldr, n, r, sc.as<float>(), true, rr.as<float>());
  ST_CUDA_TRY(cudaGetLastError());
  ST_CUDA_TRY(cudaMemcpy(left->data(), l.p, static_cast<size_t>(m * r) * sizeof(float), cudaMemcpyDeviceToHost));
  ST_CUDA_TRY(cudaMemcpy(right->data(), rr.p, static_cast<size_t>(r * n) * sizeof(float), cudaMemcpyDeviceToHost));
  return Status::Ok();
}

}  // namespace

bool cusolver_available(std::string* why, std::string* library) {
  std::string device_why, loader_why;
  const bool device = cuda_available(&device_why);
  const bool loaded = cusolver::api(&loader_why, library) != nullptr;
  if (device && loaded) return true;
  if (why) {
    if (!device && !loaded) *why = device_why + "; and " + loader_why;
    else *why = device ? loader_why : device_why;
  }
  return false;
}

Status cuda_gemm(const GemmArgs& g) {
  std::string why;
  if (!cuda_available(&why)) return Status::Error(Code::Unsupported, why);
  if (g.m == 0 || g.n == 0) return Status::Ok();
  const int64_t ar = g.a.trans ? g.k : g.m, ac = g.a.trans ? g.m : g.k;
  const int64_t br = g.b.trans ? g.n : g.k, bc = g.b.trans ? g.k : g.n;
  const size_t abytes = static_cast<size_t>(ar == 0 ? 0 : (ar - 1) * g.a.ld + ac) * dtype_size(g.a.dtype);
  const size_t bbytes = static_cast<size_t>(br == 0 ? 0 : (br - 1) * g.b.ld + bc) * dtype_size(g.b.dtype);
  const size_t cbytes = static_cast<size_t>((g.m - 1) * g.ldc + g.n) * sizeof(float);
  DevBuf a, b, c;
  ST_CUDA_TRY(a.alloc(abytes));
  ST_CUDA_TRY(b.alloc(bbytes));
  ST_CUDA_TRY(c.alloc(cbytes));
  if (abytes) ST_CUDA_TRY(cudaMemcpy(a.p, g.a.data, abytes, cudaMemcpyHostToDevice));
  if (bbytes) ST_CUDA_TRY(cudaMemcpy(b.p, g.b.data, bbytes, cudaMemcpyHostToDevice));
  if (g.accumulate) ST_CUDA_TRY(cudaMemcpy(c.p, g.c, cbytes, cudaMemcpyHostToDevice));
  GemmDev d{g.m, g.n, g.k, a.p, g.a.dtype, g.a.ld, g.a.trans, b.p, g.b.dtype, g.b.ld, g.b.trans, c.as<float>(), g.ldc, g.accumulate};
  const dim3 block(kTile, kTile);
  const int64_t gy = (g.m + kTile - 1) / kTile, gx = (g.n + kTile - 1) / kTile;
  if (gy > 65535 || gx > 2147483647) return Status::Error(Code::Unsupported, "matrix too large for the CUDA GEMM grid");
  gemm_kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), block>>>(d);
  ST_CUDA_TRY(cudaGetLastError());
  ST_CUDA_TRY(cudaMemcpy(g.c, c.p, cbytes, cudaMemcpyDeviceToHost));
  return Status::Ok();
}

Status cuda_factor(const CudaFactor& a, CudaFactorResult* out) {
  DeviceSvd d;
  Status st = device_svd(a.x, a.exact, a.k, a.oversample, a.power_iters, &d);
  if (!st.ok()) return st;
  out->sigma.assign(d.sigma.begin(), d.sigma.end());
  const int64_t r = a.choose(out->sigma);
  if (r < 0) {
    out->retry = true;
    return Status::Ok();
  }
  out->rank = r;
  std::vector<float> scale(static_cast<size_t>(r));
  for (int64_t c = 0; c < r; ++c) scale[c] = static_cast<float>(std::sqrt(out->sigma[c]));
  return form_factors(d, a.x.rows, a.x.cols, r, scale, &out->left, &out->right);
}

Status cuda_svd(const MatrixView& a, int64_t k, SvdResult* out) {
  DeviceSvd d;
  Status st = device_svd(a, true, 0, 0, 0, &d);
  if (!st.ok()) return st;
  out->k = k;
  out->cuda = true;
  out->s.assign(d.sigma.begin(), d.sigma.begin() + k);
  return form_factors(d, a.rows, a.cols, k, std::vector<float>(static_cast<size_t>(k), 1.0f), &out->u, &out->vt);
}

}  // namespace st
