// The GEMM driver: validation, kernel choice, and the two paths.
//
// Packed path (both dimensions of C larger than the skinny limit): the
// classic three-level blocking. For each KC-deep slab of k, op(B) is packed
// into NR-wide strips (shared by all threads), then blocks of MC rows of
// op(A) are packed into MR-tall strips (per thread, so the transposition
// of a row-major A happens once per element per slab) and every MR x NR
// tile of C is updated by the micro-kernel. The tile's chain continues from
// the previous slab's stored value, so blocking never changes a bit.
// Threads take blocks of rows; when there are too few row blocks they also
// split the column strips.
//
// Skinny path (min(m, n) <= the ISA's limit: matrix-vector products, a few
// right-hand sides, a few rows of activations times a weight matrix): the
// small operand is packed to f32 once and the big one is streamed in place,
// split over threads along its long dimension.
#include "gemm.h"

#include <algorithm>
#include <string>
#include <vector>

#include "../cpu.h"
#include "../numeric.h"
#include "gemm_kernels.h"
#include "lowrank_cuda.h"

namespace st {

namespace {

using gemmk::Isa;
using gemmk::Src;

// Blocking (floats), measured on the Xeon this was written on (48 KiB L1d,
// 2 MiB L2): a KC x MR strip of packed A (12 KiB for AVX-512's 24 rows)
// stays in L1 while the slab's KC x NR strips of B stream from L2; an
// MC x KC block of A (96 KiB) and the B slab fit L2.
constexpr int64_t kKC = 128;
constexpr int64_t kMC = 192;   // a multiple of both MRs (6, 24)
constexpr int64_t kNC = 3072;  // a multiple of the NR (16)
// op(B) up to this size is packed whole (C-stationary order, below).
constexpr int64_t kStationaryBytes = int64_t{32} << 20;

const Isa* isa_for(GemmKernel k) {
  switch (k) {
    case GemmKernel::Avx2: return cpu_enabled().avx2 ? gemmk::avx2::isa() : nullptr;
    case GemmKernel::Avx512: return cpu_enabled().avx512 ? gemmk::avx512::isa() : nullptr;
    default: return nullptr;
  }
}

Status check_operand(const GemmOperand& o, const char* name, int64_t rows, int64_t cols) {
  if (!is_float_dtype(o.dtype)) {
    return Status::Error(Code::DType, std::string(name) + " must be f32, f16 or bf16, got " + dtype_name(o.dtype));
  }
  // The stored matrix is rows x cols (transposed when o.trans).
  const int64_t sr = o.trans ? cols : rows, sc = o.trans ? rows : cols;
  if (o.ld < std::max<int64_t>(sc, 1)) {
    return Status::Error(Code::Shape, std::string(name) + ": leading dimension " + std::to_string(o.ld) +
                                          " is smaller than its " + std::to_string(sc) + " stored columns");
  }
  if (sr > 0 && sc > 0 && !o.data) return Status::Error(Code::Value, std::string(name) + " has no data");
  return Status::Ok();
}

float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

void run_reference(const GemmArgs& g, const Src& a, const Src& b) {
  const int64_t work = std::max<int64_t>(1, g.n * g.k);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / work);
  parallel_for(g.m, grain, [&](int64_t i0, int64_t i1) {
    gemmk::ref::rows(g.n, g.k, a, g.a.trans, b, g.b.trans, g.c, g.ldc, g.accumulate, i0, i1);
  }, g.threads);
}

// op(X) as f32, k x small, row-major: X(p, j).
void pack_small(const Src& s, bool trans, int64_t k, int64_t small, float* dst) {
  for (int64_t p = 0; p < k; ++p) {
    for (int64_t j = 0; j < small; ++j) {
      const int64_t idx = trans ? j * s.ld + p : p * s.ld + j;
      float v;
      if (s.dtype == DType::F32) v = static_cast<const float*>(s.data)[idx];
      else if (s.dtype == DType::F16) v = f16_to_f32(static_cast<const uint16_t*>(s.data)[idx]);
      else v = bf16_to_f32(static_cast<const uint16_t*>(s.data)[idx]);
      dst[p * small + j] = v;
    }
  }
}

void run_skinny(const Isa& isa, const GemmArgs& g, const Src& a, const Src& b) {
  gemmk::Skinny s;
  s.k = g.k;
  s.load_c = g.accumulate;
  std::vector<float> x;
  int64_t longdim;
  if (g.n <= isa.skinny_max && g.n <= g.m) {
    // C (m x n) = W (m x k) X (k x n): W = op(A), X = op(B).
    longdim = g.m;
    s.small = g.n;
    s.w = a.data;
    s.w_dtype = a.dtype;
    s.w_si = g.a.trans ? 1 : a.ld;
    s.w_sk = g.a.trans ? a.ld : 1;
    x.resize(static_cast<size_t>(g.k * g.n));
    pack_small(b, g.b.trans, g.k, g.n, x.data());
    s.c_si = g.ldc;
    s.c_sj = 1;
  } else {
    // Cᵀ (n x m) = op(B)ᵀ (n x k) op(A)ᵀ (k x m): W = op(B)ᵀ, X = op(A)ᵀ.
    longdim = g.n;
    s.small = g.m;
    s.w = b.data;
    s.w_dtype = b.dtype;
    s.w_si = g.b.trans ? b.ld : 1;
    s.w_sk = g.b.trans ? 1 : b.ld;
    x.resize(static_cast<size_t>(g.k * g.m));
    // X(p, j) = op(A)(j, p): the stored A read with the opposite transposition.
    pack_small(a, !g.a.trans, g.k, g.m, x.data());
    s.c_si = 1;
    s.c_sj = g.ldc;
  }
  s.x = x.data();
  s.c = g.c;
  // Chunks of the long dimension: multiples of 64 rows (whole vector
  // blocks), at least ~256 KiB of W each.
  const int64_t row_bytes = std::max<int64_t>(1, g.k * static_cast<int64_t>(dtype_size(s.w_dtype)));
  const int64_t grain = std::max<int64_t>(64, ((int64_t{256} << 10) / row_bytes + 63) & ~int64_t{63});
  parallel_for((longdim + 63) / 64, std::max<int64_t>(1, grain / 64), [&](int64_t b0, int64_t b1) {
    isa.skinny(s, b0 * 64, std::min(longdim, b1 * 64));
  }, g.threads);
}

// Packs op(A) rows [i0, i0+mc) x k-slab [pc, pc+kc) into MR-tall strips.
void pack_a_block(const Isa& isa, const GemmArgs& g, const Src& a, int64_t i0, int64_t mc, int64_t pc, int64_t kc,
                  float* ap) {
  const int MR = isa.mr;
  const int64_t astrips = (mc + MR - 1) / MR;
  const int64_t esize = static_cast<int64_t>(dtype_size(a.dtype));
  const char* base = static_cast<const char*>(a.data);
  if (g.a.trans) {
    // Stored A is k x m: read 16 of its rows across all strips before
    // moving on (one strip at a time would touch kc rows, i.e. kc pages,
    // per MR values). The row segments are short (mc values) and far
    // apart, too little for the hardware prefetcher: fetch the next 16
    // rows while these are copied.
    for (int64_t p0 = 0; p0 < kc; p0 += 16) {
      const int64_t pk = std::min<int64_t>(16, kc - p0);
      for (int64_t q = p0 + 16; q < std::min(kc, p0 + 32); ++q) {
        const char* row = base + ((pc + q) * a.ld + i0) * esize;
        for (int64_t off = 0; off < mc * esize; off += 64) __builtin_prefetch(row + off);
      }
      for (int64_t s = 0; s < astrips; ++s) {
        const int64_t r0 = i0 + s * MR;
        const int wv = static_cast<int>(std::min<int64_t>(MR, i0 + mc - r0));
        isa.pack_copy(a, pc + p0, r0, pk, wv, MR, ap + s * kc * MR + p0 * MR);
      }
    }
  } else {
    for (int64_t s = 0; s < astrips; ++s) {
      const int64_t r0 = i0 + s * MR;
      const int wv = static_cast<int>(std::min<int64_t>(MR, i0 + mc - r0));
      // The next strip's rows, while this one is transposed.
      for (int64_t r = r0 + MR; r < std::min(i0 + mc, r0 + 2 * MR); ++r) {
        const char* row = base + (r * a.ld + pc) * esize;
        for (int64_t off = 0; off < kc * esize; off += 64) __builtin_prefetch(row + off);
      }
      isa.pack_transpose(a, r0, pc, kc, wv, MR, ap + s * kc * MR);
    }
  }
}

// Packs op(B) k-slab [pc, pc+kc) x columns [jc, jc+nc) into NR-wide strips, in parallel.
void pack_b_slab(const Isa& isa, const GemmArgs& g, const Src& b, int64_t pc, int64_t kc, int64_t jc, int64_t nc,
                 float* bp) {
  const int NR = isa.nr;
  const int64_t nstrips = (nc + NR - 1) / NR;
  parallel_for(nstrips, std::max<int64_t>(1, 4096 / kc), [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t j0 = jc + s * NR;
      const int wv = static_cast<int>(std::min<int64_t>(NR, jc + nc - j0));
      if (g.b.trans) isa.pack_transpose(b, j0, pc, kc, wv, NR, bp + s * kc * NR);
      else isa.pack_copy(b, pc, j0, kc, wv, NR, bp + s * kc * NR);
    }
  }, g.threads);
}

