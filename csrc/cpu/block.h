// Block-diagonal Fisher kernels on the CPU (math in fisherprec/block.h).
// Pointers come validated from fisherprec/ops/block.py. Each list holds one entry
// per tensor; tensor t has numels[t] elements cut into blocks of block_size.
#pragma once

#include <cstdint>
#include <vector>

namespace fisherprec::cpu {

// ---- block ----
// F_t ← w_old F_t + w_new Σ_r g_r g_rᵀ per block; rows[t] is (num_rows, numels[t]).
void block_outer_update(const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& rows,
                        const std::vector<int64_t>& numels, int64_t num_rows, int64_t block_size,
                        double w_old, double w_new, int state_dtype, int row_dtype, int threads);

// R_t = (scale·F_t + λI)^(-power) per block; status[t] (int32, one per block) gets the outcome.
void block_inv_root(const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& roots,
                    const std::vector<uintptr_t>& status, const std::vector<int64_t>& numels,
                    int64_t block_size, double scale, double damping, double power, int state_dtype,
                    int threads);

// The fused BlockFisher step (m, v, R float32; params/grads of param_dtype).
void block_fisher_step(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
                       const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
                       const std::vector<uintptr_t>& roots, const std::vector<uintptr_t>& status,
                       const std::vector<int64_t>& numels, int64_t block_size, double beta1,
                       double beta2, double step_size, double inv_c2_root, double eps, double decay,
                       bool maximize, bool graft, int param_dtype, int threads);

}  // namespace fisherprec::cpu
