// CUDA entry point of the runtime room (model.cu; stub in cuda_stub.cc).
// One linear layer on the device with the arithmetic of model_math.h (the
// functions the scalar reference calls): per output one warp over the
// row's blocks. The model's forward pass does not use it yet: the runtime
// runs on the CPU, and this kernel is what a device path would build on
// (tests compare it with the CPU reference where a GPU is present).
#pragma once
#include "model.h"

namespace st {
namespace model {

// linear()'s contract for kernel Cuda, arguments already validated:
// Y [n, rows] = X [n, cols] · Wᵀ, with 8-bit activation blocks when `act`
// is Auto and the weight's layout takes them (q8_layout_ok), else f32. 2:4
// weights are not supported on the device (ERR_UNSUPPORTED).
Status cuda_linear(const Weight& w, const float* x, int64_t n, ActMode act, float* y);

}  // namespace model
}  // namespace st
