#include "job.h"

#include "../core/cpu.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace st {
namespace addon {

namespace {

struct InstanceData {
  Napi::FunctionReference error_class;
  // worker_threads.markAsUntransferable (lib/native.ts registers it).
  Napi::FunctionReference mark_untransferable;
  // ArrayBuffer.prototype's `resizable` getter, taken when the addon
  // loads; empty where the runtime has no resizable buffers.
  Napi::FunctionReference resizable_getter;
  bool policy_known = false;
  BufferPolicy policy{true, "lib/ did not register worker_threads.markAsUntransferable"};
};

InstanceData* instance(Napi::Env env) {
  auto* d = env.GetInstanceData<InstanceData>();
  if (!d) {
    d = new InstanceData();
    env.SetInstanceData(d);
  }
  return d;
}

// SLIMTENSOR_ASYNC_BUFFERS: "copy" or "mark" overrides the probe; anything
// else (or unset) lets it decide.
std::string policy_override() {
  const char* v = std::getenv("SLIMTENSOR_ASYNC_BUFFERS");
  return v ? std::string(v) : std::string();
}

// Decides, once per environment, whether marking a buffer untransferable
// keeps every plain-JS detach away from it. postMessage/structuredClone
// honour the mark (Node 20 copies instead of moving; Node 21+ throws
// DataCloneError). ArrayBuffer.prototype.transfer (Node 21+, Electron 28+)
// honours it only where markAsUntransferable also sets V8's detach key, so
// the probe tries it on a marked buffer.
BufferPolicy probe_policy(Napi::Env env, InstanceData* d) {
  const std::string forced = policy_override();
  if (forced == "copy") return {true, "SLIMTENSOR_ASYNC_BUFFERS=copy"};
  if (d->mark_untransferable.IsEmpty()) return {true, "lib/ did not register worker_threads.markAsUntransferable"};
  if (forced == "mark") return {false, "SLIMTENSOR_ASYNC_BUFFERS=mark"};
  Napi::Object proto = env.Global().Get("ArrayBuffer").As<Napi::Object>().Get("prototype").As<Napi::Object>();
  Napi::Value transfer = proto.Get("transfer");
  if (!transfer.IsFunction()) {
    return {false, "this runtime has no ArrayBuffer.prototype.transfer; postMessage and structuredClone copy marked buffers"};
  }
  Napi::ArrayBuffer probe = Napi::ArrayBuffer::New(env, 8);
  d->mark_untransferable.Call({probe});
  try {
    transfer.As<Napi::Function>().Call(probe, {});
  } catch (const Napi::Error&) {
    // Refused: the mark set a detach key.
  }
  if (probe.IsDetached()) return {true, "ArrayBuffer.prototype.transfer detaches buffers marked untransferable on this runtime"};
  return {false, "markAsUntransferable sets a detach key: transfer(), postMessage and structuredClone leave marked buffers in place"};
}

// The message of the exception being handled (call inside a catch block).
Status exception_status() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::Shape, "out of memory: the operation could not allocate its working memory for arguments of this size");
  } catch (const std::length_error& e) {
    return Status::Error(Code::Shape, std::string("a working buffer for arguments of this size exceeds what can be allocated (") + e.what() + ")");
  } catch (const std::exception& e) {
    return Status::Error(Code::Internal, std::string("native exception: ") + e.what());
  } catch (...) {
    return Status::Error(Code::Internal, "unknown native exception");
  }
}

Status run_safely(Job& job) {
  try {
    return job.run();
  } catch (...) {
    return exception_status();
  }
}

// False while the environment is being torn down (worker.terminate(),
// process exit): N-API calls that run JS then fail, and node-addon-api
// would turn the failure into a C++ exception thrown out of a callback.
bool js_can_run(napi_env env) {
  napi_value o, u;
  if (napi_create_object(env, &o) != napi_ok || napi_get_undefined(env, &u) != napi_ok) return false;
  return napi_set_named_property(env, o, "probe", u) == napi_ok;
}

class Worker : public Napi::AsyncWorker {
 public:
  Worker(Napi::Env env, std::unique_ptr<Job> job) : Napi::AsyncWorker(env, "slimtensor"), job_(std::move(job)) {
    NAPI_THROW_IF_FAILED_VOID(env, napi_create_promise(env, &deferred_, &promise_));
  }

  Napi::Value promise() const { return Napi::Value(Env(), promise_); }

