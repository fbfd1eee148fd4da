// The runtime room's bindings: a model box (an External owning the core
// Model), loading, forward steps and a single linear layer for tests.
// lib/model/ builds every argument object; the checks here guard memory
// (buffer lengths against shapes), the core checks the rest.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/model/matmul.h"
#include "../core/model/model.h"
#include "../core/sparse/sparse.h"
#include "job.h"

namespace st {
namespace addon {

namespace {

using model::Model;

// What JS holds: the model (once loaded), its cancel flag and the lock that
// keeps calls one at a time.
struct ModelBox {
  std::atomic<bool> cancel{false};
  std::mutex busy;
  std::unique_ptr<Model> model;
};

ModelBox* box_of(Napi::Env env, const Napi::Value& v) {
  if (!v.IsExternal()) throw_error(env, Code::Internal, "expected a model handle");
  return v.As<Napi::External<ModelBox>>().Data();
}

double get_number(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_error(o.Env(), Code::Internal, std::string("argument field ") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

std::string get_string(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw_error(o.Env(), Code::Internal, std::string("argument field ") + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

Kernel get_kernel(const Napi::Object& o) {
  const int64_t v = get_int(o, "kernel");
  if (v < 0 || v > 4) throw_error(o.Env(), Code::Value, "unknown kernel code");
  return static_cast<Kernel>(v);
}

DType get_dtype(const Napi::Object& o, const char* key) {
  const int64_t v = get_int(o, key);
  if (v < 0 || v > 6) throw_error(o.Env(), Code::DType, std::string("unknown dtype code for ") + key);
  return static_cast<DType>(v);
}

model::WFormat get_format(const Napi::Object& o) {
  const int64_t v = get_int(o, "format");
  if (!model::valid_format(static_cast<int32_t>(v)) || v != static_cast<int32_t>(v)) throw_error(o.Env(), Code::Value, "unknown weight format code");
  return static_cast<model::WFormat>(v);
}

model::Part get_part(const Napi::Object& t, const char* key) {
  model::Part p;
  Napi::Value v = t.Get(key);
  if (v.IsUndefined() || v.IsNull()) return p;
  if (!v.IsObject()) throw_error(t.Env(), Code::Internal, std::string("argument field ") + key + " must be a part object");
  Napi::Object o = v.As<Napi::Object>();
  p.file = static_cast<int32_t>(get_int(o, "file"));
  p.offset = get_int(o, "offset");
  p.bytes = get_int(o, "bytes");
  return p;
}

// The box is locked for the job's run (one call at a time per model).
class ModelJob : public Job {
 public:
  ModelJob(Napi::Env env, const Napi::Object& o) : box_(box_of(env, o.Get("model"))), ref_(Napi::Reference<Napi::Value>::New(o.Get("model"), 1)) {}

 protected:
  // Runs body with the model locked; ERR_VALUE when it is busy or disposed.
  template <class F>
  Status locked(F body) {
    std::unique_lock<std::mutex> lk(box_->busy, std::try_to_lock);
    if (!lk.owns_lock()) return Status::Error(Code::Value, "the model is busy with another call");
    if (!box_->model) return Status::Error(Code::Value, "the model was disposed");
    return body(*box_->model);
  }
  ModelBox* box_;

 private:
  Napi::Reference<Napi::Value> ref_;  // keeps the box alive while the job runs
};

class LoadJob : public ModelJob {
 public:
  LoadJob(Napi::Env env, const Napi::Object& o) : ModelJob(env, o) {
    Napi::Object c = o.Get("config").As<Napi::Object>();
    cfg_.vocab = get_int(c, "vocab");
    cfg_.embd = get_int(c, "embd");
    cfg_.layers = get_int(c, "layers");
    cfg_.heads = get_int(c, "heads");
    cfg_.heads_kv = get_int(c, "headsKv");
    cfg_.head_dim = get_int(c, "headDim");
    cfg_.ff = get_int(c, "ff");
    cfg_.ctx_train = get_int(c, "ctxTrain");
    cfg_.rope = get_int(c, "ropeStyle") == 1 ? model::RopeStyle::Neox : model::RopeStyle::Normal;
    cfg_.rope_dims = get_int(c, "ropeDims");
    cfg_.rope_base = get_number(c, "ropeBase");
    cfg_.rope_pos_scale = get_number(c, "ropePosScale");
    cfg_.eps = static_cast<float>(get_number(c, "eps"));
    Napi::Value rf = c.Get("ropeFactors");
    if (rf.IsTypedArray()) {
      Napi::TypedArray ta = rf.As<Napi::TypedArray>();
      if (ta.TypedArrayType() != napi_float32_array) throw_error(env, Code::Internal, "ropeFactors must be a Float32Array");
      const float* p = reinterpret_cast<const float*>(static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
      cfg_.rope_factors.assign(p, p + ta.ElementLength());
    }
    Napi::Object op = o.Get("options").As<Napi::Object>();
    opt_.ctx = get_int(op, "ctx");
    opt_.batch = get_int(op, "batch");
    opt_.threads = static_cast<int>(get_int(op, "threads"));
    opt_.kernel = get_kernel(op);
    opt_.act = get_int(op, "act") == 1 ? model::ActMode::F32 : model::ActMode::Auto;
    opt_.detect_sparse = get_bool(op, "detectSparse");
    opt_.blocks_only = op.Has("blocksOnly") && get_bool(op, "blocksOnly");
    Napi::Array files = o.Get("files").As<Napi::Array>();
    for (uint32_t i = 0; i < files.Length(); ++i) {
      Napi::Object f = files.Get(i).As<Napi::Object>();
      model::FileSpec fs;
      fs.path = get_string(f, "path");
      fs.size = get_int(f, "size");
      Napi::Value mt = f.Get("mtimeNs");
      if (!mt.IsBigInt()) throw_error(env, Code::Internal, "files[].mtimeNs must be a bigint");
      bool lossless = true;
      fs.mtime_ns = mt.As<Napi::BigInt>().Int64Value(&lossless);
      for (const char* key : {"ino", "dev"}) {
        Napi::Value v = f.Get(key);
        if (!v.IsBigInt()) throw_error(env, Code::Internal, std::string("files[].") + key + " must be a bigint");
        (key[0] == 'i' ? fs.ino : fs.dev) = v.As<Napi::BigInt>().Uint64Value(&lossless);
      }
      files_.push_back(fs);
    }
    Napi::Array ts = o.Get("tensors").As<Napi::Array>();
    for (uint32_t i = 0; i < ts.Length(); ++i) {
      Napi::Object t = ts.Get(i).As<Napi::Object>();
      model::TensorSpec s;
      s.name = get_string(t, "name");
      s.slot = static_cast<model::Slot>(get_int(t, "slot"));
      s.layer = get_int(t, "layer");
      s.format = get_format(t);
      s.rows = get_int(t, "rows");
      s.cols = get_int(t, "cols");
      s.group = get_int(t, "group");
      s.scale_dtype = get_dtype(t, "scaleDtype");
      s.values_dtype = get_dtype(t, "valuesDtype");
      s.data = get_part(t, "data");
      s.scales = get_part(t, "scales");
      s.zeros = get_part(t, "zeros");
      s.bitmask = get_part(t, "bitmask");
      if (s.rows < 0 || s.cols < 0 || s.rows > (int64_t{1} << 32) || s.cols > (int64_t{1} << 32)) throw_error(env, Code::Shape, "tensor " + s.name + ": bad shape");
      tensors_.push_back(std::move(s));
    }
  }
  Status run() override {
    std::unique_lock<std::mutex> lk(box_->busy, std::try_to_lock);
    if (!lk.owns_lock() || box_->model) return Status::Error(Code::Internal, "the model handle is in use");
    return Model::create(cfg_, opt_, files_, tensors_, &box_->cancel, &box_->model);
  }
  Napi::Value result(Napi::Env env) override { return info(env, *box_->model); }

  static Napi::Object info(Napi::Env env, const Model& m) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("weightBytes", Napi::Number::New(env, static_cast<double>(m.weight_bytes())));
    r.Set("filled", Napi::Number::New(env, static_cast<double>(m.filled())));
    Napi::Array lines = Napi::Array::New(env);
    uint32_t i = 0;
    for (const std::string& l : m.describe()) lines.Set(i++, l);
    r.Set("linears", lines);
    return r;
  }

 private:
  model::Config cfg_;
  model::Options opt_;
  std::vector<model::FileSpec> files_;
  std::vector<model::TensorSpec> tensors_;
};

// begin (tokens, pos) [+ layers (l0, l1, capture)] [+ finish (all, logits, headIn)]:
// `steps` says which; forward() is all three.
class StepJob : public ModelJob {
 public:
  StepJob(Napi::Env env, const Napi::Object& o) : ModelJob(env, o) {
    Model* m = box_->model.get();
    if (!m) throw_error(env, Code::Value, "the model was disposed");
    const model::Config& c = m->config();
    begin_ = get_bool(o, "begin");
    finish_ = get_bool(o, "finish");
    l0_ = get_int(o, "l0");
    l1_ = get_int(o, "l1");
    if (l0_ < 0 || l1_ < l0_ || l1_ > c.layers) throw_error(env, Code::Value, "bad layer range");
    n_ = get_int(o, "n");  // tokens of the step (begin: of `tokens`)
    if (n_ < 1 || n_ > m->options().batch) throw_error(env, Code::Value, "a step takes 1.." + std::to_string(m->options().batch) + " tokens");
    const uint64_t hidden_bytes = checked_mul(env, checked_mul(env, static_cast<uint64_t>(n_), static_cast<uint64_t>(c.embd), "hidden"), 4, "hidden");
    if (begin_) {
      Napi::Value hv = o.Get("hidden");
      if (!hv.IsUndefined() && !hv.IsNull()) {
        hidden_ = static_cast<const float*>(pin(env, hv, "hidden states", hidden_bytes));
      } else {
        // ids index the embedding table: copied, so what begin() checks is what it reads
        tokens_ = static_cast<const int32_t*>(copy_in(env, o.Get("tokens"), "tokens", checked_mul(env, static_cast<uint64_t>(n_), 4, "tokens")));
      }
      pos_ = get_int(o, "pos");
    }
    Napi::Value cap = o.Get("capture");
    if (cap.IsArray()) {
      Napi::Array a = cap.As<Napi::Array>();
      if (a.Length() != static_cast<uint32_t>((l1_ - l0_) * model::kSites)) throw_error(env, Code::Internal, "capture: one entry per layer and site");
      const int64_t width[model::kSites] = {c.embd, c.heads * c.head_dim, c.embd, c.ff};
      for (uint32_t i = 0; i < a.Length(); ++i) {
        const uint64_t bytes = checked_mul(env, checked_mul(env, static_cast<uint64_t>(n_), static_cast<uint64_t>(width[i % model::kSites]), "capture"), 4, "capture");
        Napi::Value v = a.Get(i);
        capture_.sites.push_back(v.IsNull() || v.IsUndefined() ? nullptr : static_cast<float*>(pin_output(env, v, "activation buffer", bytes)));
      }
      has_capture_ = true;
    }
    if (finish_) {
      all_ = get_bool(o, "all");
      const uint64_t outs = all_ ? static_cast<uint64_t>(n_) : 1;
      Napi::Value lv = o.Get("logits");
      if (!lv.IsNull() && !lv.IsUndefined()) {
        logits_ = static_cast<float*>(pin_output(env, lv, "logits", checked_mul(env, checked_mul(env, outs, static_cast<uint64_t>(c.vocab), "logits"), 4, "logits")));
      }
      Napi::Value hi = o.Get("headIn");
      if (!hi.IsNull() && !hi.IsUndefined()) head_in_ = static_cast<float*>(pin_output(env, hi, "activation buffer", checked_mul(env, checked_mul(env, outs, static_cast<uint64_t>(c.embd), "head"), 4, "head")));
      Napi::Value ho = o.Get("hiddenOut");
      if (!ho.IsNull() && !ho.IsUndefined()) hidden_out_ = static_cast<float*>(pin_output(env, ho, "hidden states", hidden_bytes));
    }
  }
  Status run() override {
    return locked([&](Model& m) -> Status {
      Status st;
      if (begin_ && !(st = hidden_ ? m.begin_hidden(hidden_, n_, pos_) : m.begin(tokens_, n_, pos_)).ok()) return st;
      if (l1_ > l0_ && !(st = m.layers(l0_, l1_, has_capture_ ? &capture_ : nullptr)).ok()) return st;
      if (finish_) return m.finish(all_, logits_, head_in_, hidden_out_);
      return st;
    });
  }
  Napi::Value result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(box_->model->filled())); }

 private:
  bool begin_ = false, finish_ = false, all_ = false, has_capture_ = false;
  int64_t l0_ = 0, l1_ = 0, n_ = 0, pos_ = 0;
  const int32_t* tokens_ = nullptr;
  const float* hidden_ = nullptr;
  float* hidden_out_ = nullptr;
  model::Capture capture_;
  float* logits_ = nullptr;
  float* head_in_ = nullptr;
};

// One linear layer from JS buffers (tests, benchmarks).
class LinearJob : public Job {
 public:
  LinearJob(Napi::Env env, const Napi::Object& o) {
    w_.format = get_format(o);
    w_.rows = get_int(o, "rows");
    w_.cols = get_int(o, "cols");
    n_ = get_int(o, "n");
    kernel_ = get_kernel(o);
    act_ = get_int(o, "act") == 1 ? model::ActMode::F32 : model::ActMode::Auto;
    threads_ = static_cast<int>(get_int(o, "threads"));
    if (w_.rows < 1 || w_.cols < 1 || n_ < 1) throw_error(env, Code::Shape, "empty weight or input");
    const model::FormatInfo& fi = model::format_info(w_.format);
    if (w_.cols % fi.k_multiple != 0) throw_error(env, Code::Shape, std::string(fi.name) + " rows must be a multiple of " + std::to_string(fi.k_multiple));
    w_.values_dtype = get_dtype(o, "valuesDtype");
    if (w_.format == model::WFormat::Sparse24 && !is_float_dtype(w_.values_dtype)) throw_error(env, Code::DType, "2:4 values must be f32, f16 or bf16");
    w_.row_bytes = model::stored_row_bytes(w_.format, w_.cols, w_.values_dtype);
    const uint64_t rows = static_cast<uint64_t>(w_.rows);
    w_.data = static_cast<const uint8_t*>(pin(env, o.Get("data"), "weight", checked_mul(env, rows, static_cast<uint64_t>(w_.row_bytes), "weight")));
    if (w_.format == model::WFormat::Int4 || w_.format == model::WFormat::Int8) {
      w_.group = get_int(o, "group");
      if (w_.group < 1 || w_.cols % w_.group != 0) throw_error(env, Code::Shape, "the group size must divide the row");
      w_.scale_dtype = get_dtype(o, "scaleDtype");
      if (!is_float_dtype(w_.scale_dtype)) throw_error(env, Code::DType, "scales must be f32, f16 or bf16");
      const uint64_t groups = checked_mul(env, rows, static_cast<uint64_t>(w_.cols / w_.group), "scales");
      w_.scales = pin(env, o.Get("scales"), "scales", checked_mul(env, groups, dtype_size(w_.scale_dtype), "scales"));
      w_.zeros = static_cast<const int8_t*>(pin_optional(env, o.Get("zeros"), "zeros", groups));
    }
    if (w_.format == model::WFormat::Sparse24) {
      w_.meta_row_bytes = meta_row_bytes(w_.cols, 2);
      w_.meta = static_cast<const uint8_t*>(pin(env, o.Get("meta"), "meta", checked_mul(env, rows, static_cast<uint64_t>(w_.meta_row_bytes), "meta")));
    }
    x_ = static_cast<const float*>(pin(env, o.Get("x"), "x", checked_mul(env, checked_mul(env, static_cast<uint64_t>(n_), static_cast<uint64_t>(w_.cols), "x"), 4, "x")));
    y_ = static_cast<float*>(pin_output(env, o.Get("y"), "y", checked_mul(env, checked_mul(env, static_cast<uint64_t>(n_), rows, "y"), 4, "y")));
  }
  Status run() override { return model::linear(w_, x_, n_, kernel_, act_, threads_, y_); }

 private:
  model::Weight w_;
  int64_t n_ = 0;
  Kernel kernel_ = Kernel::Auto;
  model::ActMode act_ = model::ActMode::Auto;
  int threads_ = 0;
  const float* x_ = nullptr;
  float* y_ = nullptr;
};

// Perplexity / KL scoring of logits (lib/model/evaluate.ts).
class ScoreJob : public Job {
 public:
  ScoreJob(Napi::Env env, const Napi::Object& o) {
    a_.rows = get_int(o, "rows");
    a_.vocab = get_int(o, "vocab");
    if (a_.rows < 0 || a_.vocab < 1) throw_error(env, Code::Shape, "bad logits shape");
    const uint64_t rows = static_cast<uint64_t>(a_.rows);
    const uint64_t cells = checked_mul(env, checked_mul(env, rows, static_cast<uint64_t>(a_.vocab), "logits"), 4, "logits");
    a_.logits = static_cast<const float*>(pin(env, o.Get("logits"), "logits", cells, false));
    a_.targets = static_cast<const int32_t*>(copy_in(env, o.Get("targets"), "targets", rows * 4));  // indices: checked, then used
    a_.nll = static_cast<double*>(pin_output(env, o.Get("nll"), "nll", rows * 8));
    a_.threads = static_cast<int>(get_int(o, "threads"));
    Napi::Value b = o.Get("base");
    if (!b.IsNull() && !b.IsUndefined()) {
      a_.base = static_cast<const float*>(pin(env, b, "base logits", cells, false));
      a_.base_nll = static_cast<double*>(pin_output(env, o.Get("baseNll"), "baseNll", rows * 8));
      a_.kl = static_cast<double*>(pin_output(env, o.Get("kl"), "kl", rows * 8));
      a_.same_top = static_cast<uint8_t*>(pin_output(env, o.Get("sameTop"), "sameTop", rows));
    }
  }
  Status run() override { return model::score_logits(a_); }

 private:
  model::ScoreArgs a_;
};

Napi::Value model_new(const Napi::CallbackInfo& info) {
  return Napi::External<ModelBox>::New(info.Env(), new ModelBox(), [](Napi::Env, ModelBox* b) { delete b; });
}

Napi::Value model_cancel(const Napi::CallbackInfo& info) {
  box_of(info.Env(), info[0])->cancel.store(info[1].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value model_dispose(const Napi::CallbackInfo& info) {
  ModelBox* b = box_of(info.Env(), info[0]);
  std::unique_lock<std::mutex> lk(b->busy, std::try_to_lock);
  if (!lk.owns_lock()) throw_error(info.Env(), Code::Value, "the model is busy with another call");
  b->model.reset();
  return info.Env().Undefined();
}

Napi::Value model_info(const Napi::CallbackInfo& info) {
  ModelBox* b = box_of(info.Env(), info[0]);
  std::unique_lock<std::mutex> lk(b->busy, std::try_to_lock);
  if (!lk.owns_lock()) throw_error(info.Env(), Code::Value, "the model is busy with another call");
  if (!b->model) throw_error(info.Env(), Code::Value, "the model was disposed");
  return LoadJob::info(info.Env(), *b->model);
}

Napi::Value linear_kernel(const Napi::CallbackInfo& info) {
  Napi::Object o = info[0].As<Napi::Object>();
  model::Weight w;
  w.format = get_format(o);
  w.rows = 1;
  w.cols = get_int(o, "cols");
  w.group = get_int(o, "group");
  const bool zeros = get_bool(o, "asymmetric");
  static const int8_t kZero = 0;
  w.zeros = zeros ? &kZero : nullptr;
  return Napi::String::New(info.Env(), model::linear_kernel_name(w, get_kernel(o), get_int(o, "act") == 1 ? model::ActMode::F32 : model::ActMode::Auto));
}

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) {
  exports.Set("modelNew", Napi::Function::New(env, model_new, "modelNew"));
  exports.Set("modelLoad", Napi::Function::New(env, run_job<LoadJob>, "modelLoad"));
  exports.Set("modelStep", Napi::Function::New(env, run_job<StepJob>, "modelStep"));
  exports.Set("modelCancel", Napi::Function::New(env, model_cancel, "modelCancel"));
  exports.Set("modelDispose", Napi::Function::New(env, model_dispose, "modelDispose"));
  exports.Set("modelInfo", Napi::Function::New(env, model_info, "modelInfo"));
  exports.Set("modelLinear", Napi::Function::New(env, run_job<LinearJob>, "modelLinear"));
  exports.Set("modelLinearKernel", Napi::Function::New(env, linear_kernel, "modelLinearKernel"));
  exports.Set("modelScore", Napi::Function::New(env, run_job<ScoreJob>, "modelScore"));
}

}  // namespace addon
}  // namespace st
