// The SIMD row kernel of the distillation loss, written once over 16-lane
// vectors and compiled twice: by distill_avx2.cc (a lane pair of two ymm
// registers, AVX2 + FMA + F16C) and by distill_avx512.cc (one zmm register,
// AVX-512 F/BW/VL). Each file defines the ISA traits `I` (the vector and
// mask types and the operations below) in an anonymous namespace and
// includes this header, so every instantiation has internal linkage: each
// SIMD object holds its own copy, compiled with its own flags, and no copy
// can replace another at link time (scripts/native-test.cjs checks for weak
// symbols). Include only from those two files.
//
// Both kernels run the same operations in the same order on every lane, so
// their results are identical bit for bit (test/distill.test.ts,
// test/native/distill_test.cc). Against the scalar reference they differ by
// the polynomial exp (0.94 ulp; see the traits) and by the order of the
// sums, within the tolerance the tests state.
//
// The order, which both traits reproduce exactly:
//   - a row is cut into blocks of kBlock = 128 logits (the last one holds
//     the rest, possibly fewer); element j belongs to lane j % 16;
//   - sweep 0: the row maxima of z (and of t for a dense teacher), exact in
//     any order;
//   - sweep 1, per block: one exp per element against the row maximum,
//     summed per lane in f32 in element order starting from 0, and that
//     block sum added to the lane's double sum; the 16 lane sums are added
//     as a tree (tree_sum below);
//   - sweeps 1b and 2: probabilities are sweep 1's exps times one factor per
//     row (1/S, folded in double into the gradient's coefficients and
//     rounded once); divergence terms are summed per lane in f32 over the
//     block, then per lane in double, and the 16 lane sums are added as a
//     tree: lane i + lane i+8, then i + i+4, then i + i+2, then the two left.
#pragma once
#include <cmath>
#include <cstdint>

#include "distill_kernels.h"

