// The CPU-only build's answer for every CUDA entry point: not compiled in.
#include "cuda.h"
#include "quant/quant_cuda.h"
#include "distill/distill_cuda.h"
#include "lowrank/lowrank_cuda.h"
#include "sparse/sparse_cuda.h"
#include "model/model_cuda.h"

namespace st {

namespace {
const char kNotBuilt[] = "this build has no CUDA kernels (build them with `npm run build:cuda` where nvcc is installed)";
}

bool cuda_compiled() { return false; }

bool cuda_available(std::string* why) {
  if (why) *why = kNotBuilt;
  return false;
}

Status cuda_quantize(const QuantizeArgs&) { return Status::Error(Code::Unsupported, kNotBuilt); }
Status cuda_dequantize(const DequantizeArgs&, void*, DType) { return Status::Error(Code::Unsupported, kNotBuilt); }
Status cuda_distill_rows(const DistillArgs&, const DistillPlan&, RowOut*) { return Status::Error(Code::Unsupported, kNotBuilt); }
Status cuda_gemm(const GemmArgs&) { return Status::Error(Code::Unsupported, kNotBuilt); }
bool cusolver_available(std::string* why, std::string* library) {
  if (why) *why = kNotBuilt;
  if (library) library->clear();
  return false;
}
Status cuda_factor(const CudaFactor&, CudaFactorResult*) { return Status::Error(Code::Unsupported, kNotBuilt); }
Status cuda_svd(const MatrixView&, int64_t, SvdResult*) { return Status::Error(Code::Unsupported, kNotBuilt); }
Status cuda_sparse_select(const SelectArgs&) { return Status::Error(Code::Unsupported, kNotBuilt); }
Status model::cuda_linear(const model::Weight&, const float*, int64_t, model::ActMode, float*) { return Status::Error(Code::Unsupported, kNotBuilt); }

}  // namespace st
