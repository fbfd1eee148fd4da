// Native tests of the runtime core, built with AddressSanitizer and
// UndefinedBehaviorSanitizer by scripts/native-test.cjs and run under each
// SLIMTENSOR_ISA: the thread team's barriers; every weight format's matmul
// on every kernel set against a double-precision product of the
// dequantized weights (outputs poisoned first, so an unwritten one shows);
// a tiny model loaded from a file and run on each kernel set (same logits
// within float tolerance, one-pass and cached continuations equal); the
// errors (shapes, byte sizes, a file changed after planning, tokens,
// positions, the context, cancellation); perplexity/KL scoring of logits.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "model/matmul.h"
#include "model/model.h"
#include "model/team.h"
#include "numeric.h"
#include "quant/quant.h"
#include "sparse/sparse.h"

using namespace st;
using namespace st::model;

namespace {

using st::test::check;
using st::test::check_error;


// The kernel sets this run can use; each one it cannot is a counted skip (once).
const std::vector<Kernel>& kernel_sets() {
  static const std::vector<Kernel> sets = [] {
    std::vector<Kernel> k{Kernel::Reference};
    if (st::test::isa_usable(st::test::Isa::Avx2, "the runtime's AVX2 kernel set")) k.push_back(Kernel::Avx2);
    if (st::test::isa_usable(st::test::Isa::Avx512, "the runtime's AVX-512 kernel set")) {
      if (cpu_enabled().avx512vnni) k.push_back(Kernel::Avx512);
      else st::test::skip("the runtime's AVX-512 kernel set", "this CPU has no AVX-512 VNNI");
    }
    return k;
  }();
  return sets;
}

const char* kname(Kernel k) { return k == Kernel::Reference ? "reference" : k == Kernel::Avx2 ? "avx2" : "avx512"; }

void test_team() {
  for (int n : {1, 2, 3, 5}) {
    Team team(n);
    std::vector<int64_t> slots(static_cast<size_t>(n), 0);
    std::atomic<int64_t> total{0};
    bool ordered = true;
    for (int run = 0; run < 50; ++run) {
      team.run([&](int ith) {
        for (int step = 0; step < 20; ++step) {
          slots[static_cast<size_t>(ith)] += 1;
          total.fetch_add(1);
          team.barrier();
          // After the barrier every thread has finished the step.
          for (int64_t v : slots) ordered = ordered && v >= slots[static_cast<size_t>(ith)];
          team.barrier();
        }
      });
    }
    check(total.load() == int64_t{50} * 20 * n && ordered, "team of " + std::to_string(n) + ": every step of every run, barriers in order");
  }
}

// ---- one linear layer -----------------------------------------------------------

struct Built {
  Weight w;
  std::vector<uint8_t> data, scales, meta;
  std::vector<int8_t> zeros;
  std::vector<float> deq;  // [rows, cols]
};

Built quantized(QFormat f, WFormat wf, const std::vector<float>& src, int64_t rows, int64_t cols, int64_t group, bool symmetric) {
  Built b;
  QuantizeArgs q;
  q.src = MatrixView{src.data(), DType::F32, rows, cols};
  q.format = f;
  q.group = group;
  q.symmetric = symmetric;
  q.scale_dtype = DType::F16;
  const QuantSizes sz = quant_sizes(f, cols, group);
  b.data.assign(static_cast<size_t>(rows * sz.data_row_bytes), 0);
  q.data = b.data.data();
  if (f == QFormat::Int4 || f == QFormat::Int8) {
    b.scales.assign(static_cast<size_t>(rows * sz.groups_per_row * 2), 0);
    q.scales = b.scales.data();
    if (!symmetric) {
      b.zeros.assign(static_cast<size_t>(rows * sz.groups_per_row), 0);
      q.zeros = b.zeros.data();
    }
  }
  check(quantize(q).ok(), "quantize");
  DequantizeArgs d;
  d.format = f;
  d.rows = rows;
  d.cols = cols;
  d.group = group;
  d.data = b.data.data();
  d.scales = q.scales;
  d.scale_dtype = DType::F16;
  d.zeros = q.zeros;
  b.deq.assign(static_cast<size_t>(rows * cols), 0.0f);
  check(dequantize(d, b.deq.data(), DType::F32).ok(), "dequantize");
  b.w.format = wf;
  b.w.rows = rows;
  b.w.cols = cols;
  b.w.data = b.data.data();
  b.w.row_bytes = sz.data_row_bytes;
  b.w.group = group;
  b.w.scales = b.scales.empty() ? nullptr : b.scales.data();
  b.w.scale_dtype = DType::F16;
  b.w.zeros = b.zeros.empty() ? nullptr : b.zeros.data();
  return b;
}

// Every case on every kernel set, f32 and 8-bit activations, against a
// double product of its dequantized weights.
void check_linear_cases(std::vector<Built>& cases, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> N(0.0f, 1.0f);
  for (const int64_t n : {int64_t{1}, int64_t{6}, int64_t{11}}) {  // 11: the prompt path (panel), with a tail of 3
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (float& v : x) v = N(rng);
    for (Built& c : cases) {
      c.w.data = c.data.data();  // (the vectors moved)
      if (!c.scales.empty()) c.w.scales = c.scales.data();
      if (!c.zeros.empty()) c.w.zeros = c.zeros.data();
      const std::string what = std::string(format_info(c.w.format).name) + (c.w.zeros ? " asym" : "") + " n=" + std::to_string(n);
      std::vector<double> exact(static_cast<size_t>(n * rows)), mag(exact.size());
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          double s = 0, a = 0;
          for (int64_t k = 0; k < cols; ++k) {
            const double p = static_cast<double>(c.deq[static_cast<size_t>(r * cols + k)]) * x[static_cast<size_t>(t * cols + k)];
            s += p;
            a += std::fabs(p);
          }
          exact[static_cast<size_t>(t * rows + r)] = s;
          mag[static_cast<size_t>(t * rows + r)] = a;
        }
      }
      for (ActMode act : {ActMode::F32, ActMode::Auto}) {
        std::vector<float> ref;
        for (Kernel k : kernel_sets()) {
          std::vector<float> y(static_cast<size_t>(n * rows), NAN);
          check(linear(c.w, x.data(), n, k, act, 2, y.data()).ok(), what + " " + kname(k));
          const bool q8 = act == ActMode::Auto && q8_layout_ok(c.w);
          // f32: rounding of the sums only; 8-bit activations: |x - x̂| <= max|x_b| / 254 per element.
          const double tol = q8 ? 0.02 : 2e-6;
          double worst = 0;
          for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - exact[i]) / mag[i]);
          check(std::isfinite(worst) && worst <= tol, what + " " + kname(k) + (q8 ? " q8" : " f32") + ": relative error " + std::to_string(worst));
          if (ref.empty()) {
            ref = y;
          } else {
            double d = 0;
            for (size_t i = 0; i < y.size(); ++i) d = std::max(d, std::fabs(y[i] - ref[i]) / mag[i]);
            check(d <= 2e-6, what + " " + kname(k) + ": against the reference " + std::to_string(d));
          }
        }
      }
    }
  }
}