namespace st {
namespace dsimd {
namespace {  // internal linkage on purpose (see above)

constexpr int64_t kLanes = 16;
constexpr int64_t kBlock = 128;                         // logits per block: 8 vectors
constexpr uint64_t kStreamBytes = uint64_t{32} << 20;   // gradients this large are stored non-temporally

// The row's scratch (sweep_scratch, 64-byte aligned): sweep 1's exps, kept
// for sweeps 1b and 2, so that those need no exp per logit.
struct Scratch {
  float* eu;   // exp((z − M)/T)
  float* ez;   // exp(z − M), T != 1 and a cross-entropy term
  float* et;   // exp((t − M_t)/T), dense teacher
  float* lqm;  // jsd: log q − log m, from sweep 1b
};

inline Scratch make_scratch(int64_t cols, bool sep, bool dense, bool jsd) {
  const int64_t padded = (cols + kLanes - 1) & ~(kLanes - 1);
  float* raw = sweep_scratch(padded * 4 + kLanes);
  float* base = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(raw) + 63) & ~uintptr_t{63});
  Scratch s;
  s.eu = base;
  s.ez = sep ? base + padded : nullptr;
  s.et = dense ? base + 2 * padded : nullptr;
  s.lqm = jsd ? base + 3 * padded : nullptr;
  return s;
}

// Where a row's next row is fetched into L2 ahead of its turn (a line per
// 16 logits at f32, every other vector at 16 bits): null pointers when
// there is none.
struct Prefetch {
  const uint8_t* z = nullptr;
  const uint8_t* t = nullptr;
};

template <class I, DType ZT, DType TT>
inline void prefetch_at(const Prefetch& pf, int64_t j) {
  constexpr int64_t zsz = ZT == DType::F32 ? 4 : 2, tsz = TT == DType::F32 ? 4 : 2;
  if (pf.z && (zsz == 4 || (j & 31) == 0)) I::prefetch(pf.z + j * zsz);
  if (pf.t && (tsz == 4 || (j & 31) == 0)) I::prefetch(pf.t + j * tsz);
}

// ---- sweep 0: the row maxima ---------------------------------------------------

// The largest student logit and (DENSE) teacher logit of the row: four
// independent chains per input, so the pass runs at load speed.
template <class I, DType ZT, DType TT, bool DENSE>
void row_max(const void* zp, const void* tp, int64_t base, int64_t cols, float* mz, float* mt) {
  using V = typename I::V;
  const int64_t full = cols & ~(kLanes - 1);
  const int rest = static_cast<int>(cols - full);
  const V ninf = I::set1(dm::neg_inf());
  V z0 = ninf, z1 = ninf, z2 = ninf, z3 = ninf, t0 = ninf, t1 = ninf, t2 = ninf, t3 = ninf;
  int64_t j = 0;
  for (; j + 4 * kLanes <= full; j += 4 * kLanes) {
    z0 = I::max(z0, I::template load<ZT>(zp, base + j));
    z1 = I::max(z1, I::template load<ZT>(zp, base + j + kLanes));
    z2 = I::max(z2, I::template load<ZT>(zp, base + j + 2 * kLanes));
    z3 = I::max(z3, I::template load<ZT>(zp, base + j + 3 * kLanes));
    if (DENSE) {
      t0 = I::max(t0, I::template load<TT>(tp, base + j));
      t1 = I::max(t1, I::template load<TT>(tp, base + j + kLanes));
      t2 = I::max(t2, I::template load<TT>(tp, base + j + 2 * kLanes));
      t3 = I::max(t3, I::template load<TT>(tp, base + j + 3 * kLanes));
    }
  }
  for (; j < full; j += kLanes) {
    z0 = I::max(z0, I::template load<ZT>(zp, base + j));
    if (DENSE) t0 = I::max(t0, I::template load<TT>(tp, base + j));
  }
  if (rest > 0) {
    const typename I::M valid = I::first(rest);
    z1 = I::max(z1, I::blend(valid, ninf, I::template load_n<ZT>(zp, base + full, rest)));
    if (DENSE) t1 = I::max(t1, I::blend(valid, ninf, I::template load_n<TT>(tp, base + full, rest)));
  }
  *mz = I::hmax(I::max(I::max(z0, z1), I::max(z2, z3)));
  if (DENSE) *mt = I::hmax(I::max(I::max(t0, t1), I::max(t2, t3)));
}

// ---- sweep 1: the exps and their sums ------------------------------------------

template <class I>
struct Sweep1 {
  typename I::V mz, mt;  // the row maxima, broadcast
  typename I::D su, sz, st;
  typename I::V zbad;    // Σ z·0: 0 while every student logit is finite, NaN after any other
  typename I::M okt;     // every lane stays set while teacher logits are < +Infinity (and not NaN)
};

// One vector of sweep 1's exps (sums into su, sz, st). `valid` masks the
// lanes of a partial vector (Partial), whose inputs hold 0 beyond the row.
template <class I, bool T1, bool SEP, bool DENSE, bool Partial>
inline void sweep1_vec(typename I::V z, typename I::V t, typename I::M valid, float* eu_out, float* ez_out, float* et_out,
                       bool square, typename I::V inv_t, typename I::V inf, Sweep1<I>& w, typename I::V& su,
                       typename I::V& sz, typename I::V& st) {
  using V = typename I::V;
  w.zbad = I::fmadd(z, I::zero(), w.zbad);
  const V dz = I::sub(z, w.mz);
  V eu = I::exp_le0(T1 ? dz : I::mul(dz, inv_t));
  if (Partial) eu = I::maskz(valid, eu);
  I::storef(eu_out, eu);
  su = I::add(su, eu);
  if (SEP) {
    // T = 2: exp(z − M) = exp((z − M)/2)², one multiply for an exp.
    V ez = square ? I::mul(eu, eu) : I::exp_le0(dz);
    if (Partial) ez = I::maskz(valid, ez);
    I::storef(ez_out, ez);
    sz = I::add(sz, ez);
  }
  if (DENSE) {
    w.okt = I::and_lt(w.okt, t, inf);
    const V dt = I::sub(t, w.mt);
    V et = I::exp_le0(T1 ? dt : I::mul(dt, inv_t));
    if (Partial) et = I::maskz(valid, et);
    I::storef(et_out, et);
    st = I::add(st, et);
  }
}

template <class I, DType ZT, DType TT, bool T1, bool SEP, bool DENSE>
void sweep1(const void* zp, const void* tp, int64_t base, int64_t cols, bool square, typename I::V inv_t, Sweep1<I>& w,
            const Scratch& sc, const Prefetch& pf) {
  using V = typename I::V;
  const int64_t full = cols & ~(kLanes - 1);
  const int rest = static_cast<int>(cols - full);
  const V inf = I::set1(bits_f32(0x7f800000u));
  const typename I::M valid = I::first(rest);
  for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
    const int64_t j1 = j0 + kBlock < full ? j0 + kBlock : full;  // the block's full vectors: [j0, j1)
    // The block's terms: up to 8 per lane summed in f32, then into double.
    V su = I::zero(), sz = su, st = su;
    for (int64_t j = j0; j < j1; j += kLanes) {
      prefetch_at<I, ZT, TT>(pf, j);
      const V z = I::template load<ZT>(zp, base + j);
      const V t = DENSE ? I::template load<TT>(tp, base + j) : z;
      sweep1_vec<I, T1, SEP, DENSE, false>(z, t, valid, sc.eu + j, SEP ? sc.ez + j : nullptr, DENSE ? sc.et + j : nullptr,
                                           square, inv_t, inf, w, su, sz, st);
    }
    if (rest > 0 && full < j0 + kBlock) {  // the row's partial vector, at `full`
      const V z = I::template load_n<ZT>(zp, base + full, rest);
      const V t = DENSE ? I::template load_n<TT>(tp, base + full, rest) : z;
      sweep1_vec<I, T1, SEP, DENSE, true>(z, t, valid, sc.eu + full, SEP ? sc.ez + full : nullptr,
                                          DENSE ? sc.et + full : nullptr, square, inv_t, inf, w, su, sz, st);
    }
    I::dadd(w.su, su);
    if (SEP) I::dadd(w.sz, sz);
    if (DENSE) I::dadd(w.st, st);
  }
}

