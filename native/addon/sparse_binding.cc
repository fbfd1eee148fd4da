// prune / compress24 / decompress24 / spmm24 / pruneUnstructured: argument
// objects -> core structs (the sparse room). Every buffer's byte length is
// checked against the shape before a pointer is taken.
#include <cstring>
#include <memory>
#include <string>

#include "../core/sparse/sparse.h"
#include "job.h"

namespace st {
namespace addon {

namespace {

Kernel get_kernel(const Napi::Object& o) {
  const int64_t v = get_int(o, "kernel");
  if (v < 0 || v > 4) throw_error(o.Env(), Code::Value, "unknown kernel code");
  return static_cast<Kernel>(v);
}

SparseScore get_score(const Napi::Object& o) {
  const int64_t v = get_int(o, "score");
  if (v < 0 || v > 3) throw_error(o.Env(), Code::Value, "unknown score code");
  return static_cast<SparseScore>(v);
}

void check_dims(Napi::Env env, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) throw_error(env, Code::Shape, "negative dimension");
  if (cols % 4 != 0) throw_error(env, Code::Shape, "row length " + std::to_string(cols) + " is not a multiple of 4");
}

uint64_t u(int64_t v) { return static_cast<uint64_t>(v); }

class SelectJob : public Job {
 public:
  SelectJob(Napi::Env env, const Napi::Object& o) {
    a_.src.dtype = get_float_dtype(o, "srcDtype");
    a_.src.rows = get_int(o, "rows");
    a_.src.cols = get_int(o, "cols");
    a_.n = static_cast<int>(get_int(o, "n"));
    a_.m = static_cast<int>(get_int(o, "m"));
    a_.score = get_score(o);
    a_.kernel = get_kernel(o);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    a_.meta_word_bytes = static_cast<int>(get_int(o, "metaWordBytes"));
    const int64_t rows = a_.src.rows, cols = a_.src.cols;
    if (rows < 0 || cols < 0) throw_error(env, Code::Shape, "negative dimension");
    if (a_.m < 1 || a_.m > 32 || a_.n < 1 || a_.n > a_.m) throw_error(env, Code::Value, "bad N:M pattern");
    if (cols % a_.m != 0) throw_error(env, Code::Shape, "row length " + std::to_string(cols) + " is not a multiple of M = " + std::to_string(a_.m));
    if (a_.meta_word_bytes != 2 && a_.meta_word_bytes != 4) throw_error(env, Code::Value, "metaWordBytes must be 2 or 4");
    const uint64_t n = checked_mul(env, u(rows), u(cols), "input");
    const uint64_t es = dtype_size(a_.src.dtype);
    a_.src.data = pin(env, o.Get("src"), "input", checked_mul(env, n, es, "input"));
    const uint64_t mask_bytes = checked_mul(env, u(rows), u(bitmask_row_bytes(cols)), "mask");
    if (a_.score == SparseScore::Wanda) a_.norms = static_cast<const float*>(pin(env, o.Get("norms"), "activationNorms", checked_mul(env, u(cols), 4, "activationNorms")));
    if (a_.score == SparseScore::Mask) a_.mask_in = static_cast<const uint8_t*>(pin(env, o.Get("maskIn"), "mask", mask_bytes));
    a_.mask = static_cast<uint8_t*>(pin_output_optional(env, o.Get("mask"), "mask", mask_bytes));
    a_.dense = pin_output_optional(env, o.Get("dense"), "tensor", checked_mul(env, n, es, "tensor"));
    const bool compress = !o.Get("values").IsNull() && !o.Get("values").IsUndefined();
    if (compress) {
      if (a_.n != 2 || a_.m != 4) throw_error(env, Code::Value, "compressed output is 2:4 only");
      a_.values = pin_output(env, o.Get("values"), "values", checked_mul(env, n / 2, es, "values"));
      a_.meta = static_cast<uint8_t*>(pin_output(env, o.Get("meta"), "meta", checked_mul(env, u(rows), u(meta_row_bytes(cols, a_.meta_word_bytes)), "meta")));
    }
  }
  Status run() override { return sparse_select(a_); }

