// The forward pass of a llama-family decoder, one loop for every
// architecture: what differs (q/k/v biases, per-head q/k norms, the RoPE
// layout, tied embeddings) is whether a tensor is present and a Config
// field. Each pass runs on the model's thread team: every thread walks the
// same steps, takes its share of each (rows of the matmuls, tokens of the
// norms, heads of attention) and meets the others at a barrier.
//
// Per block:  x = rmsnorm(h)·attn_norm  (f32, and 8-bit blocks when a
// reader wants them: the norm is fused into the activation conversion)
//   q, k, v = x·Wᵀ (+ bias); per-head rmsnorm of q, k; RoPE; k, v -> cache
//   a = softmax(q·Kᵀ / sqrt(head_dim), causal) · V   (grouped-query heads)
//   h += a·Woᵀ  (the residual added inside the matmul)
//   x = rmsnorm(h)·ffn_norm;  g, u = x·Wgᵀ, x·Wuᵀ
//   s = silu(g)·u  (and its 8-bit blocks, one pass);  h += s·Wdᵀ
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "../cpu.h"
#include "../quant/quant.h"
#include "../sparse/sparse.h"
#include "matmul.h"
#include "model.h"
#include "model_math.h"
#include "team.h"

namespace st {
namespace model {

namespace {

// ---- memory ------------------------------------------------------------------

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
// An owned allocation and its size.
struct Buffer {
  std::unique_ptr<uint8_t, FreeDeleter> p;
  int64_t bytes = 0;
  uint8_t* get() const { return p.get(); }
  explicit operator bool() const { return p != nullptr; }
};

// 64-byte aligned, with transparent huge pages asked for (weights are
// streamed once per token: fewer TLB misses).
Buffer alloc_bytes(int64_t bytes) {
  void* p = nullptr;
  const size_t n = static_cast<size_t>(std::max<int64_t>(bytes, 64));
  const size_t align = n >= (size_t{4} << 20) ? (size_t{2} << 20) : 64;
  if (posix_memalign(&p, align, (n + 63) / 64 * 64) != 0) return Buffer{};
#if defined(MADV_HUGEPAGE)
  if (align > 64) madvise(p, n / align * align, MADV_HUGEPAGE);
#endif
  return Buffer{std::unique_ptr<uint8_t, FreeDeleter>(static_cast<uint8_t*>(p)), bytes};
}

int64_t total_bytes(const std::vector<Buffer>& mem) {
  int64_t n = 0;
  for (const Buffer& b : mem) n += b.bytes;
  return n;
}

template <class T>
T* alloc_array(std::vector<Buffer>& owner, int64_t count) {
  Buffer b = alloc_bytes(count * static_cast<int64_t>(sizeof(T)));
  if (!b) return nullptr;
  T* p = reinterpret_cast<T*>(b.get());
  owner.push_back(std::move(b));
  return p;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }
std::string dims(int64_t a, int64_t b) { return "[" + std::to_string(a) + ", " + std::to_string(b) + "]"; }

// ---- split of work over the team ---------------------------------------------

// [b, e) of [0, total) for thread ith of nth, in units of `unit`.
void split(int64_t total, int64_t unit, int ith, int nth, int64_t* b, int64_t* e) {
  const int64_t units = (total + unit - 1) / unit;
  const int64_t per = units / nth, rem = units % nth;
  const int64_t u0 = ith * per + std::min<int64_t>(ith, rem);
  const int64_t u1 = u0 + per + (ith < rem ? 1 : 0);
  *b = std::min(total, u0 * unit);
  *e = std::min(total, u1 * unit);
}

}  // namespace

// ---- the model's state ----------------------------------------------------------

struct Linear {
  Weight w;
  std::string name;
  LinearPlan plan;
  bool present = false;
};

struct Block {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  const float* bq = nullptr;
  const float* bk = nullptr;
  const float* bv = nullptr;
  Linear q, k, v, o, gate, up, down;
};

struct Act {
  float* f = nullptr;   // [batch, ld]
  int8_t* q = nullptr;  // [batch, ld]
  float* d = nullptr;   // [batch, ld/32]
  float* s = nullptr;
};

struct State {
  std::vector<Buffer> mem;  // everything below points into these
  Weight embd;
  std::string embd_name;
  const float* out_norm = nullptr;
  Linear head;
  std::vector<Block> blocks;
  std::vector<double> inv_freq;  // [rope_dims/2]
  // KV cache: [layer][kv head][position][head_dim]
  float* kc = nullptr;
  float* vc = nullptr;
  // Scratch for a batch.
  float* h = nullptr;     // [batch, embd]
  Act x;                  // the input of the next matmuls; ld = max(embd, heads·hd, ff)
  int64_t xld = 0;
  float* q = nullptr;     // [batch, heads·hd]
  float* k = nullptr;     // [batch, kv·hd]
  float* v = nullptr;
  float* att = nullptr;   // [batch, heads·hd]
  float* g = nullptr;     // [batch, ff]
  float* u = nullptr;
  float* rope = nullptr;  // [batch, rope_dims/2, 2]: cos, sin
  std::vector<float*> scores;  // per thread: [ctx]
  std::vector<int32_t> tokens;
  std::atomic<bool> stop{false};
  PointwiseKernels pk{};
};

Model::Model() = default;
Model::~Model() {
  team_.reset();
  s_.reset();
#if defined(__GLIBC__)
  // glibc keeps freed buffers under its (raised) mmap threshold in the
  // arenas of the threads that loaded them; a sequential pass frees a
  // block's worth per block, which would pile up: give it back.
  malloc_trim(0);
#endif
}

namespace {

// ---- loading -----------------------------------------------------------------

struct OpenFile {
  int fd = -1;
  ~OpenFile() {
    if (fd >= 0) close(fd);
  }
};

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

Status file_changed(const FileSpec& f, const struct stat& st) {
  if (static_cast<int64_t>(st.st_size) != f.size || mtime_ns(st) != f.mtime_ns) {
    return Status::Error(Code::Format, f.path + ": the file changed (size " + std::to_string(f.size) + " -> " + std::to_string(static_cast<int64_t>(st.st_size)) +
                                           ") after its header was read; load it again");
  }
  if (static_cast<uint64_t>(st.st_ino) != f.ino || static_cast<uint64_t>(st.st_dev) != f.dev) {
    return Status::Error(Code::Format, f.path + ": the file changed (replaced by another file) after its header was read; load it again");
  }
  return Status::Ok();
}

class Loader {
 public:
  Loader(const std::vector<FileSpec>& files, std::vector<Buffer>* mem, const std::atomic<bool>* cancel)
      : files_(files), mem_(mem), cancel_(cancel), fds_(files.size()) {}

