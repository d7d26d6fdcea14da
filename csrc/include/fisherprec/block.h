// Block-diagonal empirical Fisher (docs/theory.md, "Exact inverse roots for each structure"), per block of b
// contiguous coordinates of one flat tensor (the last block of a tensor may
// be shorter; blocks never cross tensors).
//
//   F_b ← w_old F_b + w_new Σ_r g_{r,b} g_{r,b}ᵀ        (EMA or running mean of outer products)
//   R_b = (s·F_b + λI)^(-p) = Q diag((max(d,0)+λ)^(-p)) Qᵀ,  s·F_b = Q diag(d) Qᵀ
//   u_b = R_b m_b, grafted to the norm of the Adam (diag.h) update of the block,
//   θ_b ← θ_b (1 − lr·wd) − (lr/c1) u_b
//
// Storage: the statistic and the root of a tensor with n elements are
// (ceil(n/b), b, b) arrays; block k holds its s_k×s_k matrix in the leading
// corner of its b×b slot (row-major, leading dimension b), the rest is zero.
//
// The eigensolver is Householder tridiagonalisation followed by the implicit
// QL iteration with Wilkinson shifts (EISPACK tred2/tql2, as in JAMA), always
// in float64: about 9 s³ flops per block, 3–4× fewer than cyclic Jacobi, and
// backward stable, so eigenvalues are accurate to ~1e-16·‖F_b‖ (fp32 inputs
// and outputs are then exact to their own rounding). Eigenvectors are
// stored column-major so every inner loop runs over contiguous memory.
#pragma once

#include <math.h>

#include "fisherprec/common.h"
#include "fisherprec/diag.h"

// The CPU backend calls these from functions compiled once per ISA
// (target_clones); a callee that is not inlined would be compiled for the
// baseline ISA only, so on the host every function here is forced inline.
#if defined(__CUDACC__)
#define FP_BLOCK_HD FP_HD
#else
#define FP_BLOCK_HD inline __attribute__((always_inline))
#endif

namespace fisherprec {

// Per-block outcome of an inverse root; anything but kRootOk means the
// optimizer takes the (grafted) diagonal step for that block.
enum BlockRootStatus : int32_t {
  kRootOk = 0,
  kRootNonFiniteInput = 1,   // the statistic holds NaN/Inf
  kRootNoConvergence = 2,    // the QL iteration hit its iteration cap
  kRootNonFiniteOutput = 3,  // e.g. λ = 0 on a singular block
  kRootNone = 4,             // no root computed yet
};

FP_HD int64_t block_count(int64_t n, int64_t b) { return (n + b - 1) / b; }
FP_HD int64_t block_length(int64_t n, int64_t b, int64_t k) {
  const int64_t rest = n - k * b;
  return rest < b ? rest : b;
}

// Loads a stored value in the compute type S (float or double).
template <class S, class T>
FP_HD S load_as(T x) {
  return static_cast<S>(to_float(x));
}
template <>
FP_HD double load_as<double, double>(double x) {
  return x;
}

// Rows [i_begin, i_end) of one block's EMA of outer products:
//   F[i][j] ← w_old F[i][j] + w_new Σ_r g_r[i] g_r[j]
// for j < s, or only for i ≤ j < s when `upper` (the caller then mirrors the
// upper triangle: exact symmetry whatever FMA contraction a compiler applies
// to vectorised and remainder loops). g_r[i] = g[r·row_stride + i].
template <class S, class T>
FP_BLOCK_HD void block_outer_ema_rows(S* F, int64_t ld, const T* g, int64_t row_stride, int64_t rows,
                                int64_t s, S w_old, S w_new, int64_t i_begin, int64_t i_end,
                                bool upper) {
  for (int64_t i = i_begin; i < i_end; ++i) {
    S* Fi = F + i * ld;
    const int64_t j0 = upper ? i : 0;
    for (int64_t j = j0; j < s; ++j) Fi[j] *= w_old;
    for (int64_t r = 0; r < rows; ++r) {
      const T* gr = g + r * row_stride;
      const S gi = load_as<S>(gr[i]);
      for (int64_t j = j0; j < s; ++j) Fi[j] += w_new * (gi * load_as<S>(gr[j]));
    }
  }
}

// F[j][i] = F[i][j] for i < j < s.
template <class S>
FP_BLOCK_HD void block_mirror_upper(S* F, int64_t ld, int64_t s) {
  for (int64_t i = 0; i < s; ++i)
    for (int64_t j = i + 1; j < s; ++j) F[j * ld + i] = F[i * ld + j];
}

// ----------------------------------------------------------- eigensolver
// Σ_k x[k]·y[k] with four interleaved partial sums: a fixed summation order
// (so results do not depend on the ISA) that compilers still vectorise.
FP_BLOCK_HD double block_dot(const double* x, const double* y, int64_t n) {
  double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    a0 += x[k] * y[k];
    a1 += x[k + 1] * y[k + 1];
    a2 += x[k + 2] * y[k + 2];
    a3 += x[k + 3] * y[k + 3];
  }
  for (; k < n; ++k) a0 += x[k] * y[k];
  return (a0 + a1) + (a2 + a3);
}