// The 16 lane sums of a double accumulator, as a tree.
template <class I>
inline double tree_sum(const typename I::D& s) {
  alignas(64) double d[kLanes];
  I::dstore(d, s);
  double a[8], c[4];
  for (int i = 0; i < 8; ++i) a[i] = d[i] + d[i + 8];
  for (int i = 0; i < 4; ++i) c[i] = a[i] + a[i + 4];
  return (c[0] + c[2]) + (c[1] + c[3]);
}

// ---- sweeps 1b and 2 ---------------------------------------------------------
//
// With M the row maximum and S = Σ exp((z − M)/T), q = eu·exp(−log S) where
// eu is sweep 1's exp, and likewise p = et·exp(−log S_t), s = ez·exp(−log S_z):
// every probability is a scratch value times a row constant, and the
// gradient of dm::grad_forward / grad_reverse / grad_jsd regroups into
//   forward   g = ku·eu − kt·et               (+ kz·ez when T != 1 with CE)
//   reverse   g = eu·(B − A·(log p − log q))   (+ kz·ez)
//   jsd       g = eu·(B + A·(log q − log m))   (+ kz·ez)
// with the constants (coefficients, reduction scale, 1/S factors, KL) folded
// in once per row, in double, rounded once. The divergence sums factor the
// same way (Σ p·(lp − lq) = exp(−log S_t)·Σ et·(lp − lq)).

template <class I>
struct Row {
  using V = typename I::V;
  V mz, mt;      // the row maxima
  V inv_t, floor;
  V c0;          // log S − log S_t: log p − log q = max((t − M_t)/T, floor) − (z − M)/T + c0
  V lsu, lst;    // log S, log S_t (jsd)
  V log_beta, log_1mb;
  V ku, kt, kz;  // forward: ku·eu − kt·et + kz·ez
  V A, B;        // reverse, jsd
};

// log p − log q.
template <class I, bool T1>
inline typename I::V log_ratio(const Row<I>& r, typename I::V z, typename I::V t) {
  const typename I::V dt = I::sub(t, r.mt), dz = I::sub(z, r.mz);
  return I::add(I::sub(I::max(T1 ? dt : I::mul(dt, r.inv_t), r.floor), T1 ? dz : I::mul(dz, r.inv_t)), r.c0);
}
template <class I, bool T1>
inline typename I::V log_q(const Row<I>& r, typename I::V z) {
  const typename I::V d = I::sub(z, r.mz);
  return I::sub(T1 ? d : I::mul(d, r.inv_t), r.lsu);
}
template <class I, bool T1>
inline typename I::V log_p(const Row<I>& r, typename I::V t) {
  const typename I::V d = I::sub(t, r.mt);
  return I::sub(I::max(T1 ? d : I::mul(d, r.inv_t), r.floor), r.lst);
}
// dm::log_m on 16 lanes.
template <class I>
inline typename I::V log_m(const Row<I>& r, typename I::V lp, typename I::V lq) {
  using V = typename I::V;
  const V x = I::add(r.log_beta, lp), y = I::add(r.log_1mb, lq);
  const V hi = I::max(x, y), lo = I::min(x, y);
  return I::add(hi, I::log1p01(I::exp_le0(I::sub(lo, hi))));
}