  Status open_all() {
    for (size_t i = 0; i < files_.size(); ++i) {
      const int fd = ::open(files_[i].path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return Status::Error(Code::Format, files_[i].path + ": cannot open (" + std::strerror(errno) + ")");
      fds_[i].fd = fd;
      struct stat st;
      if (fstat(fd, &st) != 0) return Status::Error(Code::Format, files_[i].path + ": cannot stat");
      Status s = file_changed(files_[i], st);
      if (!s.ok()) return s;
    }
    return Status::Ok();
  }

  // The files are unchanged since open_all (an in-place rewrite while we read).
  Status verify_all() {
    for (size_t i = 0; i < files_.size(); ++i) {
      struct stat st;
      if (fstat(fds_[i].fd, &st) != 0) return Status::Error(Code::Format, files_[i].path + ": cannot stat");
      Status s = file_changed(files_[i], st);
      if (!s.ok()) return s;
    }
    return Status::Ok();
  }

  // Reads a part into fresh aligned memory (kept in mem).
  Status read(const Part& p, const std::string& tensor, const char* what, int64_t expect, uint8_t** out) {
    if (cancel_ && cancel_->load()) return Status::Error(Code::Value, "aborted");
    if (p.bytes != expect) {
      return Status::Error(Code::Format, "tensor " + quoted(tensor) + ": " + what + " holds " + std::to_string(p.bytes) + " bytes, its shape needs " +
                                             std::to_string(expect));
    }
    if (p.file < 0 || static_cast<size_t>(p.file) >= files_.size()) return Status::Error(Code::Internal, "bad file index");
    const FileSpec& f = files_[static_cast<size_t>(p.file)];
    if (p.offset < 0 || p.bytes < 0 || p.offset > f.size || p.bytes > f.size - p.offset) {
      return Status::Error(Code::Format, "tensor " + quoted(tensor) + ": its data [" + std::to_string(p.offset) + ", +" + std::to_string(p.bytes) + ") lies outside " + f.path);
    }
    Buffer b = alloc_bytes(p.bytes);
    if (!b) return Status::Error(Code::Value, "out of memory reading " + quoted(tensor) + " (" + std::to_string(p.bytes) + " bytes)");
    int64_t done = 0;
    while (done < p.bytes) {
      const ssize_t r = pread(fds_[static_cast<size_t>(p.file)].fd, b.get() + done, static_cast<size_t>(std::min<int64_t>(p.bytes - done, int64_t{1} << 30)),
                              static_cast<off_t>(p.offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return Status::Error(Code::Format, f.path + ": read error (" + std::strerror(errno) + ") in tensor " + quoted(tensor));
      if (r == 0) {
        return Status::Error(Code::Format, f.path + ": the file ended at " + std::to_string(p.offset + done) + " inside tensor " + quoted(tensor) +
                                               " (was it truncated after its header was read?)");
      }
      done += r;
    }
    bytes_ += p.bytes;
    *out = b.get();
    mem_->push_back(std::move(b));
    return Status::Ok();
  }

  int64_t bytes() const { return bytes_; }

 private:
  const std::vector<FileSpec>& files_;
  std::vector<Buffer>* mem_;
  const std::atomic<bool>* cancel_;
  std::vector<OpenFile> fds_;
  int64_t bytes_ = 0;
};

DType float_dtype_of(WFormat f) { return f == WFormat::F32 ? DType::F32 : f == WFormat::F16 ? DType::F16 : DType::BF16; }
bool is_float_format(WFormat f) { return f == WFormat::F32 || f == WFormat::F16 || f == WFormat::BF16; }

// The first of `count` values of dtype dt, `stride` bytes apart from p, that
// is NaN or infinite (all exponent bits set), or -1. A file whose weights
// hold one would give NaN logits: the loader refuses it, as compressModel
// does.
int64_t first_non_finite(const uint8_t* p, int64_t count, int64_t stride, DType dt) {
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* q = p + i * stride;
    if (dt == DType::F32) {
      uint32_t u;
      std::memcpy(&u, q, 4);
      if ((u & 0x7f800000u) == 0x7f800000u) return i;
    } else {
      uint16_t h;
      std::memcpy(&h, q, 2);
      const uint16_t exp = dt == DType::F16 ? 0x7c00 : 0x7f80;
      if ((h & exp) == exp) return i;
    }
  }
  return -1;
}

Status non_finite_weight(const std::string& tensor, const char* what, int64_t index) {
  return Status::Error(Code::Value, "tensor " + quoted(tensor) + ": " + what + " " + std::to_string(index) + " is NaN or infinite");
}

// Every value the weight's products read is finite: dense and 2:4 values,
// the f16 scale (and Q4_1 minimum) of each GGUF block, compressed-tensors
// group scales.
Status check_finite_weight(const TensorSpec& t, const uint8_t* data, int64_t rows, int64_t cols, int64_t row_bytes) {
  int64_t bad = -1;
  if (is_float_format(t.format)) {
    const DType dt = float_dtype_of(t.format);
    bad = first_non_finite(data, rows * cols, static_cast<int64_t>(dtype_size(dt)), dt);
    if (bad >= 0) return non_finite_weight(t.name, "value", bad);
  } else if (t.format == WFormat::Sparse24) {
    const int64_t size = static_cast<int64_t>(dtype_size(t.values_dtype));
    bad = first_non_finite(data, rows * row_bytes / size, size, t.values_dtype);
    if (bad >= 0) return non_finite_weight(t.name, "kept value", bad);
  } else if (format_info(t.format).block_bytes > 0) {
    const int64_t bb = format_info(t.format).block_bytes;
    const int64_t blocks = rows * row_bytes / bb;
    bad = first_non_finite(data, blocks, bb, DType::F16);
    if (bad < 0 && t.format == WFormat::Q4_1) bad = first_non_finite(data + 2, blocks, bb, DType::F16);
    if (bad >= 0) return non_finite_weight(t.name, "the scale of block", bad);
  }
  return Status::Ok();
}

// A 1-D tensor (norm, bias, rope factors) as f32.
Status load_vector(Loader& ld, std::vector<Buffer>& mem, const TensorSpec& t, int64_t n, const char* what, const float** out) {
  if (!is_float_format(t.format)) return Status::Error(Code::Format, "tensor " + quoted(t.name) + " (" + what + ") must be F32, F16 or BF16");
  if (t.rows != 1 || t.cols != n) {
    return Status::Error(Code::Shape, "tensor " + quoted(t.name) + " has " + std::to_string(t.rows * t.cols) + " values; " + what + " needs " + std::to_string(n));
  }
  const DType dt = float_dtype_of(t.format);
  uint8_t* raw = nullptr;
  Status s = ld.read(t.data, t.name, "data", n * static_cast<int64_t>(dtype_size(dt)), &raw);
  if (!s.ok()) return s;
  float* v = alloc_array<float>(mem, n);
  if (!v) return Status::Error(Code::Value, "out of memory");
  for (int64_t i = 0; i < n; ++i) {
    v[i] = mm::float_at(raw, i, dt);
    if (!std::isfinite(v[i])) return non_finite_weight(t.name, "value", i);
  }
  *out = v;
  return Status::Ok();
}

// compressed-tensors zero points, packed `bits` per value along dim 0
// (int32 [ceil(rows·bits/32), groups], biased by 2^(bits-1)) -> int8 [rows, groups].
void unpack_zeros(const int32_t* packed, int64_t rows, int64_t groups, int bits, int8_t* out) {
  const int per = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t w = static_cast<uint32_t>(packed[(r / per) * groups + g]);
      out[r * groups + g] = static_cast<int8_t>(static_cast<int>((w >> (bits * (r % per))) & mask) - (1 << (bits - 1)));
    }
  }
}

// sparse-24-bitmask -> the sparse room's int16 meta words. Returns -1, or
// the first column of a group that does not keep exactly 2 elements.
int64_t bitmask_to_meta(const uint8_t* mask, int64_t rows, int64_t cols, uint8_t* meta, int64_t meta_row_bytes, int64_t* bad_row) {
  const int64_t mrb = (cols + 7) / 8;
  std::memset(meta, 0, static_cast<size_t>(rows * meta_row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols / 4; ++g) {
      const int bits = (mask[r * mrb + (g >> 1)] >> (4 * (g & 1))) & 15;
      int idx[2], k = 0;
      for (int i = 0; i < 4; ++i) {
        if (bits & (1 << i)) {
          if (k == 2) { k = 3; break; }
          idx[k++] = i;
        }
      }
      if (k != 2) {
        *bad_row = r;
        return g * 4;
      }
      meta[r * meta_row_bytes + (g >> 1)] = static_cast<uint8_t>(meta[r * meta_row_bytes + (g >> 1)] | ((idx[0] | (idx[1] << 2)) << (4 * (g & 1))));
    }
  }
  return -1;
}

// Reads a weight in its stored form; checks its shape against [rows, cols].
Status load_weight(Loader& ld, std::vector<Buffer>& mem, const TensorSpec& t, int64_t rows, int64_t cols, const std::string& shape_note,
                   bool detect_sparse, Weight* w) {
  if (t.rows != rows || t.cols != cols) {
    return Status::Error(Code::Shape, "tensor " + quoted(t.name) + " is " + dims(t.rows, t.cols) + "; this model needs " + dims(rows, cols) + " (" + shape_note + ")");
  }
  const FormatInfo& fi = format_info(t.format);
  if (cols % fi.k_multiple != 0) {
    return Status::Error(Code::Shape, "tensor " + quoted(t.name) + ": " + fi.name + " rows of " + std::to_string(cols) + " values are not a multiple of " +
                                          std::to_string(fi.k_multiple));
  }
  *w = Weight{};
  w->format = t.format;
  w->rows = rows;
  w->cols = cols;
  w->values_dtype = t.values_dtype;
  if (t.format == WFormat::Sparse24 && !is_float_dtype(t.values_dtype)) {
    return Status::Error(Code::DType, "tensor " + quoted(t.name) + ": 2:4 values must be F32, F16 or BF16");
  }
  w->row_bytes = stored_row_bytes(t.format, cols, t.values_dtype);
  uint8_t* data = nullptr;
  Status s = ld.read(t.data, t.name, "data", rows * w->row_bytes, &data);
  if (!s.ok()) return s;
  w->data = data;
  s = check_finite_weight(t, data, rows, cols, w->row_bytes);
  if (!s.ok()) return s;
  if (t.format == WFormat::Int4 || t.format == WFormat::Int8) {
    const int bits = t.format == WFormat::Int4 ? 4 : 8;
    if (t.group <= 0 || cols % t.group != 0) {
      return Status::Error(Code::Format, "tensor " + quoted(t.name) + ": the group size " + std::to_string(t.group) + " does not divide its rows of " + std::to_string(cols));
    }
    if (!is_float_dtype(t.scale_dtype)) return Status::Error(Code::DType, "tensor " + quoted(t.name) + ": scales must be F32, F16 or BF16");
    const int64_t groups = cols / t.group;
    uint8_t* sc = nullptr;
    s = ld.read(t.scales, t.name, "weight_scale", rows * groups * static_cast<int64_t>(dtype_size(t.scale_dtype)), &sc);
    if (!s.ok()) return s;
    const int64_t bad = first_non_finite(sc, rows * groups, static_cast<int64_t>(dtype_size(t.scale_dtype)), t.scale_dtype);
    if (bad >= 0) return non_finite_weight(t.name, "group scale", bad);
    w->group = t.group;
    w->scales = sc;
    w->scale_dtype = t.scale_dtype;
    if (t.zeros.bytes > 0) {
      uint8_t* zp = nullptr;
      s = ld.read(t.zeros, t.name, "weight_zero_point", (rows * bits + 31) / 32 * groups * 4, &zp);
      if (!s.ok()) return s;
      int8_t* z = alloc_array<int8_t>(mem, rows * groups);
      if (!z) return Status::Error(Code::Value, "out of memory");
      unpack_zeros(reinterpret_cast<const int32_t*>(zp), rows, groups, bits, z);
      w->zeros = z;
    }
  }
  if (t.format == WFormat::Sparse24) {
    uint8_t* mask = nullptr;
    s = ld.read(t.bitmask, t.name, "bitmask", rows * ((cols + 7) / 8), &mask);
    if (!s.ok()) return s;
    w->meta_row_bytes = meta_row_bytes(cols, 2);
    uint8_t* meta = alloc_array<uint8_t>(mem, std::max<int64_t>(1, rows * w->meta_row_bytes));
    if (!meta) return Status::Error(Code::Value, "out of memory");
    int64_t bad_row = 0;
    const int64_t bad = bitmask_to_meta(mask, rows, cols, meta, w->meta_row_bytes, &bad_row);
    if (bad >= 0) {
      return Status::Error(Code::Format, "tensor " + quoted(t.name) + ": the bitmask of row " + std::to_string(bad_row) + ", columns " + std::to_string(bad) + ".." +
                                             std::to_string(bad + 3) + " does not keep exactly 2 of 4");
    }
    w->meta = meta;
  }
  if (detect_sparse && is_float_format(t.format) && cols % 4 == 0 && rows > 0 && cols > 0) {
    // A dense weight whose every group of 4 has at most 2 non-zeros runs
    // on spmm24. Most dense weights fail on their first groups: look there
    // before allocating the compressed copy.
    const DType dt = float_dtype_of(t.format);
    bool maybe = true;
    for (int64_t g = 0; g < std::min<int64_t>(cols / 4, 64) && maybe; ++g) {
      int nz = 0;
      for (int i = 0; i < 4; ++i) nz += mm::float_at(data, g * 4 + i, dt) != 0.0f ? 1 : 0;
      maybe = nz <= 2;
    }
    if (maybe) {
      SelectArgs a;
      a.src = MatrixView{data, dt, rows, cols};
      a.score = SparseScore::NonZero;
      a.meta_word_bytes = 2;
      std::vector<Buffer> tmp;
      uint8_t* values = alloc_array<uint8_t>(tmp, rows * cols / 2 * static_cast<int64_t>(dtype_size(dt)));
      uint8_t* meta = alloc_array<uint8_t>(tmp, rows * meta_row_bytes(cols, 2));
      if (values && meta) {
        a.values = values;
        a.meta = meta;
        if (sparse_select(a).ok()) {
          // The dense copy goes: only the compressed form is kept.
          for (auto it = mem.begin(); it != mem.end(); ++it) {
            if (it->get() == data) {
              mem.erase(it);
              break;
            }
          }
          for (Buffer& b : tmp) mem.push_back(std::move(b));
          w->format = WFormat::Sparse24;
          w->values_dtype = dt;
          w->data = values;
          w->row_bytes = cols / 2 * static_cast<int64_t>(dtype_size(dt));
          w->meta = meta;
          w->meta_row_bytes = meta_row_bytes(cols, 2);
        }
      }
    }
  }
  return Status::Ok();
}

// The embedding row of a token as f32.
Status embed_row(const Weight& w, int64_t id, float* out) {
  const uint8_t* row = w.data + id * w.row_bytes;
  if (is_float_format(w.format)) {
    const DType dt = float_dtype_of(w.format);
    for (int64_t i = 0; i < w.cols; ++i) out[i] = mm::float_at(row, i, dt);
    return Status::Ok();
  }
  DequantizeArgs a;
  if (!quant_format_of(w.format, &a.format)) return Status::Error(Code::Unsupported, "the token embedding cannot be stored 2:4");
  a.rows = 1;
  a.cols = w.cols;
  a.data = row;
  a.threads = 1;
  if (w.format == WFormat::Int4 || w.format == WFormat::Int8) {
    const int64_t groups = w.cols / w.group;
    a.group = w.group;
    a.scales = static_cast<const uint8_t*>(w.scales) + id * groups * static_cast<int64_t>(dtype_size(w.scale_dtype));
    a.scale_dtype = w.scale_dtype;
    a.zeros = w.zeros ? w.zeros + id * groups : nullptr;
  }
  return dequantize(a, out, DType::F32);
}

// rmsnorm(x)·gamma into out (f32), the scale from mm::rms_scale.
void rms_norm(const float* x, const float* gamma, int64_t n, float eps, float* out) {
  const float r = mm::rms_scale(x, n, eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * r) * gamma[i];
}

}  // namespace

Status Model::create(const Config& c, const Options& o, const std::vector<FileSpec>& files, const std::vector<TensorSpec>& tensors,
                     const std::atomic<bool>* cancel, std::unique_ptr<Model>* out) {
  // Hyper-parameters (lib/ checked them; these guard the arithmetic below).
  const int64_t lim = int64_t{1} << 24;
  if (c.vocab < 1 || c.embd < 1 || c.layers < 1 || c.heads < 1 || c.heads_kv < 1 || c.head_dim < 1 || c.ff < 1 || c.vocab > (int64_t{1} << 28) ||
      c.embd > lim || c.layers > 4096 || c.heads > 4096 || c.head_dim > 4096 || c.ff > lim) {
    return Status::Error(Code::Value, "hyper-parameters out of range");
  }
  if (c.heads % c.heads_kv != 0) return Status::Error(Code::Value, "head_count (" + std::to_string(c.heads) + ") is not a multiple of head_count_kv (" + std::to_string(c.heads_kv) + ")");
  if (c.rope_dims < 0 || c.rope_dims > c.head_dim || c.rope_dims % 2 != 0) return Status::Error(Code::Value, "rope dimension count " + std::to_string(c.rope_dims) + " must be even and at most head_dim");
  if (!(c.rope_base > 0) || !(c.rope_pos_scale > 0) || !(c.eps >= 0)) return Status::Error(Code::Value, "rope base, scale and norm epsilon must be positive");
  if (o.ctx < 1 || o.ctx > (int64_t{1} << 22)) return Status::Error(Code::Value, "context size must be in 1..4194304, got " + std::to_string(o.ctx));
  if (o.batch < 1 || o.batch > 65536) return Status::Error(Code::Value, "batch size must be in 1..65536");
  if (o.threads < 0 || o.threads > 1024) return Status::Error(Code::Value, "threads must be in 0..1024");
  if (o.kernel == Kernel::Avx2 && !cpu_enabled().avx2) return Status::Error(Code::Unsupported, "the runtime's AVX2 kernels are not available on this CPU or build");
  if (o.kernel == Kernel::Avx512 && !cpu_enabled().avx512vnni) {
    return Status::Error(Code::Unsupported, "the runtime's AVX-512 kernels need AVX-512 F/BW/VL/VNNI, which this CPU or build lacks");
  }

  std::unique_ptr<Model> m(new Model());
  m->cfg_ = c;
  m->opt_ = o;
  m->cancel_ = cancel;
  m->s_.reset(new State());
  State& s = *m->s_;
  s.blocks.resize(static_cast<size_t>(c.layers));
  Loader ld(files, &s.mem, cancel);
  Status st = ld.open_all();
  if (!st.ok()) return st;

  const int64_t D = c.embd, Hq = c.heads * c.head_dim, Hkv = c.heads_kv * c.head_dim;
  bool have_embd = false, have_norm = false;
  const float* rope_factors = c.rope_factors.empty() ? nullptr : c.rope_factors.data();
  if (rope_factors && static_cast<int64_t>(c.rope_factors.size()) != c.rope_dims / 2) return Status::Error(Code::Value, "rope factors: one per rotated pair");
  std::vector<bool> seen(static_cast<size_t>(c.layers) * 32, false);
  for (const TensorSpec& t : tensors) {
    const bool per_layer = static_cast<int>(t.slot) >= 10;
    if (per_layer && (t.layer < 0 || t.layer >= c.layers)) return Status::Error(Code::Format, "tensor " + quoted(t.name) + ": block " + std::to_string(t.layer) + " is not in 0.." + std::to_string(c.layers - 1));
    if (per_layer) {
      const size_t key = static_cast<size_t>(t.layer) * 32 + static_cast<size_t>(static_cast<int>(t.slot) - 10);
      if (seen[key]) return Status::Error(Code::Format, "tensor " + quoted(t.name) + " appears twice");
      seen[key] = true;
    }
    Block* b = per_layer ? &s.blocks[static_cast<size_t>(t.layer)] : nullptr;
    const std::string hd = std::to_string(c.head_dim);
    auto lin = [&](Linear& L, int64_t rows, int64_t cols, const std::string& note) -> Status {
      L.name = t.name;
      L.present = true;
      return load_weight(ld, s.mem, t, rows, cols, note, o.detect_sparse, &L.w);
    };
    switch (t.slot) {
      case Slot::TokenEmbd:
        st = load_weight(ld, s.mem, t, c.vocab, D, "vocab_size, embedding_length", false, &s.embd);
        s.embd_name = t.name;
        have_embd = true;
        break;
      case Slot::Output: st = lin(s.head, c.vocab, D, "vocab_size, embedding_length"); break;
      case Slot::OutputNorm: st = load_vector(ld, s.mem, t, D, "the output norm", &s.out_norm); have_norm = true; break;
      case Slot::RopeFreqs: st = load_vector(ld, s.mem, t, c.rope_dims / 2, "the rope frequency factors (rope dimensions / 2)", &rope_factors); break;
      case Slot::AttnNorm: st = load_vector(ld, s.mem, t, D, "a block's attention norm", &b->attn_norm); break;
      case Slot::FfnNorm: st = load_vector(ld, s.mem, t, D, "a block's FFN norm", &b->ffn_norm); break;
      case Slot::QNorm: st = load_vector(ld, s.mem, t, c.head_dim, "the per-head q norm (head_dim)", &b->q_norm); break;
      case Slot::KNorm: st = load_vector(ld, s.mem, t, c.head_dim, "the per-head k norm (head_dim)", &b->k_norm); break;
      case Slot::QBias: st = load_vector(ld, s.mem, t, Hq, "the q bias (heads × head_dim)", &b->bq); break;
      case Slot::KBias: st = load_vector(ld, s.mem, t, Hkv, "the k bias (kv heads × head_dim)", &b->bk); break;
      case Slot::VBias: st = load_vector(ld, s.mem, t, Hkv, "the v bias (kv heads × head_dim)", &b->bv); break;
      case Slot::Q: st = lin(b->q, Hq, D, "head_count × " + hd + ", embedding_length"); break;
      case Slot::K: st = lin(b->k, Hkv, D, "head_count_kv × " + hd + ", embedding_length"); break;
      case Slot::V: st = lin(b->v, Hkv, D, "head_count_kv × " + hd + ", embedding_length"); break;
      case Slot::O: st = lin(b->o, D, Hq, "embedding_length, head_count × " + hd); break;
      case Slot::Gate: st = lin(b->gate, c.ff, D, "feed_forward_length, embedding_length"); break;
      case Slot::Up: st = lin(b->up, c.ff, D, "feed_forward_length, embedding_length"); break;
      case Slot::Down: st = lin(b->down, D, c.ff, "embedding_length, feed_forward_length"); break;
      default: return Status::Error(Code::Internal, "unknown tensor slot");
    }
    if (!st.ok()) return st;
  }
  st = ld.verify_all();
  if (!st.ok()) return st;
  // A blocks-only model (one block of a sequential pass) may lack the
  // embedding (its steps start from hidden states) and the head.
  if (!o.blocks_only && (!have_embd || !have_norm)) return Status::Error(Code::Format, std::string("the model has no ") + (have_embd ? "output norm" : "token embedding"));
  if (o.blocks_only && (s.head.present || have_norm)) return Status::Error(Code::Format, "a blocks-only model takes no output norm or head");
  for (int64_t l = 0; l < c.layers; ++l) {
    Block& b = s.blocks[static_cast<size_t>(l)];
    if (!b.attn_norm || !b.ffn_norm || !b.q.present || !b.k.present || !b.v.present || !b.o.present || !b.gate.present || !b.up.present || !b.down.present) {
      return Status::Error(Code::Format, "block " + std::to_string(l) + " is missing tensors");
    }
  }
  if (!s.head.present && !o.blocks_only) {  // tied embeddings: the head multiplies by the embedding as stored
    s.head.w = s.embd;
    s.head.name = s.embd_name;
    s.head.present = true;
  }
  // Kernels.
  auto plan = [&](Linear& L) -> Status {
    Status p = plan_linear(L.w, o.kernel, o.act, &L.plan);
    if (!p.ok()) return Status::Error(p.code, "tensor " + quoted(L.name) + ": " + p.message);
    return p;
  };
  if (s.head.present && !(st = plan(s.head)).ok()) return st;
  for (Block& b : s.blocks) {
    for (Linear* L : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) {
      if (!(st = plan(*L)).ok()) return st;
    }
  }
  m->weight_bytes_ = total_bytes(s.mem);  // as held: 2:4 weights found at load count compressed
  // Rotary frequencies: base^(-2i/d) / factor_i, in double.
  s.inv_freq.resize(static_cast<size_t>(c.rope_dims / 2));
  for (int64_t i = 0; i < c.rope_dims / 2; ++i) {
    double f = std::pow(c.rope_base, -2.0 * static_cast<double>(i) / static_cast<double>(c.rope_dims));
    if (rope_factors) f /= static_cast<double>(rope_factors[i]);
    s.inv_freq[static_cast<size_t>(i)] = f;
  }
  // Cache and scratch.
  const int64_t B = o.batch;
  s.xld = std::max({D, Hq, c.ff});
  const int64_t cache = c.layers * Hkv * o.ctx;
  s.kc = alloc_array<float>(s.mem, cache);
  s.vc = alloc_array<float>(s.mem, cache);
  s.h = alloc_array<float>(s.mem, B * D);
  s.x.f = alloc_array<float>(s.mem, B * s.xld);
  s.x.q = alloc_array<int8_t>(s.mem, B * s.xld);
  s.x.d = alloc_array<float>(s.mem, B * s.xld / mm::QK + 1);
  s.x.s = alloc_array<float>(s.mem, B * s.xld / mm::QK + 1);
  s.q = alloc_array<float>(s.mem, B * Hq);
  s.k = alloc_array<float>(s.mem, B * Hkv);
  s.v = alloc_array<float>(s.mem, B * Hkv);
  s.att = alloc_array<float>(s.mem, B * Hq);
  s.g = alloc_array<float>(s.mem, B * c.ff);
  s.u = alloc_array<float>(s.mem, B * c.ff);
  s.rope = alloc_array<float>(s.mem, B * std::max<int64_t>(1, c.rope_dims));
  const int threads = o.threads > 0 ? o.threads : st::threads();
  for (int i = 0; i < threads; ++i) s.scores.push_back(alloc_array<float>(s.mem, o.ctx));
  for (float* p : {s.kc, s.vc, s.h, s.x.f, s.q, s.k, s.v, s.att, s.g, s.u, s.rope}) {
    if (!p) return Status::Error(Code::Value, "out of memory for the KV cache and scratch (context " + std::to_string(o.ctx) + ", batch " + std::to_string(B) + ")");
  }
  if (!s.x.q || !s.x.d || !s.x.s || std::find(s.scores.begin(), s.scores.end(), nullptr) != s.scores.end()) return Status::Error(Code::Value, "out of memory for scratch");
  s.pk = pointwise_kernels(o.kernel);
  m->team_.reset(new Team(threads));
  *out = std::move(m);
  return Status::Ok();
}

std::vector<std::string> Model::describe() const {
  std::vector<std::string> out;
  auto line = [&](const Linear& L) {
    std::string f = format_info(L.w.format).name;
    if (L.w.format == WFormat::Sparse24) f += std::string(" (") + dtype_name(L.w.values_dtype) + ")";
    out.push_back(L.name + "\t" + f + "\t" + L.plan.set + (L.plan.q8 ? "/q8" : "/f32"));
  };
  for (const Block& b : s_->blocks) {
    for (const Linear* L : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) line(*L);
  }
  if (s_->head.present) line(s_->head);
  return out;
}

Status Model::check_step(const char* what) const {
  if (next_layer_ < 0) return Status::Error(Code::Value, std::string(what) + ": no forward step in progress (begin() first)");
  return Status::Ok();
}

Status Model::begin(const int32_t* tokens, int64_t n, int64_t pos) { return start(tokens, nullptr, n, pos); }
Status Model::begin_hidden(const float* hidden, int64_t n, int64_t pos) { return start(nullptr, hidden, n, pos); }

Status Model::start(const int32_t* tokens, const float* hidden, int64_t n, int64_t pos) {
  const Config& c = cfg_;
  State& s = *s_;
  if (tokens && !s.embd.data) return Status::Error(Code::Value, "this blocks-only model holds no token embedding: start its steps from hidden states");
  if (n < 1 || n > opt_.batch) return Status::Error(Code::Value, "a step takes 1.." + std::to_string(opt_.batch) + " tokens (the batch size), got " + std::to_string(n));
  if (pos < 0 || pos > filled_) {
    return Status::Error(Code::Value, "position " + std::to_string(pos) + " is past the " + std::to_string(filled_) + " positions the cache holds");
  }
  if (pos + n > opt_.ctx) {
    return Status::Error(Code::Value, "positions " + std::to_string(pos) + ".." + std::to_string(pos + n - 1) + " do not fit the context of " + std::to_string(opt_.ctx) +
                                          " tokens");
  }
  for (int64_t t = 0; tokens && t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.vocab) {
      return Status::Error(Code::Value, "token " + std::to_string(t) + " is " + std::to_string(tokens[t]) + ", outside the vocabulary (0.." + std::to_string(c.vocab - 1) + ")");
    }
  }
  for (int64_t i = 0; hidden && i < n * c.embd; ++i) {
    if (!std::isfinite(hidden[i])) return Status::Error(Code::Value, "hidden state " + std::to_string(i / c.embd) + ", value " + std::to_string(i % c.embd) + " is NaN or infinite");
  }
  filled_ = pos;  // what lies after pos is overwritten from here on
  if (hidden) {
    s.tokens.clear();
    std::memcpy(s.h, hidden, static_cast<size_t>(n * c.embd) * 4);
  } else {
    s.tokens.assign(tokens, tokens + n);
    for (int64_t t = 0; t < n; ++t) {
      Status st = embed_row(s.embd, tokens[t], s.h + t * c.embd);
      if (!st.ok()) return st;
    }
  }
  const int64_t half = c.rope_dims / 2;
  for (int64_t t = 0; t < n; ++t) {
    const double p = static_cast<double>(pos + t) * c.rope_pos_scale;
    for (int64_t i = 0; i < half; ++i) {
      const double a = p * s.inv_freq[static_cast<size_t>(i)];
      s.rope[(t * half + i) * 2] = static_cast<float>(std::cos(a));
      s.rope[(t * half + i) * 2 + 1] = static_cast<float>(std::sin(a));
    }
  }
  step_n_ = n;
  step_pos_ = pos;
  next_layer_ = 0;
  return Status::Ok();
}

namespace {

// Rotates the first rope_dims dimensions of one head in place.
void rope_head(float* v, const float* cs, int64_t dims, RopeStyle style) {
  const int64_t half = dims / 2;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t i0 = style == RopeStyle::Normal ? 2 * i : i;
    const int64_t i1 = style == RopeStyle::Normal ? 2 * i + 1 : i + half;
    const float c = cs[2 * i], sn = cs[2 * i + 1];
    const float x0 = v[i0], x1 = v[i1];
    v[i0] = x0 * c - x1 * sn;
    v[i1] = x0 * sn + x1 * c;
  }
}

// Rows [t0, t1) of an f32 activation x [n, k] to 8-bit blocks (s.x.q/d/s).
void quantize_rows(const State& s, const float* x, int64_t k, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    quantize_act_row(x + t * k, k, s.x.q + t * k, s.x.d + t * (k / mm::QK), s.x.s + t * (k / mm::QK));
  }
}