// Symmetric eigendecomposition of an n×n matrix held in V (column-major,
// V(r, c) = V[c·n + r]; for the symmetric input the layout does not matter).
// On return column c of V is an eigenvector with eigenvalue d[c]; e is
// workspace. Returns false if the QL iteration did not converge.
FP_BLOCK_HD void tridiagonalize(double* V, double* d, double* e, int64_t n) {
#define FP_V(r, c) V[(c) * n + (r)]
  for (int64_t j = 0; j < n; ++j) d[j] = FP_V(n - 1, j);
  for (int64_t i = n - 1; i > 0; --i) {
    double scale = 0.0, h = 0.0;
    for (int64_t k = 0; k < i; ++k) scale += fabs(d[k]);
    if (scale == 0.0) {
      e[i] = d[i - 1];
      for (int64_t j = 0; j < i; ++j) {
        d[j] = FP_V(i - 1, j);
        FP_V(i, j) = 0.0;
        FP_V(j, i) = 0.0;
      }
    } else {
      for (int64_t k = 0; k < i; ++k) {  // Householder vector, scaled against over/underflow
        d[k] /= scale;
        h += d[k] * d[k];
      }
      double f = d[i - 1];
      double g = sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (int64_t j = 0; j < i; ++j) e[j] = 0.0;
      for (int64_t j = 0; j < i; ++j) {  // similarity transform of the leading i×i part
        f = d[j];
        FP_V(j, i) = f;
        const double* vj = &FP_V(0, j);
        g = e[j] + vj[j] * f + block_dot(vj + j + 1, d + j + 1, i - 1 - j);
        for (int64_t k = j + 1; k <= i - 1; ++k) e[k] += vj[k] * f;
        e[j] = g;
      }
      f = 0.0;
      for (int64_t j = 0; j < i; ++j) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const double hh = f / (h + h);
      for (int64_t j = 0; j < i; ++j) e[j] -= hh * d[j];
      for (int64_t j = 0; j < i; ++j) {
        f = d[j];
        g = e[j];
        for (int64_t k = j; k <= i - 1; ++k) FP_V(k, j) -= (f * e[k] + g * d[k]);
        d[j] = FP_V(i - 1, j);
        FP_V(i, j) = 0.0;
      }
    }
    d[i] = h;
  }
  for (int64_t i = 0; i < n - 1; ++i) {  // accumulate the transformations
    FP_V(n - 1, i) = FP_V(i, i);
    FP_V(i, i) = 1.0;
    const double h = d[i + 1];
    if (h != 0.0) {
      for (int64_t k = 0; k <= i; ++k) d[k] = FP_V(k, i + 1) / h;
      for (int64_t j = 0; j <= i; ++j) {
        const double g = block_dot(&FP_V(0, i + 1), &FP_V(0, j), i + 1);
        for (int64_t k = 0; k <= i; ++k) FP_V(k, j) -= g * d[k];
      }
    }
    for (int64_t k = 0; k <= i; ++k) FP_V(k, i + 1) = 0.0;
  }
  for (int64_t j = 0; j < n; ++j) {
    d[j] = FP_V(n - 1, j);
    FP_V(n - 1, j) = 0.0;
  }
  FP_V(n - 1, n - 1) = 1.0;
  e[0] = 0.0;
}

