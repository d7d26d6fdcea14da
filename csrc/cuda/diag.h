// CUDA entry points of the diagonal family (math in fisherprec/diag.h).
// Each returns 0 or a cudaError_t code; work is queued on `stream`.
#pragma once

#include <cstdint>
#include <vector>

namespace fisherprec::cuda {

// The fused multi-tensor step (see cpu/diag.h for the contract).
int diag_step(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
              const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
              const std::vector<int64_t>& numels, int dtype, double lr, double beta1, double beta2, double eps,
              double weight_decay, double step, double power, bool bias_correction, bool maximize,
              uintptr_t stream);

// state[j] ← old_weight·state[j] + new_weight·Σ_i grads[i, j]² (see cpu/diag.h).
int diag_fisher_update(uintptr_t grads, int64_t batch, int64_t numel, int grad_dtype, uintptr_t state,
                       int state_dtype, double old_weight, double new_weight, uintptr_t stream);

}  // namespace fisherprec::cuda
