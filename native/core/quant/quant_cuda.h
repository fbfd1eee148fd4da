// CUDA entry points of the quant room (quant.cu; stubs in cuda_stub.cc).
#pragma once
#include "quant.h"

namespace st {

// Same contract as quantize()/dequantize(), arguments already validated.
// ERR_UNSUPPORTED when no device is usable.
Status cuda_quantize(const QuantizeArgs& a);
Status cuda_dequantize(const DequantizeArgs& a, void* out, DType out_dtype);

}  // namespace st
