// matmul / svd / lowRank: argument objects -> core structs (the lowrank room).
//
// matmul writes into a Float32Array lib/ allocated (its size is known).
// svd and lowRank return new typed arrays created in result() on the main
// thread and filled from the core's vectors: their sizes (the rank chosen
// by an energy rule) are only known once the spectrum is, and the copy is
// (m + n)·r floats next to an O(m·n·r) factorization. They are ordinary
// V8-allocated arrays, not external buffers. Given the caller's factor
// buffers (`out`, when the rank is known up front), run() copies the
// factors there instead, off the main thread, and result() makes none.
#include <cstring>

#include "../core/cpu.h"
#include "../core/lowrank/gemm.h"
#include "../core/lowrank/lowrank.h"
#include "../core/lowrank/lowrank_cuda.h"
#include "job.h"

namespace st {
namespace addon {

namespace {

DType get_dtype(const Napi::Object& o, const char* key) {
  const int64_t v = get_int(o, key);
  if (v < 0 || v > 6) throw_error(o.Env(), Code::DType, std::string("unknown dtype code for ") + key);
  const DType t = static_cast<DType>(v);
  if (!is_float_dtype(t)) throw_error(o.Env(), Code::DType, std::string(key) + " must be f32, f16 or bf16, got " + dtype_name(t));
  return t;
}

GemmKernel get_kernel(const Napi::Object& o) {
  const int64_t v = get_int(o, "kernel");
  if (v < 0 || v > 4) throw_error(o.Env(), Code::Value, "unknown kernel code");
  return static_cast<GemmKernel>(v);
}

// A matrix argument: data + dtype + rows + cols, pinned.
MatrixView get_matrix(Napi::Env env, Job* job, const Napi::Object& o, const char* prefix, const char* what) {
  const std::string p(prefix);
  MatrixView m;
  m.dtype = get_dtype(o, (p + "Dtype").c_str());
  m.rows = get_int(o, (p + "Rows").c_str());
  m.cols = get_int(o, (p + "Cols").c_str());
  if (m.rows < 0 || m.cols < 0) throw_error(env, Code::Shape, std::string(what) + ": negative dimension");
  const uint64_t n = checked_mul(env, static_cast<uint64_t>(m.rows), static_cast<uint64_t>(m.cols), what);
  m.data = job->pin(env, o.Get(prefix), what, checked_mul(env, n, dtype_size(m.dtype), what));
  return m;
}

Napi::Float32Array f32_array(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
}

Napi::Float64Array f64_array(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(double));
  return a;
}

// A factor the caller gave a buffer for: pinned as an output of exactly
// rows x cols floats (null when the caller gave none).
float* factor_output(Napi::Env env, Job* job, const Napi::Object& o, const char* key, const char* what, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) throw_error(env, Code::Shape, std::string(what) + ": negative dimension");
  const uint64_t n = checked_mul(env, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), what);
  return static_cast<float*>(job->pin_output_optional(env, o.Get(key), what, checked_mul(env, n, 4, what)));
}

// Moves a computed factor into the caller's buffer: it must have exactly the
// size that buffer was pinned for (a rank rule that disagrees with lib/'s is
// a bug, reported rather than written short or long).
Status deliver(std::vector<float>* v, float* out, int64_t rows, int64_t cols, const char* what) {
  if (!out) return Status::Ok();
  if (v->size() != static_cast<size_t>(rows * cols)) {
    return Status::Error(Code::Internal, std::string(what) + " has " + std::to_string(v->size()) + " values; options.out holds " + std::to_string(rows * cols));
  }
  if (!v->empty()) std::memcpy(out, v->data(), v->size() * sizeof(float));
  std::vector<float>().swap(*v);
  return Status::Ok();
}

class MatmulJob : public Job {
 public:
  MatmulJob(Napi::Env env, const Napi::Object& o) {
    const MatrixView a = get_matrix(env, this, o, "a", "A");
    const MatrixView b = get_matrix(env, this, o, "b", "B");
    g_.a = {a.data, a.dtype, std::max<int64_t>(a.cols, 1), get_bool(o, "transA")};
    g_.b = {b.data, b.dtype, std::max<int64_t>(b.cols, 1), get_bool(o, "transB")};
    g_.m = g_.a.trans ? a.cols : a.rows;
    g_.k = g_.a.trans ? a.rows : a.cols;
    g_.n = g_.b.trans ? b.rows : b.cols;
    const int64_t kb = g_.b.trans ? b.cols : b.rows;
    if (kb != g_.k) {
      throw_error(env, Code::Shape, "inner dimensions differ: op(A) has " + std::to_string(g_.k) + " columns, op(B) " +
                                        std::to_string(kb) + " rows");
    }
    g_.accumulate = get_bool(o, "accumulate");
    g_.kernel = get_kernel(o);
    g_.threads = static_cast<int>(get_int(o, "threads"));
    g_.ldc = std::max<int64_t>(g_.n, 1);
    const uint64_t cn = checked_mul(env, static_cast<uint64_t>(g_.m), static_cast<uint64_t>(g_.n), "output");
    const uint64_t bytes = checked_mul(env, cn, 4, "output");
    g_.c = static_cast<float*>(g_.accumulate ? pin_inout(env, o.Get("out"), "output", bytes) : pin_output(env, o.Get("out"), "output", bytes));
  }
  Status run() override { return gemm(g_); }

 private:
  GemmArgs g_;
};