enum class Mode { NoTeacher, Forward, Reverse, Jsd };

// Where sweep 2 writes: nowhere (the loss only), ordinary stores, or
// non-temporal ones.
enum class Out { None, Store, Stream };

// Sweep 2: the gradient without the one-hot and top-k terms (written
// afterwards) and, for forward-kl, Σ et·(log p − log q).
template <class I, DType ZT, DType TT, Mode M, bool T1, bool SEP, Out O>
double sweep2(const DistillArgs& a, const Row<I>& r, const Scratch& sc, int64_t base, const Prefetch& pf) {
  using V = typename I::V;
  const void* zp = a.student.data;
  const void* tp = a.teacher.data;
  void* gp = a.grad;
  const int64_t cols = a.student.cols, full = cols & ~(kLanes - 1);
  const int rest = static_cast<int>(cols - full);
  typename I::D dsum = I::dzero();
  typename I::template Streamer<ZT> out(gp, base, O == Out::Stream);
  auto vec = [&](int64_t j, V z, V t, V* dterm) -> V {
    const V eu = I::loadf(sc.eu + j);
    V g;
    if (M == Mode::NoTeacher) {
      g = I::mul(eu, r.ku);
    } else if (M == Mode::Forward) {
      const V et = I::loadf(sc.et + j);
      *dterm = I::mul(et, log_ratio<I, T1>(r, z, t));
      g = I::fmsub(eu, r.ku, I::mul(et, r.kt));
    } else if (M == Mode::Reverse) {
      g = I::mul(eu, I::fnmadd(r.A, log_ratio<I, T1>(r, z, t), r.B));
    } else {
      g = I::mul(eu, I::fmadd(r.A, I::loadf(sc.lqm + j), r.B));
    }
    if (SEP) g = I::fmadd(I::loadf(sc.ez + j), r.kz, g);
    return g;
  };
  for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
    const int64_t j1 = j0 + kBlock < full ? j0 + kBlock : full;
    V dacc = I::zero(), dterm = dacc;
    for (int64_t j = j0; j < j1; j += kLanes) {
      prefetch_at<I, ZT, TT>(pf, j);
      // z and t only where the divergence needs their log-probabilities.
      const V z = M == Mode::Forward || M == Mode::Reverse ? I::template load<ZT>(zp, base + j) : dterm;
      const V t = M == Mode::Forward || M == Mode::Reverse ? I::template load<TT>(tp, base + j) : dterm;
      const V g = vec(j, z, t, &dterm);
      if (M == Mode::Forward) dacc = I::add(dacc, dterm);
      if (O == Out::Stream) out.put(j, g);
      else if (O == Out::Store) I::template store<ZT>(gp, base + j, g);
    }
    if (rest > 0 && full < j0 + kBlock) {
      const bool zt_needed = M == Mode::Forward || M == Mode::Reverse;
      const V z = zt_needed ? I::template load_n<ZT>(zp, base + full, rest) : dterm;
      const V t = zt_needed ? I::template load_n<TT>(tp, base + full, rest) : dterm;
      const V g = vec(full, z, t, &dterm);
      if (M == Mode::Forward) dacc = I::add(dacc, I::maskz(I::first(rest), dterm));
      if (O == Out::Stream) out.tail(full, g, rest);
      else if (O == Out::Store) I::template store_n<ZT>(gp, base + full, rest, g);
    }
    if (M == Mode::Forward) I::dadd(dsum, dacc);
  }
  if (O == Out::Stream) {
    out.flush(full);
    I::sfence();  // order the streamed stores before the row is reported done
  }
  return M == Mode::Forward ? tree_sum<I>(dsum) : 0.0;
}