// Software prefetch (into L2) of the A block the next k-slab will pack:
// issued a little after each micro-kernel call, so the loads of the next
// packing overlap this slab's arithmetic instead of stalling it.
struct Prefetch {
  const char* base = nullptr;  // first byte of row 0
  int64_t stride = 0;          // bytes between rows
  int64_t rows = 0, lines = 0; // rows, and 64-byte lines per row
  int64_t next = 0;            // lines issued so far
  int64_t per_call = 0;

  void setup(const Src& a, bool trans, int64_t i0, int64_t mc, int64_t pc, int64_t kc, int64_t calls) {
    const int64_t es = static_cast<int64_t>(dtype_size(a.dtype));
    // Stored A rows the block reads: trans: kc rows (pc..), mc values from
    // column i0; else: mc rows (i0..), kc values from column pc.
    base = static_cast<const char*>(a.data) + (trans ? (pc * a.ld + i0) : (i0 * a.ld + pc)) * es;
    stride = a.ld * es;
    rows = trans ? kc : mc;
    lines = ((trans ? mc : kc) * es + 63) / 64;
    next = 0;
    per_call = (rows * lines + calls - 1) / std::max<int64_t>(calls, 1);
  }
  void step() {
    for (int64_t e = std::min(rows * lines, next + per_call); next < e; ++next) {
      __builtin_prefetch(base + (next / lines) * stride + (next % lines) * 64, 0, 2);
    }
  }
};