void test_linear() {
  std::mt19937 rng(7);
  std::normal_distribution<float> N(0.0f, 1.0f);
  {
    const int64_t rows = 37, cols = 224;  // 7 blocks: an odd tail; rows not a multiple of 4
    std::vector<float> src(static_cast<size_t>(rows * cols));
    for (float& v : src) v = N(rng);
    std::vector<Built> cases;
    cases.push_back(quantized(QFormat::Q4_0, WFormat::Q4_0, src, rows, cols, 32, true));
    cases.push_back(quantized(QFormat::Q4_1, WFormat::Q4_1, src, rows, cols, 32, true));
    cases.push_back(quantized(QFormat::Q8_0, WFormat::Q8_0, src, rows, cols, 32, true));
    cases.push_back(quantized(QFormat::Int4, WFormat::Int4, src, rows, cols, 32, true));
    cases.push_back(quantized(QFormat::Int4, WFormat::Int4, src, rows, cols, 32, false));
    cases.push_back(quantized(QFormat::Int8, WFormat::Int8, src, rows, cols, 224, true));
    {
      Built f16;
      f16.data.resize(static_cast<size_t>(rows * cols * 2));
      f16.deq.resize(src.size());
      for (size_t i = 0; i < src.size(); ++i) {
        const uint16_t h = f32_to_f16(src[i]);
        std::memcpy(f16.data.data() + 2 * i, &h, 2);
        f16.deq[i] = f16_to_f32(h);
      }
      f16.w.format = WFormat::F16;
      f16.w.rows = rows;
      f16.w.cols = cols;
      f16.w.data = f16.data.data();
      f16.w.row_bytes = cols * 2;
      cases.push_back(std::move(f16));
    }
    check_linear_cases(cases, rows, cols, rng);
  }
  {
    // The formats read through the quant room's dequantization: rows of two
    // K-quant super-blocks, 37 rows (the 16-row tiles' tail).
    const int64_t rows = 37, cols = 512;
    std::vector<float> src(static_cast<size_t>(rows * cols));
    for (float& v : src) v = N(rng);
    std::vector<Built> cases;
    const std::pair<QFormat, WFormat> formats[] = {{QFormat::Q5_0, WFormat::Q5_0}, {QFormat::Q5_1, WFormat::Q5_1}, {QFormat::Q2_K, WFormat::Q2_K},
                                                   {QFormat::Q3_K, WFormat::Q3_K}, {QFormat::Q4_K, WFormat::Q4_K}, {QFormat::Q5_K, WFormat::Q5_K},
                                                   {QFormat::Q6_K, WFormat::Q6_K}};
    for (const auto& f : formats) {
      cases.push_back(quantized(f.first, f.second, src, rows, cols, 32, true));
      check(cases.back().w.row_bytes == stored_row_bytes(f.second, cols, DType::F32), std::string(format_info(f.second).name) + ": stored row bytes");
      check(!q8_layout_ok(cases.back().w), std::string(format_info(f.second).name) + ": f32 activations only");
    }
    check_linear_cases(cases, rows, cols, rng);
    std::vector<float> x(static_cast<size_t>(cols), 1.0f), y(static_cast<size_t>(rows));
    check_error(linear(cases.back().w, x.data(), 1, Kernel::Cuda, ActMode::Auto, 1, y.data()), Code::Unsupported, "no CUDA kernel", "q6_k on CUDA");
  }
}

