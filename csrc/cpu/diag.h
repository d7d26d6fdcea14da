// CPU entry points of the diagonal family (see fisherprec/diag.h for the
// math). Pointers come from fisherprec/ops/diag.py, which validated them.
#pragma once

#include <cstdint>
#include <vector>

namespace fisherprec::cpu {

// ---- diag ----
// One fused AdamW-order step over every tensor of a (device, dtype) bucket,
// one pass over memory: params/grads of `dtype` (float32, bfloat16, float16),
// exp_avgs/exp_avg_sqs float32; all tensors share one step count.
void diag_step(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
               const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
               const std::vector<int64_t>& numels, int dtype, double lr, double beta1, double beta2,
               double eps, double weight_decay, double step, double power, bool bias_correction,
               bool maximize, int threads);

// state[j] ← old_weight·state[j] + new_weight·Σ_i grads[i, j]² for a row-major
// (batch, numel) gradient block of `grad_dtype` and a state of `state_dtype`
// (float32 or float64). One pass over grads and state; sums in double.
void diag_fisher_update(uintptr_t grads, int64_t batch, int64_t numel, int grad_dtype, uintptr_t state,
                        int state_dtype, double old_weight, double new_weight, int threads);

}  // namespace fisherprec::cpu