// Runs a group of linears that read the same input, their rows split over
// the team as one range.
struct Job {
  const Linear* L;
  float* y;
  int64_t ldy;
  bool accumulate;
};
void run_linears(const State& s, const float* x, const Job* jobs, int count, int64_t n, int64_t k, int ith, int nth) {
  constexpr int64_t kUnit = 16;  // a multiple of every kernel set's row granularity
  int64_t total = 0;
  for (int i = 0; i < count; ++i) total += (jobs[i].L->w.rows + kUnit - 1) / kUnit * kUnit;
  int64_t b, e;
  split(total, kUnit, ith, nth, &b, &e);
  int64_t base = 0;
  for (int i = 0; i < count; ++i) {
    const Linear& L = *jobs[i].L;
    const int64_t span = (L.w.rows + kUnit - 1) / kUnit * kUnit;
    const int64_t r0 = std::max<int64_t>(b - base, 0), r1 = std::min<int64_t>(e - base, L.w.rows);
    if (r0 < r1) {
      MatmulArgs a;
      a.w = &L.w;
      a.n = n;
      a.x = x;
      a.ldx = k;
      a.xq = ActQ8{s.x.q, s.x.d, s.x.s, k};
      a.y = jobs[i].y;
      a.ldy = jobs[i].ldy;
      a.accumulate = jobs[i].accumulate;
      a.kernel = L.plan.kernel;
      L.plan.fn(a, r0, r1);
    }
    base += span;
  }
}