// Sweep 1b: Σ eu·(log q − log p) (reverse), or Σ et·(log p − log m) and
// Σ eu·(log q − log m) (jsd, which keeps log q − log m for sweep 2).
template <class I, DType ZT, DType TT, bool T1, bool JSD>
void sweep1b(const DistillArgs& a, const Row<I>& r, const Scratch& sc, int64_t base, double* sp_out, double* sq_out) {
  using V = typename I::V;
  const void* zp = a.student.data;
  const void* tp = a.teacher.data;
  const int64_t cols = a.student.cols, full = cols & ~(kLanes - 1);
  const int rest = static_cast<int>(cols - full);
  typename I::D kp = I::dzero(), kq = I::dzero();
  auto terms = [&](int64_t j, V z, V t, V* tp_, V* tq_) {
    const V eu = I::loadf(sc.eu + j);
    if (!JSD) {
      *tq_ = I::mul(eu, log_ratio<I, T1>(r, z, t));  // eu·(log p − log q); negated at the end
      return;
    }
    const V lq = log_q<I, T1>(r, z), lp = log_p<I, T1>(r, t);
    const V lm = log_m<I>(r, lp, lq);
    const V lqm = I::sub(lq, lm);
    I::storef(sc.lqm + j, lqm);
    *tp_ = I::mul(I::loadf(sc.et + j), I::sub(lp, lm));
    *tq_ = I::mul(eu, lqm);
  };
  for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
    const int64_t j1 = j0 + kBlock < full ? j0 + kBlock : full;
    V ap = I::zero(), aq = ap;
    for (int64_t j = j0; j < j1; j += kLanes) {
      V tp_ = I::zero(), tq_ = tp_;
      terms(j, I::template load<ZT>(zp, base + j), I::template load<TT>(tp, base + j), &tp_, &tq_);
      ap = I::add(ap, tp_);
      aq = I::add(aq, tq_);
    }
    if (rest > 0 && full < j0 + kBlock) {
      V tp_ = I::zero(), tq_ = tp_;
      terms(full, I::template load_n<ZT>(zp, base + full, rest), I::template load_n<TT>(tp, base + full, rest), &tp_, &tq_);
      const typename I::M v = I::first(rest);
      ap = I::add(ap, I::maskz(v, tp_));
      aq = I::add(aq, I::maskz(v, tq_));
    }
    if (JSD) I::dadd(kp, ap);
    I::dadd(kq, aq);
  }
  *sp_out = JSD ? tree_sum<I>(kp) : 0.0;
  *sq_out = tree_sum<I>(kq);
}

template <class I, DType ZT, DType TT, Mode M, bool T1, bool SEP>
double run_sweep2(const DistillArgs& a, const Row<I>& r, const Scratch& sc, int64_t base, Out o, const Prefetch& pf) {
  if (o == Out::Stream) return sweep2<I, ZT, TT, M, T1, SEP, Out::Stream>(a, r, sc, base, pf);
  if (o == Out::Store) return sweep2<I, ZT, TT, M, T1, SEP, Out::Store>(a, r, sc, base, pf);
  return sweep2<I, ZT, TT, M, T1, SEP, Out::None>(a, r, sc, base, pf);
}

template <class I, DType ZT, DType TT, Mode M, bool T1>
double sweep2_sep(const DistillArgs& a, const Row<I>& r, const Scratch& sc, int64_t base, Out o, bool sep, const Prefetch& pf) {
  if (!T1 && sep) return run_sweep2<I, ZT, TT, M, false, true>(a, r, sc, base, o, pf);
  return run_sweep2<I, ZT, TT, M, T1, false>(a, r, sc, base, o, pf);
}

inline float rounded(double x) { return static_cast<float>(x); }