  void Execute() override { status_ = run_safely(*job_); }
  void OnOK() override { settle(); }
  void OnError(const Napi::Error&) override { settle(); }  // Execute never sets an error; kept total

 private:
  // Resolves or rejects on the main thread, never throwing: by then the
  // environment may be going away, and nobody waits for the promise.
  void settle() {
    napi_env env = Env();
    std::unique_ptr<Job> job = std::move(job_);  // the buffer references go on this thread
    if (!job || !js_can_run(env)) return;
    napi_value value = nullptr;
    bool resolve = false;
    try {
      const std::string changed = job->changed_buffer(Env());
      if (!changed.empty()) {
        value = make_error(Env(), Code::Detached, changed + " was detached or resized while the operation ran; its result was discarded").Value();
      } else if (!status_.ok()) {
        value = make_error(Env(), status_.code, status_.message).Value();
      } else {
        job->copy_back();
        value = job->result(Env());
        resolve = true;
      }
    } catch (const Napi::Error& e) {
      value = error_value(e);
    } catch (...) {
      const Status s = exception_status();
      try {
        value = make_error(Env(), s.code, s.message).Value();
      } catch (...) {
        value = nullptr;
      }
    }
    if (!value) return;
    // A failure here means the environment stopped meanwhile: nothing to do.
    if (resolve) napi_resolve_deferred(env, deferred_, value);
    else napi_reject_deferred(env, deferred_, value);
  }

  static napi_value error_value(const Napi::Error& e) {
    try {
      return e.Value();
    } catch (...) {
      return nullptr;
    }
  }

  std::unique_ptr<Job> job_;
  napi_deferred deferred_ = nullptr;
  napi_value promise_ = nullptr;
  Status status_;
};

thread_local const PinScope* t_pin_scope = nullptr;

bool is_fresh(Napi::Env env, const Napi::Value& v) {
  const PinScope* s = PinScope::current();
  if (!s) return false;
  for (napi_value f : s->fresh()) {
    bool same = false;
    if (napi_strict_equals(env, v, f, &same) == napi_ok && same) return true;
  }
  return false;
}

// `bytes` of fresh memory aligned to 64 bytes (kernels check alignment to
// pick streaming stores; the caller's buffers are at least element-aligned).
uint8_t* aligned_block(std::unique_ptr<uint8_t[]>* owner, uint64_t bytes) {
  owner->reset(new uint8_t[bytes + 63]);
  const uintptr_t p = reinterpret_cast<uintptr_t>(owner->get());
  return reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t{63});
}

// Validates `v` as a TypedArray over an attached, fixed-length ArrayBuffer
// holding `expect_bytes` (exactly, or at least) and returns its buffer,
// data pointer (null when empty) and byte count.
struct View {
  Napi::ArrayBuffer buffer;
  uint8_t* data;
  uint64_t bytes;
};

View checked_view(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes, bool exact) {
  if (!v.IsTypedArray()) throw_error(env, Code::Value, std::string(what) + " must be a TypedArray");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  napi_value abv = nullptr;
  size_t offset = 0;
  NAPI_THROW_IF_FAILED(env, napi_get_typedarray_info(env, ta, nullptr, nullptr, nullptr, &abv, &offset), View{});
  bool is_ab = false;
  NAPI_THROW_IF_FAILED(env, napi_is_arraybuffer(env, abv, &is_ab), View{});
  if (!is_ab) {
    // A SharedArrayBuffer: other threads could change index-like data
    // under a kernel, and N-API cannot report its length.
    throw_error(env, Code::Value, std::string(what) + " is backed by a SharedArrayBuffer; copy it into an ordinary ArrayBuffer first (e.g. typedArray.slice())");
  }
  Napi::ArrayBuffer ab(env, abv);
  if (ab.IsDetached()) throw_error(env, Code::Detached, std::string(what) + " was detached (transferred) before the call");
  InstanceData* d = instance(env);
  if (!d->resizable_getter.IsEmpty() && d->resizable_getter.Call(ab, {}).ToBoolean().Value()) {
    throw_error(env, Code::Value, std::string(what) + " is backed by a resizable ArrayBuffer, which could shrink under the kernel; pass a fixed-length one (slice() copies it)");
  }
  const uint64_t bytes = ta.ByteLength();
  if (exact ? bytes != expect_bytes : bytes < expect_bytes) {
    throw_error(env, Code::Shape, std::string(what) + " holds " + std::to_string(bytes) + " bytes, expected " +
                                      (exact ? "" : "at least ") + std::to_string(expect_bytes));
  }
  uint8_t* data = bytes == 0 ? nullptr : static_cast<uint8_t*>(ab.Data()) + offset;
  return {ab, data, bytes};
}

}  // namespace

