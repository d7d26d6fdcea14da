// Sequential A-optimal design (docs/theory.md, "Fermat's principle and A-optimal design"): the per-candidate math of one
// greedy / Frank–Wolfe step, shared by the CPU and CUDA backends.
//
// State: B = A⁻¹ for the current information A (= XᵀX + λI for greedy), the
// test second moment M = E[x xᵀ], and per candidate x_i (a row of the pool)
//   s_i = x_iᵀ B x_i          t_i = x_iᵀ B M B x_i.
// After a point x_k is added, Sherman–Morrison gives B' = B − β b bᵀ with
// b = B x_k and β = 1 / (1 + x_kᵀ b) (Frank–Wolfe passes its own β). With
// c = B M b, γ = bᵀ M b, u_i = x_iᵀ b and v_i = x_iᵀ c:
//   s_i' = s_i − β u_i²
//   t_i' = t_i − 2β u_i v_i + β² γ u_i²
// so a step costs two dot products per candidate: O(N·p), not O(N·p²).
// The score is
//   Δ_i = t_i' / (1 + η s_i'),
// with η = 1 the exact decrease of tr(B M) — hence of ε = σ²(1 + tr(B M)) —
// when x_i is added (greedy), and with η = 0 the Frank–Wolfe gradient
// −∂ tr(A⁻¹M)/∂w_i = x_iᵀ A⁻¹ M A⁻¹ x_i.
// The two dot products are written by each backend (SIMD loop on the CPU,
// one warp per row on the GPU); the update and the score are here, once.
#pragma once

#include "fisherprec/common.h"

namespace fisherprec {

// A pool element as double (float64 pools keep every bit).
FP_HD double design_load(double x) { return x; }
FP_HD double design_load(float x) { return static_cast<double>(x); }
FP_HD double design_load(bfloat16 x) { return static_cast<double>(to_float(x)); }
FP_HD double design_load(float16 x) { return static_cast<double>(to_float(x)); }

// Applies the rank-1 update to (s, t) given u = xᵀb, v = xᵀc, and returns Δ.
FP_HD double design_update_score(double u, double v, double beta, double gamma, double eta, double& s,
                                 double& t) {
  s -= beta * u * u;
  t += beta * u * (beta * gamma * u - 2.0 * v);
  return t / (1.0 + eta * s);
}

// Argmax bookkeeping shared by both backends: the highest score wins, ties go
// to the lowest index, so the result never depends on how rows are split.
FP_HD bool design_better(double score, int64_t index, double best_score, int64_t best_index) {
  if (index < 0 || score != score) return false;  // no row, or NaN: never wins
  if (best_index < 0) return true;
  return score > best_score || (score == best_score && index < best_index);
}

}  // namespace fisherprec
