// Diagonal empirical Fisher, per element (docs/theory.md, "The learning Lagrangian and F^(-p) updates"): the Adam/RMSprop
// flow. Shared by the diagonal step and by the grafting of the block and
// low-rank variants (which rescale their update to the norm of this one).
//
//   m ← β1 m + (1−β1) g                    (momentum; β1 = 0 gives m = g exactly)
//   v ← β2 v + (1−β2) g²                   (diagonal EMA Fisher)
//   u = (m / c1) / ((v / c2)^power + ε)    c_i = 1 − β_i^t (or 1 without bias correction)
//   θ ← θ (1 − lr·wd) − lr u               (decoupled weight decay)
//
// The operation order, fused multiply-adds included, follows torch's CPU
// kernels for AdamW (and RMSprop): one step gives the same m and v bit for
// bit and θ to within an ulp (torch's tensor sqrt is not always correctly
// rounded), so trajectories agree to float32 rounding:
//   m = lerp(m, g, 1−β1)                   (torch's two-sided lerp, one FMA)
//   v = fma((1−β2)·g, g, v·β2)             (torch's mul_ then addcmul_)
//   denom = v^power / c2^power + ε         (ε outside the root, as Adam)
//   θ = θ·(1 − lr·wd) − ((lr/c1)·m) / denom
// Every coefficient (1−β1, 1−β2, lr/c1, c2^power, 1 − lr·wd) is computed once
// per call on the host in double and rounded to float, as torch does; build
// DiagScalars with make_diag_scalars(), never field by field.
#pragma once

#include <math.h>

#include <cmath>

#include "fisherprec/common.h"
#include "fisherprec/convert_vec.h"

namespace fisherprec {

// Per-call scalars, computed once on the host from the step count.
struct DiagScalars {
  float beta1;
  float beta2;
  float step_size;    // lr / c1
  float eps;
  float decay;  // 1 − lr·weight_decay
  float power;  // 0.5 for Adam/RMSprop
  bool maximize;
  float one_minus_beta1;  // float(1 − β1) rounded from double, as torch
  float one_minus_beta2;  // float(1 − β2)
  float c2_root;          // c2^power (torch divides by it)
};

// Host only: every per-call coefficient from already-combined hyper-parameters
// (step_size = lr / c1, c2_root = c2^power, decay = 1 − lr·weight_decay). The one
// place that fills DiagScalars: the block and low-rank steps build theirs here too.
inline DiagScalars diag_scalars(double beta1, double beta2, double step_size, double c2_root,
                                double eps, double decay, double power, bool maximize) {
  DiagScalars s{};
  s.beta1 = static_cast<float>(beta1);
  s.beta2 = static_cast<float>(beta2);
  s.step_size = static_cast<float>(step_size);
  s.eps = static_cast<float>(eps);
  s.decay = static_cast<float>(decay);
  s.power = static_cast<float>(power);
  s.maximize = maximize;
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.c2_root = static_cast<float>(c2_root);
  return s;
}

// Host only: the coefficients of one step from the hyper-parameters and the
// step count t ≥ 1 (the value *after* the increment, as torch).
inline DiagScalars make_diag_scalars(double lr, double beta1, double beta2, double eps,
                                     double weight_decay, double power, bool bias_correction,
                                     double step, bool maximize) {
  const double c1 = bias_correction ? 1.0 - std::pow(beta1, step) : 1.0;
  const double c2 = bias_correction ? 1.0 - std::pow(beta2, step) : 1.0;
  return diag_scalars(beta1, beta2, lr / c1, std::pow(c2, power), eps, 1.0 - lr * weight_decay,
                      power, maximize);
}

// torch.lerp(m, g, w): m + w (g − m) for |w| < 0.5, else g − (g − m)(1 − w),
// each as one FMA (torch's vectorised lerp). The second branch makes w = 1
// (β1 = 0) give m = g exactly. `w` is uniform over a call, so the select
// costs nothing in a vectorised loop.
FP_HD float diag_lerp(float m, float g, float w) {
  const bool small = w < 0.5f;
  // select_bits, not ?:, keeps the loops of every dtype free of control flow.
  const float base = bit_cast<float>(select_bits(small, bit_cast<uint32_t>(m), bit_cast<uint32_t>(g)));
  const float coeff = small ? w : w - 1.0f;  // uniform: hoisted
  return fmaf(coeff, g - m, base);
}

// v ← β2 v + (1−β2) g² and m ← β1 m + (1−β1) g with host-rounded coefficients.
FP_HD void diag_ema(float g, const DiagScalars& s, float& m, float& v) {
  m = diag_lerp(m, g, s.one_minus_beta1);
  v = fmaf(s.one_minus_beta2 * g, g, v * s.beta2);
}

// v^power; kSqrt picks sqrtf at compile time so that the loop vectorises.
template <bool kSqrt>
FP_HD float diag_root(float v, float power) {
  if constexpr (kSqrt) {
    return sqrtf(v);
  } else {
    return powf(v, power);
  }
}

// v̂^power + ε with v̂ = v / c2, in torch's order: v^power / c2^power + ε.
template <bool kSqrt>
FP_HD float diag_denominator(float v, const DiagScalars& s) {
  return diag_root<kSqrt>(v, s.power) / s.c2_root + s.eps;
}

// One element of the fused step; returns the new parameter value. `grad` is
// the raw gradient (negated here when maximizing); m and v are updated.
template <bool kSqrt>
FP_HD float diag_step(float param, float grad, float& m, float& v, const DiagScalars& s) {
  // −grad when maximizing, as a sign flip (exact, and branch-free).
  const float g = bit_cast<float>(bit_cast<uint32_t>(grad) ^ (static_cast<uint32_t>(s.maximize) << 31));
  diag_ema(g, s, m, v);
  param *= s.decay;
  return param - (s.step_size * m) / diag_denominator<kSqrt>(v, s);
}

FP_HD float diag_step(float param, float grad, float& m, float& v, const DiagScalars& s) {
  return s.power == 0.5f ? diag_step<true>(param, grad, m, v, s) : diag_step<false>(param, grad, m, v, s);
}

// Per-sample diagonal Fisher, one coordinate j (docs/theory.md, "The learning Lagrangian and F^(-p) updates",
// table of approximations: the diagonal mean of per-sample g_i⊙g_i):  state_j ← a·state_j + b·Σ_i g_{i,j}², with (a, b)
// the running-mean or EMA weights of fisher/_base.py. The sum is in double.
template <class S>
FP_HD S diag_fisher_combine(S state, double sum_sq, double old_weight, double new_weight) {
  return static_cast<S>(old_weight * static_cast<double>(state) + new_weight * sum_sq);
}

}  // namespace fisherprec