// All tiles of C rows [i0, i0+mc) x strips [js0, js1) for one k-slab; C row
// r is at g.c + (r - c_row0)·ldc.
void tiles(const Isa& isa, const GemmArgs& g, const float* ap, const float* bp, int64_t i0, int64_t mc, int64_t jc,
           int64_t nc, int64_t js0, int64_t js1, int64_t kc, bool load_c, int64_t c_row0 = 0, Prefetch* pf = nullptr) {
  const int MR = isa.mr, NR = isa.nr;
  const int64_t astrips = (mc + MR - 1) / MR;
  // A strip outer: its kc x MR panel stays in L1 while the B strips of
  // the slab stream from L2.
  for (int64_t is = 0; is < astrips; ++is) {
    const int64_t r0 = i0 + is * MR;
    const int mr = static_cast<int>(std::min<int64_t>(MR, i0 + mc - r0));
    for (int64_t js = js0; js < js1; ++js) {
      const int64_t j0 = jc + js * NR;
      const int nr = static_cast<int>(std::min<int64_t>(NR, jc + nc - j0));
      isa.micro(kc, ap + is * kc * MR, bp + js * kc * NR, g.c + (r0 - c_row0) * g.ldc + j0, g.ldc, load_c, mr, nr);
      if (pf) pf->step();
    }
  }
}