bool any_q8(std::initializer_list<const Linear*> ls) {
  for (const Linear* L : ls) {
    if (L->plan.q8) return true;
  }
  return false;
}

}  // namespace

void Model::run_layer(int64_t l, const Capture* cap, int64_t l0, int ith) {
  const Config& c = cfg_;
  State& s = *s_;
  Block& b = s.blocks[static_cast<size_t>(l)];
  const int nth = team_->size();
  const int64_t n = step_n_, D = c.embd, hd = c.head_dim, Hq = c.heads * hd, Hkv = c.heads_kv * hd, F = c.ff;
  int64_t t0, t1;
  split(n, 1, ith, nth, &t0, &t1);
  float* const* sites = cap ? cap->sites.data() + (l - l0) * kSites : nullptr;

  // attention input: rmsnorm · attn_norm (and its 8-bit blocks)
  const bool q8a = any_q8({&b.q, &b.k, &b.v});
  for (int64_t t = t0; t < t1; ++t) rms_norm(s.h + t * D, b.attn_norm, D, c.eps, s.x.f + t * D);
  if (q8a) quantize_rows(s, s.x.f, D, t0, t1);
  if (sites && sites[kAttnIn]) std::memcpy(sites[kAttnIn] + t0 * D, s.x.f + t0 * D, static_cast<size_t>((t1 - t0) * D) * 4);
  team_->barrier();
  const Job qkv[3] = {{&b.q, s.q, Hq, false}, {&b.k, s.k, Hkv, false}, {&b.v, s.v, Hkv, false}};
  run_linears(s, s.x.f, qkv, 3, n, D, ith, nth);
  team_->barrier();

  // biases, q/k norms, RoPE; k and v into the cache
  const int64_t kvh = c.heads_kv, ctx = opt_.ctx;
  float* kc = s.kc + l * kvh * ctx * hd;
  float* vc = s.vc + l * kvh * ctx * hd;
  for (int64_t t = t0; t < t1; ++t) {
    float* q = s.q + t * Hq;
    float* k = s.k + t * Hkv;
    float* v = s.v + t * Hkv;
    if (b.bq) for (int64_t i = 0; i < Hq; ++i) q[i] += b.bq[i];
    if (b.bk) for (int64_t i = 0; i < Hkv; ++i) k[i] += b.bk[i];
    if (b.bv) for (int64_t i = 0; i < Hkv; ++i) v[i] += b.bv[i];
    const float* cs = s.rope + t * c.rope_dims;
    for (int64_t h = 0; h < c.heads; ++h) {
      if (b.q_norm) rms_norm(q + h * hd, b.q_norm, hd, c.eps, q + h * hd);
      rope_head(q + h * hd, cs, c.rope_dims, c.rope);
    }
    for (int64_t h = 0; h < kvh; ++h) {
      if (b.k_norm) rms_norm(k + h * hd, b.k_norm, hd, c.eps, k + h * hd);
      rope_head(k + h * hd, cs, c.rope_dims, c.rope);
      const int64_t p = step_pos_ + t;
      std::memcpy(kc + (h * ctx + p) * hd, k + h * hd, static_cast<size_t>(hd) * 4);
      std::memcpy(vc + (h * ctx + p) * hd, v + h * hd, static_cast<size_t>(hd) * 4);
    }
  }
  team_->barrier();

  // attention: (token, head) pairs dealt round-robin (their cost grows with the position)
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const int64_t group = c.heads / kvh;
  float* sc = s.scores[static_cast<size_t>(ith)];
  for (int64_t item = ith; item < n * c.heads; item += nth) {
    const int64_t t = item / c.heads, h = item % c.heads, g = h / group;
    const int64_t last = step_pos_ + t;
    s.pk.attend(s.q + t * Hq + h * hd, kc + g * ctx * hd, vc + g * ctx * hd, last + 1, hd, scale, sc, s.att + t * Hq + h * hd);
  }
  team_->barrier();

  // h += att · Woᵀ
  if (b.o.plan.q8) quantize_rows(s, s.att, Hq, t0, t1);
  if (sites && sites[kAttnOut]) std::memcpy(sites[kAttnOut] + t0 * Hq, s.att + t0 * Hq, static_cast<size_t>((t1 - t0) * Hq) * 4);
  team_->barrier();
  const Job o[1] = {{&b.o, s.h, D, true}};
  run_linears(s, s.att, o, 1, n, Hq, ith, nth);
  team_->barrier();

  // FFN
  const bool q8f = any_q8({&b.gate, &b.up});
  for (int64_t t = t0; t < t1; ++t) rms_norm(s.h + t * D, b.ffn_norm, D, c.eps, s.x.f + t * D);
  if (q8f) quantize_rows(s, s.x.f, D, t0, t1);
  if (sites && sites[kFfnIn]) std::memcpy(sites[kFfnIn] + t0 * D, s.x.f + t0 * D, static_cast<size_t>((t1 - t0) * D) * 4);
  team_->barrier();
  const Job gu[2] = {{&b.gate, s.g, F, false}, {&b.up, s.u, F, false}};
  run_linears(s, s.x.f, gu, 2, n, D, ith, nth);
  team_->barrier();
  for (int64_t t = t0; t < t1; ++t) s.pk.swiglu(s.g + t * F, s.u + t * F, F, s.x.f + t * F);
  if (b.down.plan.q8) quantize_rows(s, s.x.f, F, t0, t1);
  if (sites && sites[kFfnDown]) std::memcpy(sites[kFfnDown] + t0 * F, s.x.f + t0 * F, static_cast<size_t>((t1 - t0) * F) * 4);
  team_->barrier();
  const Job d[1] = {{&b.down, s.h, D, true}};
  run_linears(s, s.x.f, d, 1, n, F, ith, nth);
  team_->barrier();
}

