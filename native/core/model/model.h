// The runtime room: a llama-family decoder (llama, Mistral, qwen2, qwen3)
// whose weights stay in the form they are stored in (read once from the
// files, never expanded to a dequantized copy) and are multiplied in that
// form. lib/model/ resolves the architecture table and the files' headers
// into a Config and TensorSpecs; Model::create reads and validates them;
// begin/layers/finish run a forward pass over a batch of tokens with a KV
// cache (forward() runs all three).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../tensor.h"
#include "model_kernels.h"

namespace st {
namespace model {

enum class RopeStyle : int32_t { Normal = 0, Neox = 1 };

struct Config {
  int64_t vocab = 0, embd = 0, layers = 0, heads = 0, heads_kv = 0, head_dim = 0, ff = 0;
  int64_t ctx_train = 0;
  RopeStyle rope = RopeStyle::Normal;
  int64_t rope_dims = 0;           // rotated dimensions of each head (<= head_dim)
  double rope_base = 10000.0;
  double rope_pos_scale = 1.0;     // linear scaling: positions × this (1 / factor)
  std::vector<float> rope_factors; // divisors of the rotary frequencies (rope_dims/2), or empty; a RopeFreqs tensor overrides
  float eps = 1e-5f;
};

// Which activations the q8-capable formats read.
enum class ActMode : int32_t {
  Auto = 0,  // 8-bit blocks wherever a format's kernel takes them (as llama.cpp), else f32
  F32 = 1,   // f32 everywhere: weights dequantized inside the matmul, no activation rounding
};

struct Options {
  int64_t ctx = 0;        // KV cache positions
  int64_t batch = 512;    // most tokens per begin()
  int threads = 0;        // 0: st::threads()
  Kernel kernel = Kernel::Auto;
  ActMode act = ActMode::Auto;
  bool detect_sparse = true;  // dense float weights that are 2:4 run on spmm24
  // Some blocks of a model, alone (a sequential calibration pass loads one
  // block at a time): no output norm or head; the token embedding optional
  // (without it steps start from hidden states, begin_hidden).
  bool blocks_only = false;
};

// What the forward loop does with a tensor. Values match lib/model/native.ts SLOTS.
enum class Slot : int32_t {
  TokenEmbd = 0, OutputNorm = 1, Output = 2, RopeFreqs = 3,
  AttnNorm = 10, Q = 11, K = 12, V = 13, O = 14, FfnNorm = 15, Gate = 16, Up = 17, Down = 18,
  QBias = 19, KBias = 20, VBias = 21, QNorm = 22, KNorm = 23,
};

struct FileSpec {
  std::string path;
  int64_t size = 0;      // as lib/ saw it when it parsed the header
  int64_t mtime_ns = 0;
  uint64_t ino = 0, dev = 0;  // another file renamed over it within one mtime tick keeps size and mtime
};

// A byte range of one file (bytes = 0: absent).
struct Part {
  int32_t file = -1;
  int64_t offset = 0, bytes = 0;
};

struct TensorSpec {
  std::string name;          // for messages: the name in the file
  Slot slot = Slot::TokenEmbd;
  int64_t layer = -1;
  WFormat format = WFormat::F32;  // vectors (norms, biases, rope factors): F32/F16/BF16
  int64_t rows = 0, cols = 0;     // vectors: rows = 1
  int64_t group = 0;              // Int4/Int8
  DType scale_dtype = DType::F16;
  DType values_dtype = DType::F32;  // Sparse24
  Part data, scales, zeros, bitmask;  // zeros: compressed-tensors packing (int32, along dim 0)
};

// Where begin/layers/finish copy the inputs of the linear layers (the
// activation hook): per layer of a layers() call, four f32 buffers
// (null: not wanted): [n, embd] attention input (after the norm: q, k, v
// read it), [n, heads·head_dim] attention output (o reads it), [n, embd] FFN
// input (gate, up), [n, ff] SwiGLU output (down). finish(): [outputs, embd]
// the head's input.
enum CaptureSite { kAttnIn = 0, kAttnOut = 1, kFfnIn = 2, kFfnDown = 3, kSites = 4 };
struct Capture {
  std::vector<float*> sites;  // (l - l0) * kSites + site
};

class Team;
struct State;

class Model {
 public:
  ~Model();
  // Reads and validates every tensor. `cancel` is polled between tensors.
  static Status create(const Config& c, const Options& o, const std::vector<FileSpec>& files,
                       const std::vector<TensorSpec>& tensors, const std::atomic<bool>* cancel,
                       std::unique_ptr<Model>* out);