FP_BLOCK_HD bool tridiagonal_ql(double* V, double* d, double* e, int64_t n) {
  for (int64_t i = 1; i < n; ++i) e[i - 1] = e[i];
  e[n - 1] = 0.0;
  double f = 0.0, tst1 = 0.0;
  const double eps = 2.220446049250313e-16;
  for (int64_t l = 0; l < n; ++l) {
    tst1 = fmax(tst1, fabs(d[l]) + fabs(e[l]));
    int64_t m = l;
    while (m < n && fabs(e[m]) > eps * tst1) ++m;
    if (m == n) m = n - 1;  // e[n-1] = 0 always stops the scan
    if (m > l) {
      int iter = 0;
      do {
        if (++iter > 60) return false;
        double g = d[l];  // implicit Wilkinson shift
        double p = (d[l + 1] - g) / (2.0 * e[l]);
        double r = sqrt(p * p + 1.0);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const double dl1 = d[l + 1];
        double h = g - d[l];
        for (int64_t i = l + 2; i < n; ++i) d[i] -= h;
        f += h;
        p = d[m];  // implicit QL sweep
        double c = 1.0, c2 = 1.0, c3 = 1.0, s = 0.0, s2 = 0.0;
        const double el1 = e[l + 1];
        for (int64_t i = m - 1; i >= l; --i) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = sqrt(p * p + e[i] * e[i]);  // hypot() is ~10× slower; no overflow at these scales
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          double* vi = V + i * n;  // columns i and i+1: contiguous
          double* vj = V + (i + 1) * n;
          for (int64_t k = 0; k < n; ++k) {
            const double t = vj[k];
            vj[k] = s * vi[k] + c * t;
            vi[k] = c * vi[k] - s * t;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
        if (!(fabs(e[l]) == fabs(e[l]))) return false;  // NaN: give up
      } while (fabs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0.0;
  }
  return true;
}
#undef FP_V

// The eigendecomposition of the symmetric matrix in V, in place (eigenvectors
// in V's columns, eigenvalues in d, unsorted), unless the caller found a
// non-finite entry while loading it: the outcome as a BlockRootStatus.
FP_BLOCK_HD int32_t eigen_decompose(double* V, double* d, double* e, int64_t n, bool finite) {
  if (!finite) return kRootNonFiniteInput;
  tridiagonalize(V, d, e, n);
  return tridiagonal_ql(V, d, e, n) ? kRootOk : kRootNoConvergence;
}

// Doubles of workspace one block_inv_root call needs for a block of size s.
FP_HD int64_t block_root_workspace(int64_t s) { return s * s + 6 * s; }

// R = (scale·F + λI)^(-power) for one s×s block (leading dimension ld for F
// and R), eigenvalues at or below the rounding noise √s·ε·λ_max set to 0
// before damping. `work` holds
// block_root_workspace(s) doubles. On failure R is filled with NaN.
template <class S>
FP_BLOCK_HD int32_t block_inv_root(const S* F, S* R, int64_t ld, int64_t s, double scale, double damping,
                             double power, double* work) {
  double* V = work;
  double* d = V + s * s;
  double* e = d + s;
  double* row = e + s;  // 4·s doubles
  bool finite = true;
  for (int64_t i = 0; i < s; ++i)
    for (int64_t j = 0; j < s; ++j) {
      const double x = scale * static_cast<double>(F[i * ld + j]);
      finite = finite && isfinite(x);
      V[j * s + i] = x;
    }
  int32_t status = eigen_decompose(V, d, e, s, finite);
  if (status == kRootOk) {
    // Eigenvalues within the rounding error of the statistic (√s·ε·λ_max, ε
    // of its storage type: ‖δF‖₂ ≤ ‖δF‖_F ≲ √s·ε·‖F‖₂) are zero: without damping their roots would be
    // noise amplified by up to 1/sqrt(ε), so such a block has no root and
    // falls back (kRootNonFiniteOutput) instead of passing as a good one.
    double top = 0.0;
    for (int64_t c = 0; c < s; ++c) top = fmax(top, d[c]);
    const double unit = sizeof(S) == 4 ? 1.1920928955078125e-07 : 2.220446049250313e-16;
    const double noise = sqrt(static_cast<double>(s)) * unit * top;
    for (int64_t c = 0; c < s; ++c) {  // d ← (max(d,0) + λ)^(-power), noise → 0
      const double x = (d[c] > noise ? d[c] : 0.0) + damping;
      d[c] = power == 0.5 ? 1.0 / sqrt(x) : power == 0.25 ? 1.0 / sqrt(sqrt(x)) : pow(x, -power);
      if (!isfinite(d[c])) status = kRootNonFiniteOutput;
    }
  }
  if (status != kRootOk) {
    const S nan = static_cast<S>(NAN);
    for (int64_t i = 0; i < s; ++i)
      for (int64_t j = 0; j < s; ++j) R[i * ld + j] = nan;
    return status;
  }
  // Rows i..i+3 of Σ_c d_c v_c v_cᵀ at once (each eigenvector read once per
  // four rows), upper part j ≥ i only, as axpys over contiguous v_c; then
  // mirrored, so R is exactly symmetric. `row` holds 4·s doubles.
  for (int64_t i0 = 0; i0 < s; i0 += 4) {
    const int64_t rows = s - i0 < 4 ? s - i0 : 4;
    double* r0 = row;
    double* r1 = row + s;
    double* r2 = row + 2 * s;
    double* r3 = row + 3 * s;
    for (int64_t j = i0; j < s; ++j) r0[j] = r1[j] = r2[j] = r3[j] = 0.0;
    for (int64_t c = 0; c < s; ++c) {
      const double* v = V + c * s;
      const double a0 = d[c] * v[i0];
      const double a1 = rows > 1 ? d[c] * v[i0 + 1] : 0.0;
      const double a2 = rows > 2 ? d[c] * v[i0 + 2] : 0.0;
      const double a3 = rows > 3 ? d[c] * v[i0 + 3] : 0.0;
      for (int64_t j = i0; j < s; ++j) {
        const double vj = v[j];
        r0[j] += a0 * vj;
        r1[j] += a1 * vj;
        r2[j] += a2 * vj;
        r3[j] += a3 * vj;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      const double* ri = row + r * s;
      for (int64_t j = i; j < s; ++j) R[i * ld + j] = R[j * ld + i] = static_cast<S>(ri[j]);
    }
  }
  return kRootOk;
}

// ------------------------------------------------------------ fused step
// Per-call scalars. `diag` is the Adam math of diag.h (power 0.5): it gives
// the fallback step and the grafting norm.
struct BlockStepScalars {
  DiagScalars diag;
  bool graft;  // rescale R m to the norm of the Adam update of the block
};

// Phase 1, element i of a block: EMA of m and v, returns the Adam direction
// a_i = m_i / (sqrt(v_i)/sqrt(c2) + ε) (the step is then step_size·a_i).
template <class T>
FP_HD float block_adam_direction(T grad, float& m, float& v, const DiagScalars& s) {
  const float gf = to_float(grad);
  const float g = s.maximize ? -gf : gf;
  diag_ema(g, s, m, v);
  return m / diag_denominator<true>(v, s);  // the block step's power is 1/2
}

// Phase 3: the new parameter value from direction `u` (already grafted).
template <class T>
FP_HD T block_move(T param, float u, const DiagScalars& s) {
  return from_float<T>(to_float(param) * s.decay - s.step_size * u);
}

// Graft factor ‖a‖/‖R m‖ (0 when R m = 0), or 1 without grafting.
FP_HD float block_graft_scale(double adam_sq, double root_sq, bool graft) {
  if (!graft) return 1.0f;
  return root_sq > 0.0 ? static_cast<float>(sqrt(adam_sq / root_sq)) : 0.0f;
}

// Σ x[i]² in float64 with four interleaved partial sums (fixed order, vectorisable).
FP_BLOCK_HD double block_sum_squares(const float* x, int64_t n) {
  double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += static_cast<double>(x[i]) * x[i];
    a1 += static_cast<double>(x[i + 1]) * x[i + 1];
    a2 += static_cast<double>(x[i + 2]) * x[i + 2];
    a3 += static_cast<double>(x[i + 3]) * x[i + 3];
  }
  for (; i < n; ++i) a0 += static_cast<double>(x[i]) * x[i];
  return (a0 + a1) + (a2 + a3);
}

// The whole step for one block on one thread (CPU). `u` holds s floats.
// m and v are updated; R is used only when `use_root`. Each phase is its own
// loop so that the element-wise ones vectorise.
template <class T>
FP_BLOCK_HD void block_step(T* param, const T* grad, float* m, float* v, const float* R, int64_t ld,
                            int64_t s, bool use_root, const BlockStepScalars& sc, float* u) {
  for (int64_t i = 0; i < s; ++i) u[i] = block_adam_direction(grad[i], m[i], v[i], sc.diag);
  if (!use_root) {  // the (grafted) diagonal step: Adam
    for (int64_t i = 0; i < s; ++i) param[i] = block_move(param[i], u[i], sc.diag);
    return;
  }
  const double adam_sq = block_sum_squares(u, s);
  // u = R m, as Σ_j m_j R[j][:] (R symmetric): contiguous axpys.
  for (int64_t i = 0; i < s; ++i) u[i] = 0.0f;
  for (int64_t j = 0; j < s; ++j) {
    const float mj = m[j];
    const float* Rj = R + j * ld;
    for (int64_t i = 0; i < s; ++i) u[i] += mj * Rj[i];
  }
  const float k = block_graft_scale(adam_sq, block_sum_squares(u, s), sc.graft);
  for (int64_t i = 0; i < s; ++i) param[i] = block_move(param[i], k * u[i], sc.diag);
}

}  // namespace fisherprec
