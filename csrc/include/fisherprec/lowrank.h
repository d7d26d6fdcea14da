// Low-rank empirical Fisher (docs/theory.md, "Exact inverse roots for each structure"), the per-element math shared by
// the CPU and CUDA backends.
//
// The window G ∈ R^{P×r} is stored column by column as an (r, P) buffer
// (float32, float64 or bfloat16): column j is a past gradient g_j, and a
// param group's tensors are consecutive segments of the flat vector.
// With column weights σ_j (exponential decay of old columns; 1 without decay)
//
//   F = Σ_j σ_j² g_j g_jᵀ / Σ_j σ_j²,    K = Gᵀ G  (r×r, float64)
//   (F + λI)^{-p} v = λ^{-p} v + G c,    c = σ ⊙ V diag(f(s²)) Vᵀ (σ ⊙ Gᵀv)
//
// with σσᵀ ⊙ K = V diag(s²) Vᵀ and f(s²) = ((s²/n + λ)^{-p} − λ^{-p}) / s²,
// n = Σσ². Everything besides two passes over G is r×r work on the host
// side. The passes are:
//
//   dots:     a_j = Σ_i G_{j,i} x_i              (Gᵀx, accumulated in float64)
//   combine:  y_i ← decay·y_i + c_0 x_i + Σ_j c_{1+j} G_{j,i}
//
// Inner products accumulate in float64: products of float32 (or bfloat16)
// values are exact in float64, so K stays symmetric positive semi-definite to
// float64 rounding and does not depend on the summation order within a chunk.
#pragma once

#include "fisherprec/common.h"
#include "fisherprec/diag.h"

namespace fisherprec {

// Widest supported rank: the CUDA dot kernel keeps kLowrankMaxRank / warps
// accumulators per lane in registers. Must match fisherprec/ops/lowrank.py.
constexpr int kLowrankMaxRank = 256;

FP_HD double to_double(float x) { return static_cast<double>(x); }
FP_HD double to_double(double x) { return x; }
FP_HD double to_double(bfloat16 x) { return static_cast<double>(to_float(x)); }
FP_HD double to_double(float16 x) { return static_cast<double>(to_float(x)); }

// Stored value of x in the window's (or an output's) dtype, from float64.
template <class T>
FP_HD T from_double(double x) {
  return from_float<T>(static_cast<float>(x));
}
template <>
FP_HD double from_double<double>(double x) {
  return x;
}

// combine: y ← decay·y + c0·x + Σ_j c_{1+j} G_{j,i}, where `gc` is the sum.
// decay = 0 does not read y (BLAS β = 0 convention: y may be uninitialised).
FP_HD double lowrank_combine(double y, double decay, double c0, double x, double gc) {
  return (decay == 0.0 ? 0.0 : decay * y) + c0 * x + gc;
}

// Per-call scalars of the optimizer's first pass (the momentum / graft part
// of the diagonal Adam math, see diag.h).
struct LowrankStatsScalars {
  DiagScalars moments;  // β1, β2, ε, √c2 and the sign, as the diagonal step uses them
  bool has_v;           // keep the diagonal second moment (grafting)
  bool insert;          // write ĝ into the window
};

// Host only.
inline LowrankStatsScalars lowrank_stats_scalars(double beta1, double beta2, double inv_c2_root,
                                                 double eps, bool maximize, bool has_v, bool insert) {
  return {diag_scalars(beta1, beta2, 1.0, 1.0 / inv_c2_root, eps, 1.0, 0.5, maximize), has_v, insert};
}

// One element of the optimizer's first pass:
//   g ← ±grad;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²  (diag_ema)
//   x1 = ĝ (g as stored in the window: the row of K uses stored values)
//   x2 = m  (the vector that gets preconditioned: Gᵀm, then G c)
//   graft = (m / (√v / √c2 + ε))²   (the Adam direction's squared norm, before 1/c1²)
// `stored` is the window slot of this element when inserting, else null.
template <class W>
FP_HD void lowrank_stats_element(float grad, float& m, float& v, W* stored,
                                 const LowrankStatsScalars& s, double& x1, double& x2,
                                 double& graft) {
  const float g = s.moments.maximize ? -grad : grad;
  float unused_v = 0.0f;
  diag_ema(g, s.moments, m, s.has_v ? v : unused_v);
  if (s.insert) {
    *stored = from_float<W>(g);
    x1 = to_double(*stored);
  } else {
    x1 = static_cast<double>(g);
  }
  x2 = static_cast<double>(m);
  if (s.has_v) {
    const double a = static_cast<double>(m) / static_cast<double>(diag_denominator<true>(v, s.moments));
    graft = a * a;
  } else {
    graft = 0.0;
  }
}

}  // namespace fisherprec

// Calls BODY with `window_t` bound to the window's storage type: float32,
// float64 or bfloat16 (fisherprec/ops/lowrank.py rejects float16 windows).
#define FP_DISPATCH_LOWRANK_WINDOW(DTYPE, ...)                    \
  [&] {                                                           \
    switch (static_cast<::fisherprec::DType>(DTYPE)) {            \
      case ::fisherprec::DType::Float32: {                        \
        using window_t = float;                                   \
        return __VA_ARGS__();                                     \
      }                                                           \
      case ::fisherprec::DType::Float64: {                        \
        using window_t = double;                                  \
        return __VA_ARGS__();                                     \
      }                                                           \
      case ::fisherprec::DType::BFloat16: {                       \
        using window_t = ::fisherprec::bfloat16;                  \
        return __VA_ARGS__();                                     \
      }                                                           \
      default:                                                    \
        break;                                                    \
    }                                                             \
    ::fisherprec::throw_bad_dtype(DTYPE);                         \
  }()