// ---- a tiny model from a file ----------------------------------------------------

struct TinyFile {
  std::string path;
  std::vector<TensorSpec> specs;
  Config cfg;
  int64_t size = 0;
};

TinyFile write_tiny() {
  TinyFile f;
  Config& c = f.cfg;
  c.vocab = 40;
  c.embd = 64;
  c.layers = 2;
  c.heads = 4;
  c.heads_kv = 2;
  c.head_dim = 16;
  c.ff = 96;
  c.ctx_train = 32;
  c.rope = RopeStyle::Normal;
  c.rope_dims = 16;
  c.rope_base = 10000;
  c.eps = 1e-5f;
  char name[] = "/tmp/slimtensor-model-core-XXXXXX";
  const int fd = mkstemp(name);
  f.path = name;
  std::mt19937 rng(3);
  std::normal_distribution<float> N(0.0f, 0.3f);
  int64_t at = 0;
  auto add = [&](const std::string& tname, Slot slot, int64_t layer, int64_t rows, int64_t cols, bool norm) {
    std::vector<float> v(static_cast<size_t>(rows * cols));
    for (float& x : v) x = norm ? 1.0f + N(rng) * 0.1f : N(rng);
    check(write(fd, v.data(), v.size() * 4) == static_cast<ssize_t>(v.size() * 4), "write");
    TensorSpec t;
    t.name = tname;
    t.slot = slot;
    t.layer = layer;
    t.format = WFormat::F32;
    t.rows = rows;
    t.cols = cols;
    t.data = Part{0, at, rows * cols * 4};
    at += rows * cols * 4;
    f.specs.push_back(t);
  };
  add("token_embd.weight", Slot::TokenEmbd, -1, c.vocab, c.embd, false);
  add("output_norm.weight", Slot::OutputNorm, -1, 1, c.embd, true);
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", Slot::AttnNorm, l, 1, c.embd, true);
    add(p + "attn_q.weight", Slot::Q, l, 64, 64, false);
    add(p + "attn_k.weight", Slot::K, l, 32, 64, false);
    add(p + "attn_v.weight", Slot::V, l, 32, 64, false);
    add(p + "attn_output.weight", Slot::O, l, 64, 64, false);
    add(p + "ffn_norm.weight", Slot::FfnNorm, l, 1, c.embd, true);
    add(p + "ffn_gate.weight", Slot::Gate, l, 96, 64, false);
    add(p + "ffn_up.weight", Slot::Up, l, 96, 64, false);
    add(p + "ffn_down.weight", Slot::Down, l, 64, 96, false);
  }
  close(fd);
  f.size = at;
  return f;
}