 private:
  SelectArgs a_;
};

class QuantSelectJob : public Job {
 public:
  QuantSelectJob(Napi::Env env, const Napi::Object& o) {
    a_.bits = static_cast<int>(get_int(o, "bits"));
    a_.rows = get_int(o, "rows");
    a_.cols = get_int(o, "cols");
    a_.group = get_int(o, "group");
    a_.score = get_score(o);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    check_dims(env, a_.rows, a_.cols);
    if (a_.bits != 4 && a_.bits != 8) throw_error(env, Code::Value, "bits must be 4 or 8");
    if (a_.group <= 0 || a_.cols % a_.group != 0) throw_error(env, Code::Shape, "the group size must divide the row length");
    const uint64_t in_words = (checked_mul(env, u(a_.cols), u(a_.bits), "codes") + 31) / 32;
    const uint64_t out_words = (checked_mul(env, u(a_.cols / 2), u(a_.bits), "values") + 31) / 32;
    a_.codes = static_cast<const int32_t*>(pin(env, o.Get("codes"), "codes", checked_mul(env, checked_mul(env, u(a_.rows), in_words, "codes"), 4, "codes")));
    a_.zeros = static_cast<const int8_t*>(pin_optional(env, o.Get("zeros"), "zeros", checked_mul(env, u(a_.rows), u(a_.cols / a_.group), "zeros")));
    const uint64_t mask_bytes = checked_mul(env, u(a_.rows), u(bitmask_row_bytes(a_.cols)), "mask");
    if (a_.score == SparseScore::Mask) a_.mask_in = static_cast<const uint8_t*>(pin(env, o.Get("maskIn"), "mask", mask_bytes));
    a_.values = static_cast<int32_t*>(pin_output(env, o.Get("values"), "values", checked_mul(env, checked_mul(env, u(a_.rows), out_words, "values"), 4, "values")));
    a_.meta = static_cast<uint8_t*>(pin_output(env, o.Get("meta"), "meta", checked_mul(env, u(a_.rows), u(meta_row_bytes(a_.cols, 4)), "meta")));
    a_.mask = static_cast<uint8_t*>(pin_output(env, o.Get("mask"), "bitmask", mask_bytes));
  }
  Status run() override { return sparse_select_quant(a_); }

 private:
  QuantSelectArgs a_;
};

class ExpandJob : public Job {
 public:
  ExpandJob(Napi::Env env, const Napi::Object& o) {
    a_.rows = get_int(o, "rows");
    a_.cols = get_int(o, "cols");
    a_.bits = static_cast<int>(get_int(o, "bits"));
    a_.threads = static_cast<int>(get_int(o, "threads"));
    a_.kernel = get_kernel(o);
    check_dims(env, a_.rows, a_.cols);
    const uint64_t n = checked_mul(env, u(a_.rows), u(a_.cols), "output");
    uint64_t in_bytes, out_bytes;
    if (a_.bits == 0) {
      a_.dtype = get_float_dtype(o, "dtype");
      in_bytes = checked_mul(env, n / 2, dtype_size(a_.dtype), "values");
      out_bytes = checked_mul(env, n, dtype_size(a_.dtype), "output");
    } else {
      if (a_.bits != 4 && a_.bits != 8) throw_error(env, Code::Value, "bits must be 4 or 8");
      a_.group = get_int(o, "group");
      if (a_.group <= 0 || a_.cols % a_.group != 0) throw_error(env, Code::Shape, "the group size must divide the row length");
      in_bytes = checked_mul(env, checked_mul(env, u(a_.rows), (checked_mul(env, u(a_.cols / 2), u(a_.bits), "values") + 31) / 32, "values"), 4, "values");
      out_bytes = checked_mul(env, checked_mul(env, u(a_.rows), (checked_mul(env, u(a_.cols), u(a_.bits), "output") + 31) / 32, "output"), 4, "output");
      a_.zeros = static_cast<const int8_t*>(pin_optional(env, o.Get("zeros"), "zeros", checked_mul(env, u(a_.rows), u(a_.cols / a_.group), "zeros")));
    }
    a_.values = pin(env, o.Get("values"), "values", in_bytes);
    a_.meta_word_bytes = static_cast<int>(get_int(o, "metaWordBytes"));
    if (a_.meta_word_bytes != 2 && a_.meta_word_bytes != 4) throw_error(env, Code::Value, "metaWordBytes must be 2 or 4");
    a_.meta = static_cast<const uint8_t*>(pin_optional(env, o.Get("meta"), "meta", checked_mul(env, u(a_.rows), u(meta_row_bytes(a_.cols, a_.meta_word_bytes)), "meta")));
    a_.mask = static_cast<const uint8_t*>(pin_optional(env, o.Get("mask"), "bitmask", checked_mul(env, u(a_.rows), u(bitmask_row_bytes(a_.cols)), "bitmask")));
    const bool meta_given = !o.Get("meta").IsNull() && !o.Get("meta").IsUndefined();
    const bool mask_given = !o.Get("mask").IsNull() && !o.Get("mask").IsUndefined();
    if (!meta_given && !mask_given) throw_error(env, Code::Value, "decompress24 needs the meta or the bitmask");
    a_.out = pin_output(env, o.Get("out"), "output", out_bytes);
  }
  Status run() override { return sparse_expand(a_); }