template <class I, DType ZT, DType TT, bool T1>
RowOut distill_row(const DistillArgs& a, const DistillPlan& p, int64_t row) {
  using V = typename I::V;
  RowOut out;
  const int64_t cols = a.student.cols, base = row * cols;
  if (a.labels && a.labels[row] == a.ignore_index) {
    if (p.grad) zero_grad_row(a, row);
    return out;
  }
  const dm::Coeffs& c = p.c;
  const bool dense = p.kd && !p.topk;
  const bool sep = p.ce && !p.t1;
  const bool jsd = dense && p.div == Divergence::JSD;
  const Scratch sc = make_scratch(cols, sep, dense, jsd);
  const void* zp = a.student.data;
  const void* tp = a.teacher.data;

  // The next row's logits are fetched into L2 while this one computes.
  Prefetch pf;
  if (row + 1 < a.student.rows) {
    pf.z = static_cast<const uint8_t*>(zp) + (base + cols) * static_cast<int64_t>(dtype_size(ZT));
    if (dense) pf.t = static_cast<const uint8_t*>(tp) + (base + cols) * static_cast<int64_t>(dtype_size(TT));
  }

  float mz = 0, mt = 0;
  if (dense) row_max<I, ZT, TT, true>(zp, tp, base, cols, &mz, &mt);
  else row_max<I, ZT, DType::F32, false>(zp, tp, base, cols, &mz, &mt);

  const V inv_t = I::set1(c.inv_t);
  Sweep1<I> w;
  w.mz = I::set1(mz);
  w.mt = I::set1(mt);
  w.su = w.sz = w.st = I::dzero();
  w.zbad = I::zero();
  w.okt = I::first(kLanes);
  const bool square = sep && c.inv_t == 0.5f;
  if (dense) {
    if (!T1 && sep) sweep1<I, ZT, TT, false, true, true>(zp, tp, base, cols, square, inv_t, w, sc, pf);
    else sweep1<I, ZT, TT, T1, false, true>(zp, tp, base, cols, square, inv_t, w, sc, pf);
  } else {  // the teacher's dtype plays no part
    if (!T1 && sep) sweep1<I, ZT, DType::F32, false, true, false>(zp, tp, base, cols, square, inv_t, w, sc, pf);
    else sweep1<I, ZT, DType::F32, T1, false, false>(zp, tp, base, cols, square, inv_t, w, sc, pf);
  }
  if (!I::all(I::eq(w.zbad, I::zero())) || (dense && !I::all(w.okt))) {
    out.error = RowError::NonFinite;
    return out;
  }
  if (dense && !(mt > dm::neg_inf())) {
    out.error = RowError::NoTeacher;
    return out;
  }
  dm::RowStats rs;
  rs.mz = mz;
  rs.lsu = dm::log_sum(tree_sum<I>(w.su));
  rs.lsz = p.t1 ? rs.lsu : p.ce ? dm::log_sum(tree_sum<I>(w.sz)) : 0.0f;
  rs.mt = dense ? mt : 0.0f;
  rs.lst = dense ? dm::log_sum(tree_sum<I>(w.st)) : 0.0f;

  double ce = 0;
  if (p.ce) {
    const float zy = dm::load_logit(a.student.data, a.student.dtype, base + a.labels[row]);
    ce = static_cast<double>(rs.lsz) - static_cast<double>(zy - rs.mz);
  }

  // 1/S factors: q = eu·fu, p = et·ft, s = ez·fz.
  const double fu = std::exp(-static_cast<double>(rs.lsu));
  const double ft = dense ? std::exp(-static_cast<double>(rs.lst)) : 0.0;
  const double fz = sep ? std::exp(-static_cast<double>(rs.lsz)) : 0.0;
  const double scale = c.scale, a_t = c.a_t, b = c.b;

  Row<I> r;
  r.mz = w.mz;
  r.mt = w.mt;
  r.inv_t = inv_t;
  r.floor = I::set1(dm::kLogFloor);
  r.c0 = I::set1(rs.lsu - rs.lst);
  r.lsu = I::set1(rs.lsu);
  r.lst = I::set1(rs.lst);
  r.log_beta = I::set1(c.log_beta);
  r.log_1mb = I::set1(c.log_1mb);
  // The cross-entropy's s is q at T = 1 (folded into ku), else its own term.
  r.ku = I::set1(rounded(scale * (a_t + (sep ? 0.0 : b)) * fu));
  r.kt = I::set1(rounded(scale * a_t * ft));
  r.kz = I::set1(rounded(scale * b * fz));

  double d = 0;
  float kl = 0;  // reverse-kl: KL(q‖p); jsd: KL(q‖m)
  float* topk_p = nullptr;
  if (p.kd && p.topk) {
    topk_p = float_scratch(a.k);
    RowError e = RowError::Ok;
    d = topk_divergence(a, p, row, rs, topk_p, &e);
    if (e != RowError::Ok) {
      out.error = e;
      return out;
    }
  } else if (dense && p.div != Divergence::ForwardKL) {
    double sp = 0, sq = 0;
    if (!jsd) {
      if (T1) sweep1b<I, ZT, TT, T1, false>(a, r, sc, base, &sp, &sq);
      else sweep1b<I, ZT, TT, false, false>(a, r, sc, base, &sp, &sq);
      const double kqp = -fu * sq;
      kl = static_cast<float>(kqp);
      d = kqp;
    } else {
      sweep1b<I, ZT, TT, T1, true>(a, r, sc, base, &sp, &sq);
      const double kpm = ft * sp, kqm = fu * sq;
      kl = static_cast<float>(kqm);
      d = static_cast<double>(a.beta) * kpm + (1.0 - a.beta) * kqm;
    }
    const double at = jsd ? static_cast<double>(c.a_t_jsd) : a_t;
    // reverse: q·a_t·((lq − lp) − kl) + b·s = eu·fu·(b − a_t·kl − a_t·(lp − lq))
    // jsd:     q·a_t'·((lq − lm) − kl) + b·s = eu·fu·(b − a_t'·kl + a_t'·(lq − lm))
    r.A = I::set1(rounded(scale * at * fu));
    r.B = I::set1(rounded(scale * ((sep ? 0.0 : b) - at * static_cast<double>(kl)) * fu));
  }

  Special* specials = nullptr;
  int64_t n_specials = 0;
  if (p.grad) {
    specials = special_scratch(a.k + 1);
    n_specials = row_specials(a, p, row, rs, kl, topk_p, specials);
  }
  const bool forward_dense = dense && p.div == Divergence::ForwardKL;
  if (p.grad || forward_dense) {
    // A large gradient (not in place) is streamed past the caches: no read
    // for ownership of lines about to be overwritten, no eviction of the
    // rows still to come. The row must start 16-byte aligned.
    constexpr int64_t esz = ZT == DType::F32 ? 4 : 2;
    const bool stream = p.grad && a.grad != a.student.data &&
                        static_cast<uint64_t>(a.student.rows) * static_cast<uint64_t>(cols * esz) >= kStreamBytes &&
                        reinterpret_cast<uintptr_t>(static_cast<char*>(a.grad) + base * esz) % 16 == 0;
    const Out o = !p.grad ? Out::None : stream ? Out::Stream : Out::Store;
    const Prefetch none;
    double dfw = 0;
    if (!dense) sweep2_sep<I, ZT, DType::F32, Mode::NoTeacher, T1>(a, r, sc, base, o, sep, none);
    else if (p.div == Divergence::ForwardKL) dfw = sweep2_sep<I, ZT, TT, Mode::Forward, T1>(a, r, sc, base, o, sep, none);
    else if (p.div == Divergence::ReverseKL) sweep2_sep<I, ZT, TT, Mode::Reverse, T1>(a, r, sc, base, o, sep, none);
    else sweep2_sep<I, ZT, TT, Mode::Jsd, T1>(a, r, sc, base, o, sep, none);
    if (forward_dense) d = ft * dfw;
    if (p.grad) write_specials(a, row, specials, n_specials);
  }
  out.loss = (p.kd ? p.kd_weight * d : 0.0) + (p.ce ? p.ce_weight * ce : 0.0);
  if (!(out.loss - out.loss == 0.0)) out.error = RowError::Overflow;  // NaN or ±inf
  return out;
}

