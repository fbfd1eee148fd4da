// cuSOLVER, loaded at run time (DESIGN.md): dlopen of libcusolver and dlsym
// of the handful of entry points the lowrank room calls, declared here from
// cuSOLVER's documented C API. Building needs no cuSOLVER headers or
// libraries, and a machine without them still loads the addon: the loader
// then reports why (backends().cuda.cusolver.reason).
//
// Only the CUDA build compiles this file (CMakeLists.txt); handles and
// enums are opaque pointers and ints with the documented values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "../device.h"

namespace st {
namespace cusolver {

using Handle = struct cusolverDnContext*;
using GesvdjInfo = struct gesvdjInfo*;
using Params = struct cusolverDnParams*;
using Stream = gpu::Stream;
using Status = int;                    // cusolverStatus_t: 0 is CUSOLVER_STATUS_SUCCESS
constexpr int kEigModeVector = 1;      // CUSOLVER_EIG_MODE_VECTOR
constexpr int kR32F = 0;               // cudaDataType CUDA_R_32F

struct Api {
  Status (*create)(Handle*);
  Status (*destroy)(Handle);
  Status (*set_stream)(Handle, Stream);
  Status (*create_gesvdj_info)(GesvdjInfo*);
  Status (*destroy_gesvdj_info)(GesvdjInfo);
  Status (*gesvdj_set_tolerance)(GesvdjInfo, double);
  Status (*gesvdj_set_max_sweeps)(GesvdjInfo, int);
  Status (*sgesvdj_buffer_size)(Handle, int jobz, int econ, int m, int n, const float* a, int lda, const float* s,
                                const float* u, int ldu, const float* v, int ldv, int* lwork, GesvdjInfo info);
  Status (*sgesvdj)(Handle, int jobz, int econ, int m, int n, float* a, int lda, float* s, float* u, int ldu, float* v,
                    int ldv, float* work, int lwork, int* dev_info, GesvdjInfo info);
  // The QR-based SVD (jobu/jobvt 'S': U m x min(m,n), Vᵀ min(m,n) x n;
  // needs m >= n): the fallback when gesvdj does not converge. rwork holds
  // min(m,n) − 1 floats.
  Status (*sgesvd_buffer_size)(Handle, int m, int n, int* lwork);
  Status (*sgesvd)(Handle, signed char jobu, signed char jobvt, int m, int n, float* a, int lda, float* s, float* u, int ldu,
                   float* vt, int ldvt, float* work, int lwork, float* rwork, int* dev_info);
  Status (*create_params)(Params*);
  Status (*destroy_params)(Params);
  Status (*xgesvdr_buffer_size)(Handle, Params, signed char jobu, signed char jobv, int64_t m, int64_t n, int64_t k,
                                int64_t p, int64_t niters, int type_a, const void* a, int64_t lda, int type_s,
                                const void* s, int type_u, const void* u, int64_t ldu, int type_v, const void* v,
                                int64_t ldv, int compute_type, size_t* device_bytes, size_t* host_bytes);
  Status (*xgesvdr)(Handle, Params, signed char jobu, signed char jobv, int64_t m, int64_t n, int64_t k, int64_t p,
                    int64_t niters, int type_a, void* a, int64_t lda, int type_s, void* s, int type_u, void* u,
                    int64_t ldu, int type_v, void* v, int64_t ldv, int compute_type, void* device_buf,
                    size_t device_bytes, void* host_buf, size_t host_bytes, int* dev_info);
};

// The loaded API (loaded once, on first call), or null with *why set.
// SLIMTENSOR_CUSOLVER names a library file to try first; then
// libcusolver.so.12, libcusolver.so.11, libcusolver.so.
const Api* api(std::string* why, std::string* library);

}  // namespace cusolver
}  // namespace st