void run_packed(const Isa& isa, const GemmArgs& g, const Src& a, const Src& b) {
  const int MR = isa.mr, NR = isa.nr;
  const int nthreads = g.threads > 0 ? g.threads : threads();
  const int64_t mblocks = (g.m + kMC - 1) / kMC;
  // Too few row blocks for the threads: split the strips too (A is then
  // packed once per group).
  auto groups = [&](int64_t nstrips) {
    const int64_t want = 2 * static_cast<int64_t>(nthreads);
    return mblocks >= want ? int64_t{1} : std::min<int64_t>(nstrips, (want + mblocks - 1) / mblocks);
  };
  const int64_t all_strips = (g.n + NR - 1) / NR;
  const bool b_fits = g.k * all_strips * NR * 4 <= kStationaryBytes;
  if (b_fits) {
    // Narrow B (the randomized SVD's sketches, a few hundred columns): pack
    // all of it once, then each block of C rows runs through every k-slab
    // while it stays in L2 (otherwise all of C would travel to and from L3
    // once per slab).
    std::vector<float> bpack(static_cast<size_t>(g.k * all_strips * NR));
    for (int64_t pc = 0; pc < g.k; pc += kKC) {
      pack_b_slab(isa, g, b, pc, std::min(kKC, g.k - pc), 0, g.n, bpack.data() + pc * all_strips * NR);
    }
    const int64_t ngroups = groups(all_strips);
    const int64_t per_group = (all_strips + ngroups - 1) / ngroups;
    parallel_for(mblocks * ngroups, 1, [&](int64_t t0, int64_t t1) {
      thread_local std::vector<float> apack;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ib = t / ngroups, grp = t % ngroups;
        const int64_t i0 = ib * kMC, mc = std::min(kMC, g.m - i0);
        const int64_t js0 = grp * per_group, js1 = std::min(all_strips, js0 + per_group);
        if (js0 >= js1) continue;
        float* ap = scratch(apack, static_cast<size_t>(((mc + MR - 1) / MR) * kKC * MR + 16));
        Prefetch pf;
        for (int64_t pc = 0; pc < g.k; pc += kKC) {
          const int64_t kc = std::min(kKC, g.k - pc);
          pack_a_block(isa, g, a, i0, mc, pc, kc, ap);
          const bool more = pc + kKC < g.k;
          if (more) pf.setup(a, g.a.trans, i0, mc, pc + kKC, std::min(kKC, g.k - pc - kKC), ((mc + MR - 1) / MR) * (js1 - js0));
          tiles(isa, g, ap, bpack.data() + pc * all_strips * NR, i0, mc, 0, g.n, js0, js1, kc, g.accumulate || pc > 0, 0,
                more ? &pf : nullptr);
        }
      }
    }, g.threads);
    return;
  }
  std::vector<float> bpack;
  for (int64_t jc = 0; jc < g.n; jc += kNC) {
    const int64_t nc = std::min(kNC, g.n - jc);
    const int64_t nstrips = (nc + NR - 1) / NR;
    const int64_t ngroups = groups(nstrips);
    const int64_t per_group = (nstrips + ngroups - 1) / ngroups;
    for (int64_t pc = 0; pc < g.k; pc += kKC) {
      const int64_t kc = std::min(kKC, g.k - pc);
      float* bp = scratch(bpack, static_cast<size_t>(nstrips * kc * NR));
      pack_b_slab(isa, g, b, pc, kc, jc, nc, bp);
      parallel_for(mblocks * ngroups, 1, [&](int64_t t0, int64_t t1) {
        thread_local std::vector<float> apack;
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t ib = t / ngroups, grp = t % ngroups;
          const int64_t i0 = ib * kMC, mc = std::min(kMC, g.m - i0);
          const int64_t js0 = grp * per_group, js1 = std::min(nstrips, js0 + per_group);
          if (js0 >= js1) continue;
          float* ap = scratch(apack, static_cast<size_t>(((mc + MR - 1) / MR) * kc * MR + 16));
          pack_a_block(isa, g, a, i0, mc, pc, kc, ap);
          tiles(isa, g, ap, bp, i0, mc, jc, nc, js0, js1, kc, g.accumulate || pc > 0);
        }
      }, g.threads);
    }
  }
}

}  // namespace