Status Model::layers(int64_t l0, int64_t l1, const Capture* cap) {
  Status st = check_step("layers");
  if (!st.ok()) return st;
  if (l0 != next_layer_ || l1 < l0 || l1 > cfg_.layers) {
    return Status::Error(Code::Value, "layers " + std::to_string(l0) + ".." + std::to_string(l1) + ": the step is at block " + std::to_string(next_layer_));
  }
  if (cap && static_cast<int64_t>(cap->sites.size()) != (l1 - l0) * kSites) return Status::Error(Code::Internal, "capture buffers do not match the layers");
  State& s = *s_;
  s.stop.store(false);
  team_->run([&](int ith) {
    for (int64_t l = l0; l < l1; ++l) {
      if (ith == 0) s.stop.store(cancel_ && cancel_->load());
      team_->barrier();
      if (s.stop.load()) return;
      run_layer(l, cap, l0, ith);
    }
  });
  if (s.stop.load()) {
    next_layer_ = -1;  // the cache after step_pos_ holds partial results
    return Status::Error(Code::Value, "aborted");
  }
  next_layer_ = l1;
  return Status::Ok();
}

Status Model::finish(bool all, float* logits, float* head_in, float* hidden_out) {
  Status st = check_step("finish");
  if (!st.ok()) return st;
  if (next_layer_ != cfg_.layers) return Status::Error(Code::Value, "finish: blocks " + std::to_string(next_layer_) + ".. have not run");
  const Config& c = cfg_;
  State& s = *s_;
  const int64_t D = c.embd, first = all ? 0 : step_n_ - 1, outs = step_n_ - first;
  const Linear& head = s.head;
  if ((logits || head_in) && !head.present) return Status::Error(Code::Value, "finish: this blocks-only model has no head; ask for the hidden states only");
  if (hidden_out) std::memcpy(hidden_out, s.h, static_cast<size_t>(step_n_ * D) * 4);
  if (!logits) {  // only the cache (and the hidden states) was wanted
    filled_ = step_pos_ + step_n_;
    next_layer_ = -1;
    return Status::Ok();
  }
  team_->run([&](int ith) {
    const int nth = team_->size();
    int64_t t0, t1;
    split(outs, 1, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; ++t) rms_norm(s.h + (first + t) * D, s.out_norm, D, c.eps, s.x.f + t * D);
    if (head.plan.q8) quantize_rows(s, s.x.f, D, t0, t1);
    if (head_in) std::memcpy(head_in + t0 * D, s.x.f + t0 * D, static_cast<size_t>((t1 - t0) * D) * 4);
    team_->barrier();
    const Job j[1] = {{&head, logits, c.vocab, false}};
    run_linears(s, s.x.f, j, 1, outs, D, ith, nth);
  });
  filled_ = step_pos_ + step_n_;
  next_layer_ = -1;
  return Status::Ok();
}

Status Model::forward(const int32_t* tokens, int64_t n, int64_t pos, bool all, float* logits) {
  Status st = begin(tokens, n, pos);
  if (!st.ok()) return st;
  st = layers(0, cfg_.layers, nullptr);
  if (!st.ok()) return st;
  return finish(all, logits, nullptr, nullptr);
}

}  // namespace model
}  // namespace st
