// CPU entry points of the low-rank kernels (see fisherprec/lowrank.h for the
// math). The window is an (r, P) row-major buffer of dtype `window_dtype`
// whose row stride is `stride` = P; the tensors of a call (`ptrs`, `numels`)
// are consecutive segments of the flat vector of length P. `out` points to
// float64 results; every reduction combines fixed chunks in chunk order, so
// results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <vector>

namespace fisherprec::cpu {

// ---- lowrank ----
// out[j] = Σ_i G_{j,i} x_i for j < columns. With slot ≥ 0, x is first stored
// (rounded to the window dtype) into row `slot` (< columns), and the products
// use the stored values: out is then the new row of K = GᵀG.
void lowrank_dots(uintptr_t window, int window_dtype, int64_t stride, int64_t columns, int64_t slot,
                  const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& numels, int dtype,
                  uintptr_t out, int threads);

// The optimizer's first pass (lowrank_stats_element): momentum and second
// moment update, optional insert of ±grad into row `slot`, and
// out = [Gᵀĝ (columns), Gᵀm (columns), Σ m², Σ (m/(√v/√c2+ε))²].
// `v` may be empty (no grafting): the last entry is then 0.
void lowrank_stats(const std::vector<uintptr_t>& grads, const std::vector<int64_t>& numels, int dtype,
                   const std::vector<uintptr_t>& m, const std::vector<uintptr_t>& v, uintptr_t window,
                   int window_dtype, int64_t stride, int64_t columns, int64_t slot, float beta1,
                   float beta2, float inv_c2_root, float eps, bool maximize, uintptr_t out, int threads);

// y ← decay·y + coef[0]·x + Σ_{j<columns} coef[1+j] G_j (float64 arithmetic,
// rounded once to y's dtype). x is float32 or float64 (`x_dtype`).
void lowrank_combine(const std::vector<uintptr_t>& y, const std::vector<int64_t>& numels, int dtype,
                     const std::vector<uintptr_t>& x, int x_dtype, uintptr_t window, int window_dtype,
                     int64_t stride, int64_t columns, uintptr_t coef, double decay, int threads);

}  // namespace fisherprec::cpu
