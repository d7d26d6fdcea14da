// Diagonal empirical Fisher, per element (THEORY.md §4–5): the Adam/RMSprop
// flow. Shared by the diagonal step and by the grafting of the block and
// low-rank variants (which rescale their update to the norm of this one).
//
//   m ← β1 m + (1−β1) g                    (momentum; β1 = 0 disables it)
//   v ← β2 v + (1−β2) g²                   (diagonal EMA Fisher)
//   u = (m / c1) / ((v / c2)^power + ε)    c_i = 1 − β_i^t (or 1 without bias correction)
//   θ ← θ (1 − lr·wd) − lr u               (decoupled weight decay)
//
// The operation order follows torch.optim.AdamW so that trajectories agree
// to float32 rounding: denominators are sqrt(v)/sqrt(c2) + ε, and the step
// size lr/c1 is folded in once per call.
#pragma once

#include <math.h>

#include "fisherprec/common.h"

namespace fisherprec {

// Per-call scalars, computed once on the host from the step count.
struct DiagScalars {
  float beta1;
  float beta2;
  float step_size;          // lr / c1
  float inv_c2_root;        // 1 / c2^power  (c2 = 1 − β2^t)
  float eps;
  float decay;              // 1 − lr·weight_decay
  float power;              // 0.5 for Adam/RMSprop
  bool maximize;
};

FP_HD void diag_ema(float g, float beta1, float beta2, float& m, float& v) {
  m += (g - m) * (1.0f - beta1);  // torch: exp_avg.lerp_(grad, 1 − β1)
  v = v * beta2 + (1.0f - beta2) * g * g;
}

// v̂^power + ε with v̂ = v / c2, written as v^power / c2^power + ε (torch's order).
FP_HD float diag_denominator(float v, float inv_c2_root, float power, float eps) {
  const float root = power == 0.5f ? sqrtf(v) : powf(v, power);
  return root * inv_c2_root + eps;
}

// One element of the fused step; returns the new parameter value. `grad` is
// the raw gradient (negated here when maximizing).
FP_HD float diag_step(float param, float grad, float& m, float& v, const DiagScalars& s) {
  const float g = s.maximize ? -grad : grad;
  diag_ema(g, s.beta1, s.beta2, m, v);
  param *= s.decay;
  return param - s.step_size * (m / diag_denominator(v, s.inv_c2_root, s.power, s.eps));
}

}  // namespace fisherprec