class SvdJob : public Job {
 public:
  SvdJob(Napi::Env env, const Napi::Object& o) {
    a_.a = get_matrix(env, this, o, "a", "input");
    a_.k = get_int(o, "k");
    a_.kernel = get_kernel(o);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    u_ = factor_output(env, this, o, "outU", "options.out.u", a_.a.rows, a_.k);
    vt_ = factor_output(env, this, o, "outVt", "options.out.vt", a_.k, a_.a.cols);
  }
  Status run() override {
    Status st = exact_svd(a_, &r_);
    if (st.ok()) st = deliver(&r_.u, u_, a_.a.rows, a_.k, "u");
    if (st.ok()) st = deliver(&r_.vt, vt_, a_.k, a_.a.cols, "vt");
    return st;
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("k", static_cast<double>(r_.k));
    if (!u_) out.Set("u", f32_array(env, r_.u));
    out.Set("s", f64_array(env, r_.s));
    if (!vt_) out.Set("vt", f32_array(env, r_.vt));
    out.Set("cuda", r_.cuda);
    return out;
  }

 private:
  SvdArgs a_;
  SvdResult r_;
  float* u_ = nullptr;
  float* vt_ = nullptr;
};

class LowRankJob : public Job {
 public:
  LowRankJob(Napi::Env env, const Napi::Object& o) {
    a_.w = get_matrix(env, this, o, "w", "input");
    const int64_t rule = get_int(o, "rule");
    if (rule < 0 || rule > 2) throw_error(env, Code::Value, "unknown rank rule code");
    a_.rule = static_cast<RankRule>(rule);
    a_.rank = get_int(o, "rank");
    a_.energy = get_double(o, "energy");
    a_.ratio = get_double(o, "ratio");
    const int64_t method = get_int(o, "method");
    if (method < 0 || method > 2) throw_error(env, Code::Value, "unknown method code");
    a_.method = static_cast<LrMethod>(method);
    a_.oversample = get_int(o, "oversample");
    a_.power_iters = get_int(o, "powerIters");
    const int64_t seed = get_int(o, "seed");
    if (seed < 0) throw_error(env, Code::Value, "seed must be >= 0");
    a_.seed = static_cast<uint64_t>(seed);
    const int64_t whiten = get_int(o, "whiten");
    if (whiten < 0 || whiten > 2) throw_error(env, Code::Value, "unknown whitening code");
    a_.whiten = static_cast<Whiten>(whiten);
    const uint64_t n = static_cast<uint64_t>(a_.w.cols);
    if (a_.whiten == Whiten::Gram) {
      a_.gram = static_cast<const float*>(pin(env, o.Get("gram"), "whiten.gram", checked_mul(env, checked_mul(env, n, n, "whiten.gram"), 4, "whiten.gram")));
    } else if (a_.whiten == Whiten::Scale) {
      a_.scale = static_cast<const float*>(pin(env, o.Get("scale"), "whiten.activationScale", checked_mul(env, n, 4, "whiten.activationScale")));
    }
    a_.kernel = get_kernel(o);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    out_rank_ = get_int(o, "outRank");
    left_ = factor_output(env, this, o, "outLeft", "options.out.left", a_.w.rows, out_rank_);
    right_ = factor_output(env, this, o, "outRight", "options.out.right", out_rank_, a_.w.cols);
  }
  Status run() override {
    Status st = low_rank(a_, &r_);
    if (st.ok()) st = deliver(&r_.left, left_, a_.w.rows, out_rank_, "left");
    if (st.ok()) st = deliver(&r_.right, right_, out_rank_, a_.w.cols, "right");
    return st;
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("rank", static_cast<double>(r_.rank));
    if (!left_) out.Set("left", f32_array(env, r_.left));
    if (!right_) out.Set("right", f32_array(env, r_.right));
    out.Set("singularValues", f64_array(env, r_.sigma));
    out.Set("relError", r_.rel_error);
    out.Set("optimalRelError", r_.optimal_rel_error);
    out.Set("method", r_.method == LrMethod::Randomized ? "randomized" : "exact");
    out.Set("backend", r_.cuda ? "cuda" : "cpu");
    out.Set("samples", static_cast<double>(r_.samples));
    out.Set("damping", r_.damping);
    return out;
  }

 private:
  LowRankArgs a_;
  LowRankResult r_;
  int64_t out_rank_ = 0;  // the rank lib/ sized options.out for (0: no out)
  float* left_ = nullptr;
  float* right_ = nullptr;
};

// The benchmark's probes (synchronous: they are timed).
Napi::Value probe_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!info[0].IsNumber()) throw_error(env, Code::Value, "lowrankProbe(iterations) takes a number");
    const int64_t iters = info[0].As<Napi::Number>().Int64Value();
    if (iters < 1 || iters > (int64_t{1} << 40)) throw_error(env, Code::Value, "iterations must be in 1..2^40");
    const PeakProbe p = probe_peak(iters);
    Napi::Object r = Napi::Object::New(env);
    r.Set("addSeconds", p.add_seconds);
    r.Set("fma256Seconds", p.fma256_seconds);
    r.Set("fma512Seconds", p.fma512_seconds);
    r.Set("gemmKernel", gemm_kernel_name(GemmKernel::Auto));
    return r;
  });
}

}  // namespace

// backends().cuda.cusolver: whether the GPU SVD can run, and why not.
void lowrank_backends(Napi::Env env, Napi::Object cuda) {
  std::string why, library;
  const bool ok = cusolver_available(&why, &library);
  Napi::Object s = Napi::Object::New(env);
  s.Set("available", ok);
  if (ok) s.Set("library", library);
  else s.Set("reason", why);
  cuda.Set("cusolver", s);
}

void register_lowrank(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, run_job<MatmulJob>, "matmul"));
  exports.Set("svd", Napi::Function::New(env, run_job<SvdJob>, "svd"));
  exports.Set("lowRank", Napi::Function::New(env, run_job<LowRankJob>, "lowRank"));
  exports.Set("lowrankProbe", Napi::Function::New(env, probe_js, "lowrankProbe"));
}

}  // namespace addon
}  // namespace st