  const Config& config() const { return cfg_; }
  const Options& options() const { return opt_; }
  // Positions of the KV cache holding a finished forward pass.
  int64_t filled() const { return filled_; }
  // Bytes of weights held: as stored, except dense weights found 2:4 at load
  // (held compressed), plus what load derived (2:4 meta, unpacked zero points).
  int64_t weight_bytes() const { return weight_bytes_; }
  // One line per linear weight: name, format, kernel, activations (for reports and tests).
  std::vector<std::string> describe() const;

  // A forward pass over n tokens at positions [pos, pos + n): begin embeds
  // them (pos <= filled(): the cache before pos is kept), begin_hidden
  // starts from their hidden states [n, embd] instead, layers runs blocks
  // [l0, l1) in order, finish writes logits of the last token (all =
  // false) or of every token into logits [outputs, vocab], and the hidden
  // states after the last block into hidden_out [n, embd] when given.
  Status begin(const int32_t* tokens, int64_t n, int64_t pos);
  Status begin_hidden(const float* hidden, int64_t n, int64_t pos);
  Status layers(int64_t l0, int64_t l1, const Capture* cap);
  Status finish(bool all, float* logits, float* head_in, float* hidden_out = nullptr);
  Status forward(const int32_t* tokens, int64_t n, int64_t pos, bool all, float* logits);

  // The Model is not thread-safe: one call at a time (the addon holds a
  // lock). When the `cancel` flag given to create() is set, a running
  // layers() stops at the next block with ERR_VALUE "aborted" (the cache
  // from the step's first position on is dropped).

 private:
  Model();
  Status check_step(const char* what) const;
  Status start(const int32_t* tokens, const float* hidden, int64_t n, int64_t pos);
  void run_layer(int64_t l, const Capture* cap, int64_t l0, int ith);

  Config cfg_;
  Options opt_;
  std::unique_ptr<State> s_;
  std::unique_ptr<Team> team_;
  const std::atomic<bool>* cancel_ = nullptr;
  int64_t filled_ = 0;
  int64_t weight_bytes_ = 0;
  // The step in progress.
  int64_t step_n_ = 0, step_pos_ = 0, next_layer_ = -1;
};

// Scores rows of logits [rows, vocab] against target tokens: nll[r] =
// -log softmax(logits[r])[targets[r]]; with base logits also base_nll, kl[r]
// = KL(softmax(base[r]) ‖ softmax(logits[r])) and same_top[r] (both argmaxes
// equal, first index on ties). Doubles throughout.
struct ScoreArgs {
  const float* logits = nullptr;
  const float* base = nullptr;  // optional
  int64_t rows = 0, vocab = 0;
  const int32_t* targets = nullptr;
  double* nll = nullptr;
  double* base_nll = nullptr;
  double* kl = nullptr;
  uint8_t* same_top = nullptr;
  int threads = 0;
};
Status score_logits(const ScoreArgs& a);

// Quantizes k activations (k a multiple of 32) into 8-bit blocks.
void quantize_act_row(const float* x, int64_t k, int8_t* q, float* d, float* s);

// One linear layer on its own, for tests and benchmarks: Y [n, rows] =
// X [n, cols] · Wᵀ with the kernel and activations given (q8: X is quantized
// first). ERR_UNSUPPORTED when the weight has no such kernel.
Status linear(const Weight& w, const float* x, int64_t n, Kernel kernel, ActMode act, int threads, float* y);
// The kernel set and activations linear() would use ("avx512/q8", "reference/f32", ...).
std::string linear_kernel_name(const Weight& w, Kernel kernel, ActMode act);

}  // namespace model
}  // namespace st