const Isa* gemmk::best_isa() {
  const Isa* i = isa_for(GemmKernel::Avx512);
  return i ? i : isa_for(GemmKernel::Avx2);
}

GemmKernel gemm_auto_kernel() {
  if (isa_for(GemmKernel::Avx512)) return GemmKernel::Avx512;
  if (isa_for(GemmKernel::Avx2)) return GemmKernel::Avx2;
  return GemmKernel::Reference;
}

const char* gemm_kernel_name(GemmKernel k) {
  switch (k) {
    case GemmKernel::Auto: return gemm_kernel_name(gemm_auto_kernel());
    case GemmKernel::Reference: return "reference";
    case GemmKernel::Avx2: return "avx2";
    case GemmKernel::Avx512: return "avx512";
    case GemmKernel::Cuda: return "cuda";
  }
  return "?";
}

bool gemm_kernel_available(GemmKernel k, std::string* why) {
  switch (k) {
    case GemmKernel::Auto:
    case GemmKernel::Reference: return true;
    case GemmKernel::Avx2:
    case GemmKernel::Avx512:
      if (isa_for(k)) return true;
      if (why) {
        const bool hw = k == GemmKernel::Avx2 ? cpu_features().avx2 : cpu_features().avx512;
        const bool built = k == GemmKernel::Avx2 ? gemmk::avx2::isa() != nullptr : gemmk::avx512::isa() != nullptr;
        *why = std::string("the ") + gemm_kernel_name(k) + " kernel is not available: " +
               (!built ? "this build has no such kernel" : !hw ? "the CPU lacks the instructions" : "SLIMTENSOR_ISA turns it off");
      }
      return false;
    case GemmKernel::Cuda: return cuda_available(why);
  }
  if (why) *why = "unknown kernel";
  return false;
}

Status gemm_pack_b(const GemmArgs& g, PackedB* out) {
  out->kernel = g.kernel == GemmKernel::Auto ? gemm_auto_kernel() : g.kernel;
  out->data.clear();
  out->strips = 0;
  if (out->kernel == GemmKernel::Cuda) return Status::Error(Code::Unsupported, "gemm_pack_b: CPU kernels only");
  Status st = check_operand(g.b, "B", g.k, g.n);
  if (!st.ok() || out->kernel == GemmKernel::Reference) return st;
  const Isa* isa = isa_for(out->kernel);
  if (!isa) {
    std::string why;
    gemm_kernel_available(out->kernel, &why);
    return Status::Error(Code::Unsupported, why);
  }
  const Src b{g.b.data, g.b.dtype, g.b.ld, g.b.trans ? g.n : g.k, g.b.trans ? g.k : g.n};
  out->strips = (g.n + isa->nr - 1) / isa->nr;
  out->data.resize(static_cast<size_t>(std::max<int64_t>(g.k, 1) * out->strips * isa->nr));
  for (int64_t pc = 0; pc < g.k; pc += kKC) {
    pack_b_slab(*isa, g, b, pc, std::min(kKC, g.k - pc), 0, g.n, out->data.data() + pc * out->strips * isa->nr);
  }
  return Status::Ok();
}

