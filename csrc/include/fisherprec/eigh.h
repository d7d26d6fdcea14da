// Symmetric eigendecomposition of one n×n matrix, the batched solver behind
// Kron's factor bases (docs/theory.md, "Kronecker-factored empirical Fisher").
// It is the block root's solver (fisherprec/block.h: Householder
// tridiagonalisation, then implicit QL with Wilkinson shifts, float64 inside),
// with the eigenpairs returned instead of a root and sorted like LAPACK's.
#pragma once

#include <math.h>

#include "fisherprec/block.h"

namespace fisherprec {

// A = (M + Mᵀ)/2 = Q diag(w) Qᵀ for the row-major n×n matrix M (any floating
// type T). On return w holds the eigenvalues ascending and V (n×n, row-major)
// the eigenvectors as its ROWS: V[c·n + r] = Q[r][c] (row c is the vector of
// w[c], so Q = Vᵀ). `e` is n doubles of workspace. Returns a BlockRootStatus:
// kRootNonFiniteInput (M holds NaN/Inf), kRootNoConvergence, or
// kRootNonFiniteOutput; on failure w and V are NaN.
template <class T>
FP_BLOCK_HD int32_t symmetric_eigh(const T* M, double* w, double* V, double* e, int64_t n) {
  bool finite = true;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double a = load_as<double>(M[i * n + j]);
      const double b = load_as<double>(M[j * n + i]);
      finite = finite && isfinite(a) && isfinite(b);
      V[i * n + j] = 0.5 * (a + b);  // exactly symmetric: the solver reads one triangle
    }
  int32_t status = eigen_decompose(V, w, e, n, finite);
  if (status == kRootOk) {
    // Ascending order, moving whole eigenvectors (contiguous rows of V):
    // selection sort, n swaps of n doubles at most.
    for (int64_t c = 0; c + 1 < n; ++c) {
      int64_t low = c;
      for (int64_t k = c + 1; k < n; ++k)
        if (w[k] < w[low]) low = k;
      if (low != c) {
        const double t = w[c];
        w[c] = w[low];
        w[low] = t;
        double* vc = V + c * n;
        double* vl = V + low * n;
        for (int64_t r = 0; r < n; ++r) {
          const double x = vc[r];
          vc[r] = vl[r];
          vl[r] = x;
        }
      }
    }
    for (int64_t i = 0; i < n * n && status == kRootOk; ++i)
      if (!isfinite(V[i])) status = kRootNonFiniteOutput;
    for (int64_t c = 0; c < n && status == kRootOk; ++c)
      if (!isfinite(w[c])) status = kRootNonFiniteOutput;
  }
  if (status != kRootOk) {
    for (int64_t i = 0; i < n * n; ++i) V[i] = NAN;
    for (int64_t c = 0; c < n; ++c) w[c] = NAN;
  }
  return status;
}

}  // namespace fisherprec