template <class I, DType ZT, bool T1>
DistillRowFn for_teacher(DType tt) {
  switch (tt) {
    case DType::F16: return distill_row<I, ZT, DType::F16, T1>;
    case DType::BF16: return distill_row<I, ZT, DType::BF16, T1>;
    default: return distill_row<I, ZT, DType::F32, T1>;
  }
}

template <class I, bool T1>
DistillRowFn for_student(DType zt, DType tt) {
  switch (zt) {
    case DType::F32: return for_teacher<I, DType::F32, T1>(tt);
    case DType::F16: return for_teacher<I, DType::F16, T1>(tt);
    case DType::BF16: return for_teacher<I, DType::BF16, T1>(tt);
    default: return nullptr;
  }
}

// The row function for these arguments (T = 1 has its own instantiation:
// no multiplications by 1/T, which would not change a bit).
template <class I>
DistillRowFn row_fn(const DistillArgs& a) {
  // A top-k teacher (no dense data) never reads teacher.dtype.
  const DType tt = a.teacher.data ? a.teacher.dtype : DType::F32;
  return a.temperature == 1.0f ? for_student<I, true>(a.student.dtype, tt) : for_student<I, false>(a.student.dtype, tt);
}

}  // namespace
}  // namespace dsimd
}  // namespace st