Status gemm_rows(const GemmArgs& g, const PackedB& pb, int64_t i0, int64_t i1) {
  if (i1 <= i0 || g.n == 0) return Status::Ok();
  const Src a{g.a.data, g.a.dtype, g.a.ld, g.a.trans ? g.k : g.m, g.a.trans ? g.m : g.k};
  if (pb.kernel == GemmKernel::Reference || g.k == 0) {
    const Src b{g.b.data, g.b.dtype, g.b.ld, g.b.trans ? g.n : g.k, g.b.trans ? g.k : g.n};
    for (int64_t i = i0; i < i1; ++i) {
      // one row at a time into its place relative to g.c
      float* crow = g.c + (i - i0) * g.ldc;
      if (g.k == 0) {
        if (!g.accumulate) std::fill(crow, crow + g.n, 0.0f);
        continue;
      }
      // op(A) row i as a one-row matrix: the stored row i, or stored column i.
      const int64_t off = (g.a.trans ? i : i * a.ld) * static_cast<int64_t>(dtype_size(a.dtype));
      const Src ai{static_cast<const char*>(a.data) + off, a.dtype, a.ld, a.rows, a.cols};
      gemmk::ref::rows(g.n, g.k, ai, g.a.trans, b, g.b.trans, crow, g.ldc, g.accumulate, 0, 1);
    }
    return Status::Ok();
  }
  const Isa* isa = isa_for(pb.kernel);
  if (!isa) return Status::Error(Code::Unsupported, "gemm_rows: the packed kernel is not available");
  const int MR = isa->mr, NR = isa->nr;
  thread_local std::vector<float> apack;
  for (int64_t r0 = i0; r0 < i1; r0 += kMC) {
    const int64_t mc = std::min(kMC, i1 - r0);
    float* ap = scratch(apack, static_cast<size_t>(((mc + MR - 1) / MR) * kKC * MR + 16));
    for (int64_t pc = 0; pc < g.k; pc += kKC) {
      const int64_t kc = std::min(kKC, g.k - pc);
      pack_a_block(*isa, g, a, r0, mc, pc, kc, ap);
      tiles(*isa, g, ap, pb.data.data() + pc * pb.strips * NR, r0, mc, 0, g.n, 0, pb.strips, kc, g.accumulate || pc > 0, i0);
    }
  }
  return Status::Ok();
}

Status gemm(const GemmArgs& g) {
  if (g.m < 0 || g.n < 0 || g.k < 0) return Status::Error(Code::Shape, "negative dimension");
  Status st = check_operand(g.a, "A", g.m, g.k);
  if (!st.ok()) return st;
  st = check_operand(g.b, "B", g.k, g.n);
  if (!st.ok()) return st;
  if (g.ldc < std::max<int64_t>(g.n, 1)) return Status::Error(Code::Shape, "C: leading dimension is smaller than n");
  if (g.m == 0 || g.n == 0) return Status::Ok();
  if (!g.c) return Status::Error(Code::Value, "C has no data");
  GemmKernel kernel = g.kernel == GemmKernel::Auto ? gemm_auto_kernel() : g.kernel;
  if (kernel == GemmKernel::Cuda) return cuda_gemm(g);
  if (g.k == 0) {
    if (!g.accumulate) {
      for (int64_t i = 0; i < g.m; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.n, 0.0f);
    }
    return Status::Ok();
  }
  const Src a{g.a.data, g.a.dtype, g.a.ld, g.a.trans ? g.k : g.m, g.a.trans ? g.m : g.k};
  const Src b{g.b.data, g.b.dtype, g.b.ld, g.b.trans ? g.n : g.k, g.b.trans ? g.k : g.n};
  if (kernel == GemmKernel::Reference) {
    run_reference(g, a, b);
    return Status::Ok();
  }
  const Isa* isa = isa_for(kernel);
  if (!isa) {
    std::string why;
    gemm_kernel_available(kernel, &why);
    return Status::Error(Code::Unsupported, why);
  }
  if (std::min(g.m, g.n) <= isa->skinny_max) run_skinny(*isa, g, a, b);
  else run_packed(*isa, g, a, b);
  return Status::Ok();
}

}  // namespace st