std::vector<FileSpec> files_of(const TinyFile& f) {
  struct stat st;
  stat(f.path.c_str(), &st);
  return {FileSpec{f.path, static_cast<int64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                   static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_dev)}};
}

void test_model() {
  TinyFile f = write_tiny();
  const std::vector<int32_t> tokens{1, 7, 39, 0, 22, 13, 5, 30};
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<float> ref;
  for (Kernel k : kernel_sets()) {
    for (int threads : {1, 3}) {
      Options o;
      o.ctx = 16;
      o.batch = 8;
      o.threads = threads;
      o.kernel = k;
      std::unique_ptr<Model> m;
      Status s = Model::create(f.cfg, o, files_of(f), f.specs, nullptr, &m);
      check(s.ok(), std::string("create ") + kname(k) + ": " + s.message);
      if (!s.ok()) continue;
      std::vector<float> all(static_cast<size_t>(n * f.cfg.vocab), NAN);
      check(m->forward(tokens.data(), n, 0, true, all.data()).ok(), "forward");
      // The same tokens in two steps through the cache.
      std::vector<float> head(static_cast<size_t>(3 * f.cfg.vocab)), tail(static_cast<size_t>((n - 3) * f.cfg.vocab), NAN);
      check(m->forward(tokens.data(), 3, 0, true, head.data()).ok(), "forward head");
      check(m->forward(tokens.data() + 3, n - 3, 3, true, tail.data()).ok(), "forward tail");
      double d = 0;
      for (size_t i = 0; i < tail.size(); ++i) d = std::max(d, static_cast<double>(std::fabs(tail[i] - all[static_cast<size_t>(3 * f.cfg.vocab) + i])));
      check(d < 1e-4, std::string(kname(k)) + ": cached continuation equals one pass (" + std::to_string(d) + ")");
      bool finite = true;
      for (float v : all) finite = finite && std::isfinite(v);
      check(finite, "every logit written");
      if (ref.empty()) {
        ref = all;
      } else {
        double e = 0;
        for (size_t i = 0; i < all.size(); ++i) e = std::max(e, static_cast<double>(std::fabs(all[i] - ref[i])));
        check(e < 1e-3, std::string(kname(k)) + " threads " + std::to_string(threads) + ": logits against the first set (" + std::to_string(e) + ")");
      }
      // Errors of a step.
      std::vector<float> one(static_cast<size_t>(f.cfg.vocab));
      const int32_t bad = 40;
      check_error(m->forward(&bad, 1, 0, false, one.data()), Code::Value, "outside the vocabulary", "token out of range");
      check_error(m->forward(tokens.data(), 1, 9, false, one.data()), Code::Value, "past the", "position past the cache");
      std::vector<int32_t> many(20, 1);
      check(m->forward(many.data(), 8, 0, false, one.data()).ok() && m->forward(many.data(), 8, 8, false, one.data()).ok() && m->filled() == 16, "fill the context");
      check_error(m->forward(many.data(), 1, 16, false, one.data()), Code::Value, "do not fit the context of 16", "beyond the context");
      check_error(m->forward(many.data(), 9, 0, false, one.data()), Code::Value, "batch size", "more than a batch");
      check_error(m->layers(0, 1, nullptr), Code::Value, "no forward step", "layers without begin");
    }
  }
  // Cancellation stops at the next block.
  {
    std::atomic<bool> cancel{false};
    Options o;
    o.ctx = 16;
    o.batch = 8;
    std::unique_ptr<Model> m;
    check(Model::create(f.cfg, o, files_of(f), f.specs, &cancel, &m).ok(), "create");
    cancel.store(true);
    std::vector<float> one(static_cast<size_t>(f.cfg.vocab));
    check_error(m->forward(tokens.data(), 2, 0, false, one.data()), Code::Value, "aborted", "cancelled");
    check(m->filled() == 0, "an aborted step fills nothing");
    cancel.store(false);
    check(m->forward(tokens.data(), 2, 0, false, one.data()).ok() && m->filled() == 2, "usable after an abort");
    cancel.store(true);
    std::unique_ptr<Model> m2;
    check_error(Model::create(f.cfg, o, files_of(f), f.specs, &cancel, &m2), Code::Value, "aborted", "load cancelled");
  }
  // Blocks alone (a sequential pass): block 0 with the embedding, then
  // block 1 from block 0's hidden states, give the whole model's hidden
  // states after block 1 (the same float operations: bit for bit).
  {
    Options o;
    o.ctx = 16;
    o.batch = 8;
    const int64_t D = f.cfg.embd;
    std::unique_ptr<Model> whole;
    check(Model::create(f.cfg, o, files_of(f), f.specs, nullptr, &whole).ok(), "create whole");
    std::vector<float> want(static_cast<size_t>(n * D), NAN), logits(static_cast<size_t>(f.cfg.vocab));
    check(whole->begin(tokens.data(), n, 0).ok() && whole->layers(0, 2, nullptr).ok() && whole->finish(false, logits.data(), nullptr, want.data()).ok(), "whole: hidden states out");
    o.blocks_only = true;
    Config c1 = f.cfg;
    c1.layers = 1;
    std::vector<TensorSpec> b0, b1;
    for (const TensorSpec& t : f.specs) {
      if (t.slot == Slot::TokenEmbd || t.layer == 0) b0.push_back(t);
      if (t.layer == 1) {
        b1.push_back(t);
        b1.back().layer = 0;
      }
    }
    std::unique_ptr<Model> m0, m1;
    check(Model::create(c1, o, files_of(f), b0, nullptr, &m0).ok(), "create block 0 with the embedding");
    check(Model::create(c1, o, files_of(f), b1, nullptr, &m1).ok(), "create block 1 alone");
    std::vector<float> h0(static_cast<size_t>(n * D), NAN), h1(static_cast<size_t>(n * D), NAN);
    check(m0->begin(tokens.data(), n, 0).ok() && m0->layers(0, 1, nullptr).ok() && m0->finish(false, nullptr, nullptr, h0.data()).ok(), "block 0");
    check(m1->begin_hidden(h0.data(), n, 0).ok() && m1->layers(0, 1, nullptr).ok() && m1->finish(false, nullptr, nullptr, h1.data()).ok(), "block 1 from hidden states");
    check(std::memcmp(h1.data(), want.data(), h1.size() * 4) == 0, "blocks alone equal the whole model bit for bit");
    check(m1->describe().size() == 7, "a blocks-only model lists its 7 linears, no head");
    check_error(m1->begin(tokens.data(), 1, 0), Code::Value, "holds no token embedding", "tokens into a block without the embedding");
    check(m1->begin_hidden(h0.data(), 1, 0).ok() && m1->layers(0, 1, nullptr).ok(), "step");
    check_error(m1->finish(false, logits.data(), nullptr, nullptr), Code::Value, "has no head", "logits from a blocks-only model");
    std::vector<float> bad(h0.begin(), h0.begin() + D);
    bad[5] = INFINITY;
    check_error(m1->begin_hidden(bad.data(), 1, 0), Code::Value, "hidden state 0, value 5 is NaN or infinite", "non-finite hidden states");
    std::vector<TensorSpec> with_head = b1;
    with_head.push_back(f.specs[1]);  // output_norm.weight
    std::unique_ptr<Model> m2;
    check_error(Model::create(c1, o, files_of(f), with_head, nullptr, &m2), Code::Format, "takes no output norm or head", "a head in a blocks-only model");
  }
  // Load errors.
  Options o;
  o.ctx = 16;
  std::unique_ptr<Model> m;
  {
    std::vector<TensorSpec> s = f.specs;
    s[3].rows = 32;  // blk.0.attn_q.weight
    s[3].data.bytes = 32 * 64 * 4;
    check_error(Model::create(f.cfg, o, files_of(f), s, nullptr, &m), Code::Shape, "blk.0.attn_q.weight' is [32, 64]", "a wrong shape");
  }
  {
    std::vector<TensorSpec> s = f.specs;
    s[3].data.bytes -= 4;
    check_error(Model::create(f.cfg, o, files_of(f), s, nullptr, &m), Code::Format, "holds", "bytes that do not fit the shape");
  }
  {
    std::vector<TensorSpec> s = f.specs;
    s.pop_back();
    check_error(Model::create(f.cfg, o, files_of(f), s, nullptr, &m), Code::Format, "missing tensors", "a missing tensor");
  }
  {
    std::vector<FileSpec> fs = files_of(f);
    fs[0].size += 1;
    check_error(Model::create(f.cfg, o, fs, f.specs, nullptr, &m), Code::Format, "changed", "a file changed after planning");
    fs = files_of(f);
    fs[0].ino += 1;  // another file renamed over it: same size and mtime, another inode
    check_error(Model::create(f.cfg, o, fs, f.specs, nullptr, &m), Code::Format, "replaced by another file", "a file replaced after planning");
    std::vector<TensorSpec> s = f.specs;
    s.back().data.offset = f.size;  // reads past the end
    check_error(Model::create(f.cfg, o, files_of(f), s, nullptr, &m), Code::Format, "lies outside", "data past the file's end");
  }
  {
    Config c = f.cfg;
    c.heads_kv = 3;
    check_error(Model::create(c, o, files_of(f), f.specs, nullptr, &m), Code::Value, "not a multiple of head_count_kv", "heads not a multiple of kv heads");
  }
  unlink(f.path.c_str());
}