struct Job::Pinned {
  Napi::Reference<Napi::ArrayBuffer> buffer;
  size_t byte_length;  // of the whole ArrayBuffer when pinned
  std::string what;
  uint8_t* user;       // the caller's bytes
  uint64_t bytes;
  Access access;
  std::unique_ptr<uint8_t[]> storage;  // copy mode: the private copy
  uint8_t* copy = nullptr;
};

BufferPolicy buffer_policy(Napi::Env env) {
  InstanceData* d = instance(env);
  if (!d->policy_known) {
    d->policy = probe_policy(env, d);
    d->policy_known = true;
  }
  return d->policy;
}

PinScope::PinScope(Napi::Env env, const Napi::Object& args, bool async) : async_(async), prev_(t_pin_scope) {
  Napi::Value f = args.Get("fresh");
  if (f.IsArray()) {
    Napi::Array a = f.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) fresh_.push_back(a.Get(i));
  }
  (void)env;
  t_pin_scope = this;
}

PinScope::~PinScope() { t_pin_scope = prev_; }

const PinScope* PinScope::current() { return t_pin_scope; }

Job::Job() : async_(t_pin_scope ? t_pin_scope->async() : true) {}

Job::~Job() = default;

Napi::Error make_error(Napi::Env env, Code code, const std::string& message) {
  InstanceData* d = instance(env);
  if (!d->error_class.IsEmpty()) {
    Napi::Object e = d->error_class.New({Napi::String::New(env, message), Napi::String::New(env, code_name(code))});
    return Napi::Error(env, e);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code_name(code)));
  return e;
}

void throw_error(Napi::Env env, Code code, const std::string& message) { throw make_error(env, code, message); }

Napi::Value set_error_class(const Napi::CallbackInfo& info);

void* Job::pin_as(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes, bool exact, Access access) {
  View view = checked_view(env, v, what, expect_bytes, exact);
  auto p = std::make_unique<Pinned>();
  p->buffer = Napi::Persistent(view.buffer);
  p->byte_length = view.buffer.ByteLength();
  p->what = what;
  p->user = view.data;
  p->bytes = view.bytes;
  p->access = access;
  uint8_t* ptr = view.data;
  // Sync calls run while no JS runs; outputs lib/ made for this call are
  // unreachable from JS until it returns. Everything else is protected.
  const bool exposed = async_ && view.bytes > 0 && !(access == Access::Out && is_fresh(env, v));
  if (exposed && buffer_policy(env).copy) {
    // The same bytes pinned twice (a tensor in place, student == teacher)
    // share one copy, so the kernel sees the aliasing it would see in place.
    bool shared = false;
    for (auto& q : pinned_) {
      if (q->copy && q->user == view.data && q->bytes == view.bytes) {
        if (q->access == Access::Out && access != Access::Out) std::memcpy(q->copy, q->user, q->bytes);
        if (q->access != access) q->access = Access::InOut;
        ptr = q->copy;
        shared = true;
        break;
      }
    }
    if (!shared) {
      p->copy = aligned_block(&p->storage, view.bytes);
      if (access != Access::Out) std::memcpy(p->copy, view.data, view.bytes);
      ptr = p->copy;
    }
  } else if (exposed) {
    instance(env)->mark_untransferable.Call({view.buffer});
  }
  pinned_.push_back(std::move(p));
  return ptr;
}

void* Job::pin(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes, bool exact) {
  return pin_as(env, v, what, expect_bytes, exact, Access::In);
}

void* Job::pin_inout(Napi::Env env, const Napi::Value& v, const char* what, uint64_t bytes) {
  return pin_as(env, v, what, bytes, true, Access::InOut);
}

void* Job::pin_output(Napi::Env env, const Napi::Value& v, const char* what, uint64_t bytes) {
  void* p = pin_as(env, v, what, bytes, true, Access::Out);
  hint_huge_pages(p, bytes);
  return p;
}

void* Job::pin_optional(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return pin(env, v, what, expect_bytes);
}

