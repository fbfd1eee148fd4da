// Module entry: registers each room's bindings plus the runtime controls
// (backends, threads, error class).
#include <napi.h>

#include "../core/cpu.h"
#include "../core/cuda.h"
#include "job.h"

namespace st {
namespace addon {

void register_quant(Napi::Env env, Napi::Object exports);
void register_distill(Napi::Env env, Napi::Object exports);
void register_lowrank(Napi::Env env, Napi::Object exports);
void register_sparse(Napi::Env env, Napi::Object exports);
void register_model(Napi::Env env, Napi::Object exports);
void register_calib(Napi::Env env, Napi::Object exports);
void register_cast(Napi::Env env, Napi::Object exports);
void lowrank_backends(Napi::Env env, Napi::Object cuda);
Napi::Value set_error_class(const Napi::CallbackInfo& info);
Napi::Value set_buffer_guard(const Napi::CallbackInfo& info);
void capture_builtins(Napi::Env env);

namespace {

Napi::Value backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CpuFeatures& hw = cpu_features();
  const CpuFeatures& on = cpu_enabled();
  Napi::Object cpu = Napi::Object::New(env);
  Napi::Array feats = Napi::Array::New(env);
  uint32_t i = 0;
  if (hw.avx2) feats.Set(i++, "avx2+fma+f16c");
  if (hw.avx512) feats.Set(i++, "avx512f+bw+vl");
  if (hw.avx512vnni) feats.Set(i++, "avx512vnni");
  cpu.Set("features", feats);
  // avx512: the AVX2 kernels, with AVX-512 loops where they exist (the MSE search)
  cpu.Set("kernel", on.avx512 ? "avx512" : on.avx2 ? "avx2" : "scalar");
  cpu.Set("threads", threads());
  cpu.Set("hardwareThreads", hardware_threads());
  Napi::Object cuda = Napi::Object::New(env);
  std::string why;
  const bool ok = cuda_available(&why);
  cuda.Set("compiled", cuda_compiled());
  cuda.Set("available", ok);
  if (!ok) cuda.Set("reason", why);
  lowrank_backends(env, cuda);  // cuda.cusolver: the GPU SVD (dlopen)
  Napi::Object r = Napi::Object::New(env);
  r.Set("cpu", cpu);
  r.Set("cuda", cuda);
  const BufferPolicy policy = buffer_policy(env);
  Napi::Object buffers = Napi::Object::New(env);
  buffers.Set("async", policy.copy ? "copy" : "mark");
  buffers.Set("reason", policy.reason);
  r.Set("buffers", buffers);
  return r;
}

Napi::Value set_threads_js(const Napi::CallbackInfo& info) {
  set_threads(static_cast<int>(info[0].As<Napi::Number>().Int32Value()));
  return info.Env().Undefined();
}

Napi::Value get_threads_js(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), threads()); }

// copyBandwidth helper for bench/: copies src into dst (same byte length)
// on `threads` threads. Synchronous on purpose: it is timed by the caller.
Napi::Value parallel_copy_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray() || !info[1].IsTypedArray()) throw_error(env, Code::Value, "parallelCopy(dst, src, threads) takes two TypedArrays");
    Napi::TypedArray dst = info[0].As<Napi::TypedArray>(), src = info[1].As<Napi::TypedArray>();
    if (dst.ByteLength() != src.ByteLength()) throw_error(env, Code::Shape, "parallelCopy: dst and src differ in byte length");
    if (dst.ByteLength() == 0) return env.Undefined();
    uint8_t* d = static_cast<uint8_t*>(dst.ArrayBuffer().Data()) + dst.ByteOffset();
    const uint8_t* s = static_cast<const uint8_t*>(src.ArrayBuffer().Data()) + src.ByteOffset();
    parallel_copy(d, s, dst.ByteLength(), info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 0);
    return env.Undefined();
  });
}

// For O_DIRECT writes (lib/formats/output-file.ts): how many bytes past the
// start of `view` the next address that is a multiple of `alignment` (a
// power of two) lies. JavaScript cannot see addresses; the kernel demands
// aligned ones.
Napi::Value alignment_offset_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray() || !info[1].IsNumber()) throw_error(env, Code::Value, "alignmentOffset(view, alignment) takes a TypedArray and a number");
    const int64_t a = info[1].As<Napi::Number>().Int64Value();
    if (a <= 0 || a > (int64_t{1} << 30) || (a & (a - 1)) != 0) throw_error(env, Code::Value, "alignmentOffset: alignment must be a power of two up to 2^30");
    Napi::TypedArray v = info[0].As<Napi::TypedArray>();
    const uintptr_t at = reinterpret_cast<uintptr_t>(v.ArrayBuffer().Data()) + v.ByteOffset();
    const uintptr_t mask = static_cast<uintptr_t>(a) - 1;
    return Napi::Number::New(env, static_cast<double>((static_cast<uintptr_t>(a) - (at & mask)) & mask));
  });
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("alignmentOffset", Napi::Function::New(env, alignment_offset_js, "alignmentOffset"));
  exports.Set("parallelCopy", Napi::Function::New(env, parallel_copy_js, "parallelCopy"));
  exports.Set("backends", Napi::Function::New(env, backends, "backends"));
  exports.Set("setThreads", Napi::Function::New(env, set_threads_js, "setThreads"));
  exports.Set("getThreads", Napi::Function::New(env, get_threads_js, "getThreads"));
  exports.Set("setErrorClass", Napi::Function::New(env, set_error_class, "setErrorClass"));
  exports.Set("setBufferGuard", Napi::Function::New(env, set_buffer_guard, "setBufferGuard"));
  capture_builtins(env);
  register_quant(env, exports);
  register_distill(env, exports);
  register_lowrank(env, exports);
  register_sparse(env, exports);
  register_model(env, exports);
  register_calib(env, exports);
  register_cast(env, exports);
  return exports;
}

}  // namespace
}  // namespace addon
}  // namespace st

static Napi::Object Init(Napi::Env env, Napi::Object exports) { return st::addon::init(env, exports); }
NODE_API_MODULE(slimtensor, Init)