// score_logits against a straightforward double computation: rows of very
// different scales (a row of equal logits, one far above the rest), an
// argmax tie (first index wins), targets out of range.
void test_score() {
  const int64_t rows = 5, vocab = 1000;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> lg(rows * vocab), base(rows * vocab);
  for (auto& v : lg) v = nd(rng);
  for (auto& v : base) v = nd(rng);
  for (int64_t i = 0; i < vocab; ++i) lg[1 * vocab + i] = 2.5f;  // uniform row
  lg[2 * vocab + 17] = 80.0f;                                     // one token dominates
  base[3 * vocab + 4] = base[3 * vocab + 9] = 50.0f;               // a tie: index 4 is the argmax
  lg[3 * vocab + 4] = 40.0f;
  std::vector<int32_t> targets{3, 999, 17, 9, 0};
  std::vector<double> nll(rows, -1), bnll(rows, -1), kl(rows, -1);
  std::vector<uint8_t> same(rows, 7);
  ScoreArgs a;
  a.logits = lg.data();
  a.base = base.data();
  a.rows = rows;
  a.vocab = vocab;
  a.targets = targets.data();
  a.nll = nll.data();
  a.base_nll = bnll.data();
  a.kl = kl.data();
  a.same_top = same.data();
  check(score_logits(a).ok(), "score: ok");
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = lg.data() + r * vocab;
    const float* b = base.data() + r * vocab;
    double zx = 0, zb = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      zx += std::exp(static_cast<double>(x[i]) - 100.0);
      zb += std::exp(static_cast<double>(b[i]) - 100.0);
    }
    const double lzx = 100.0 + std::log(zx), lzb = 100.0 + std::log(zb);
    double want_kl = 0;
    int64_t ax = 0, ab = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double pb = std::exp(b[i] - lzb);
      want_kl += pb * ((b[i] - lzb) - (x[i] - lzx));
      if (x[i] > x[ax]) ax = i;
      if (b[i] > b[ab]) ab = i;
    }
    const int32_t t = targets[static_cast<size_t>(r)];
    const std::string row = "score row " + std::to_string(r);
    check(std::fabs(nll[r] - (lzx - x[t])) < 1e-9 * std::max(1.0, std::fabs(nll[r])), row + " nll");
    check(std::fabs(bnll[r] - (lzb - b[t])) < 1e-9 * std::max(1.0, std::fabs(bnll[r])), row + " base nll");
    check(std::fabs(kl[r] - std::max(0.0, want_kl)) < 1e-9 * std::max(1.0, want_kl), row + " kl");
    check(same[r] == (ax == ab ? 1 : 0), row + " top-1");
  }
  check(std::fabs(nll[1] - std::log(1000.0)) < 1e-9, "score: a uniform row's nll is log(vocab)");
  check(same[3] == 1, "score: ties go to the first index");
  // without a base only nll is written
  std::vector<double> kl2(rows, -1);
  a.base = nullptr;
  a.kl = kl2.data();
  check(score_logits(a).ok() && kl2[0] == -1, "score: no base, no kl");
  targets[2] = 1000;
  check_error(score_logits(a), Code::Value, "target 2 is outside the vocabulary", "score: target out of range");
  targets[2] = -1;
  check_error(score_logits(a), Code::Value, "target 2", "score: negative target");
}

}  // namespace

int main() {
  test_team();
  test_linear();
  test_model();
  test_score();
  std::printf("model core kernels:");
  for (Kernel k : kernel_sets()) std::printf(" %s", kname(k));
  std::printf("\n");
  return st::test::finish("native model core");
}
