// The CUDA backend's presence. Built from cuda_runtime.cu when the addon is
// compiled with nvcc (npm run build:cuda), else from cuda_stub.cc.
#pragma once
#include <string>

namespace st {

// True when this binary contains CUDA kernels.
bool cuda_compiled();
// True when a device can run them; otherwise *why says what is missing.
bool cuda_available(std::string* why);

}  // namespace st