void* Job::pin_output_optional(Napi::Env env, const Napi::Value& v, const char* what, uint64_t bytes) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return pin_output(env, v, what, bytes);
}

const void* Job::copy_in(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes) {
  const View view = checked_view(env, v, what, expect_bytes, true);
  if (view.bytes == 0) return nullptr;
  copies_.emplace_back();
  uint8_t* p = aligned_block(&copies_.back(), view.bytes);
  std::memcpy(p, view.data, view.bytes);
  return p;
}

const void* Job::copy_in_optional(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return copy_in(env, v, what, expect_bytes);
}

std::string Job::changed_buffer(Napi::Env env) const {
  for (const auto& p : pinned_) {
    Napi::ArrayBuffer ab = p->buffer.Value();
    if (ab.IsDetached() || ab.ByteLength() != p->byte_length) return p->what;
  }
  (void)env;
  return "";
}

void Job::copy_back() {
  for (const auto& p : pinned_) {
    if (p->copy && p->access != Access::In) std::memcpy(p->user, p->copy, p->bytes);
  }
}

Napi::Value guard(Napi::Env env, const std::function<Napi::Value()>& f) {
  Status s;
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    s = exception_status();
  }
  throw_error(env, s.code, s.message);
}

Napi::Value dispatch(Napi::Env env, std::unique_ptr<Job> job, bool async) {
  // Only a caller of the raw binding can run JS while a job is built (a
  // getter on the argument object); what it detached is caught here.
  const std::string changed = job->changed_buffer(env);
  if (!changed.empty()) throw_error(env, Code::Detached, changed + " was detached or resized before the operation started");
  if (async) {
    auto* w = new Worker(env, std::move(job));
    Napi::Value p = w->promise();
    w->Queue();
    return p;
  }
  const Status s = run_safely(*job);
  if (!s.ok()) throw_error(env, s.code, s.message);
  return job->result(env);
}

double get_double(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_error(o.Env(), Code::Internal, std::string("argument field ") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int64_t get_int(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_error(o.Env(), Code::Internal, std::string("argument field ") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= -9007199254740991.0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<int64_t>(d))) {
    throw_error(o.Env(), Code::Value, std::string("argument field ") + key + " must be a safe integer");
  }
  return static_cast<int64_t>(d);
}

bool get_bool(const Napi::Object& o, const char* key) { return o.Get(key).ToBoolean().Value(); }

DType get_float_dtype(const Napi::Object& o, const char* key) {
  const int64_t v = get_int(o, key);
  if (v < 0 || v > 6) throw_error(o.Env(), Code::DType, std::string("unknown dtype code for ") + key);
  const DType t = static_cast<DType>(v);
  if (!is_float_dtype(t)) throw_error(o.Env(), Code::DType, std::string(key) + " must be f32, f16 or bf16, got " + dtype_name(t));
  return t;
}

uint64_t checked_mul(Napi::Env env, uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw_error(env, Code::Shape, std::string(what) + ": size overflows 64 bits");
  return r;
}

Napi::Value set_error_class(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw_error(info.Env(), Code::Internal, "setErrorClass needs a constructor");
  instance(info.Env())->error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

// setBufferGuard(markAsUntransferable): lib/native.ts hands over
// worker_threads' function (N-API has no way to mark a buffer); the policy
// is probed again with it.
Napi::Value set_buffer_guard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) throw_error(env, Code::Internal, "setBufferGuard needs worker_threads.markAsUntransferable");
  InstanceData* d = instance(env);
  d->mark_untransferable = Napi::Persistent(info[0].As<Napi::Function>());
  d->policy_known = false;
  return env.Undefined();
}

// Called when the addon loads: the getter as it is then (a program that
// replaced it before loading slimtensor is not defended against).
void capture_builtins(Napi::Env env) {
  Napi::Object global = env.Global();
  Napi::Object descriptor_of = global.Get("Object").As<Napi::Object>();
  Napi::Value desc = descriptor_of.Get("getOwnPropertyDescriptor").As<Napi::Function>().Call(
      descriptor_of, {global.Get("ArrayBuffer").As<Napi::Object>().Get("prototype"), Napi::String::New(env, "resizable")});
  if (desc.IsObject()) {
    Napi::Value get = desc.As<Napi::Object>().Get("get");
    if (get.IsFunction()) instance(env)->resizable_getter = Napi::Persistent(get.As<Napi::Function>());
  }
}

}  // namespace addon
}  // namespace st