 private:
  ExpandArgs a_;
};

class SpmmJob : public Job {
 public:
  SpmmJob(Napi::Env env, const Napi::Object& o) {
    a_.rows = get_int(o, "rows");
    a_.cols = get_int(o, "cols");
    a_.n = get_int(o, "n");
    a_.dtype = get_float_dtype(o, "dtype");
    a_.trans_x = get_bool(o, "transX");
    a_.accumulate = get_bool(o, "accumulate");
    a_.kernel = get_kernel(o);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    check_dims(env, a_.rows, a_.cols);
    if (a_.n < 0) throw_error(env, Code::Shape, "negative dimension");
    const uint64_t nv = checked_mul(env, u(a_.rows), u(a_.cols / 2), "values");
    a_.values = pin(env, o.Get("values"), "values", checked_mul(env, nv, dtype_size(a_.dtype), "values"));
    a_.meta = static_cast<const uint8_t*>(pin(env, o.Get("meta"), "meta", checked_mul(env, u(a_.rows), u(meta_row_bytes(a_.cols, 2)), "meta")));
    a_.x = static_cast<const float*>(pin(env, o.Get("x"), "x", checked_mul(env, checked_mul(env, u(a_.cols), u(a_.n), "x"), 4, "x")));
    const uint64_t yb = checked_mul(env, checked_mul(env, u(a_.rows), u(a_.n), "output"), 4, "output");
    a_.y = static_cast<float*>(a_.accumulate ? pin_inout(env, o.Get("out"), "output", yb) : pin_output(env, o.Get("out"), "output", yb));
  }
  Status run() override { return spmm24(a_); }

 private:
  Spmm24Args a_;
};

class UnstructuredJob : public Job {
 public:
  UnstructuredJob(Napi::Env env, const Napi::Object& o) {
    Napi::Value tv = o.Get("tensors");
    if (!tv.IsArray()) throw_error(env, Code::Internal, "tensors must be an array");
    Napi::Array ts = tv.As<Napi::Array>();
    a_.global = get_bool(o, "global");
    a_.threads = static_cast<int>(get_int(o, "threads"));
    Napi::Value kv = o.Get("k");
    if (!kv.IsArray()) throw_error(env, Code::Internal, "k must be an array");
    Napi::Array ks = kv.As<Napi::Array>();
    for (uint32_t i = 0; i < ks.Length(); ++i) {
      Napi::Value v = ks.Get(i);
      if (!v.IsNumber()) throw_error(env, Code::Internal, "k must hold numbers");
      a_.k.push_back(static_cast<int64_t>(v.As<Napi::Number>().Int64Value()));
    }
    for (uint32_t i = 0; i < ts.Length(); ++i) {
      Napi::Value tvi = ts.Get(i);
      if (!tvi.IsObject()) throw_error(env, Code::Internal, "tensors[i] must be an object");
      Napi::Object t = tvi.As<Napi::Object>();
      MatrixView m;
      m.dtype = get_float_dtype(t, "dtype");
      m.rows = get_int(t, "rows");
      m.cols = get_int(t, "cols");
      if (m.rows < 0 || m.cols < 0) throw_error(env, Code::Shape, "negative dimension");
      const std::string what = "tensors[" + std::to_string(i) + "]";
      const uint64_t bytes = checked_mul(env, checked_mul(env, u(m.rows), u(m.cols), what.c_str()), dtype_size(m.dtype), what.c_str());
      m.data = pin(env, t.Get("src"), what.c_str(), bytes);
      a_.src.push_back(m);
      a_.dense.push_back(pin_output(env, t.Get("dense"), "output", bytes));
      Napi::Value mv = t.Get("mask");
      a_.mask.push_back(mv.IsNull() || mv.IsUndefined() ? nullptr
                                                        : static_cast<uint8_t*>(pin_output(env, mv, "mask", checked_mul(env, u(m.rows), u(bitmask_row_bytes(m.cols)), "mask"))));
    }
    if (a_.k.size() != (a_.global ? size_t{1} : a_.src.size())) throw_error(env, Code::Internal, "one count per selection");
  }
  Status run() override { return prune_unstructured(&a_); }
  Napi::Value result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    Napi::Array th = Napi::Array::New(env, a_.src.size()), pr = Napi::Array::New(env, a_.src.size());
    for (size_t i = 0; i < a_.src.size(); ++i) {
      float f;
      std::memcpy(&f, &a_.threshold_bits[i], 4);
      th.Set(static_cast<uint32_t>(i), Napi::Number::New(env, f));
      pr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(a_.pruned[i])));
    }
    r.Set("thresholds", th);
    r.Set("pruned", pr);
    return r;
  }

 private:
  UnstructuredArgs a_;
};

Napi::Value spmm24_kernel_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t v = info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : 0;
  if (v < 0 || v > 4) throw_error(env, Code::Value, "unknown kernel code");
  return Napi::String::New(env, spmm24_kernel_name(static_cast<Kernel>(v)));
}

}  // namespace

void register_sparse(Napi::Env env, Napi::Object exports) {
  exports.Set("sparseSelect", Napi::Function::New(env, run_job<SelectJob>, "sparseSelect"));
  exports.Set("sparseSelectQuant", Napi::Function::New(env, run_job<QuantSelectJob>, "sparseSelectQuant"));
  exports.Set("sparseExpand", Napi::Function::New(env, run_job<ExpandJob>, "sparseExpand"));
  exports.Set("spmm24", Napi::Function::New(env, run_job<SpmmJob>, "spmm24"));
  exports.Set("pruneUnstructured", Napi::Function::New(env, run_job<UnstructuredJob>, "pruneUnstructured"));
  exports.Set("spmm24Kernel", Napi::Function::New(env, spmm24_kernel_js, "spmm24Kernel"));
}

}  // namespace addon
}  // namespace st
