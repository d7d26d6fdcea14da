// Block-diagonal Fisher kernels on CUDA (math in fisherprec/block.h); same
// arguments as csrc/cpu/block.h plus the stream. Return a cudaError_t code.
#pragma once

#include <cstdint>
#include <vector>

namespace fisherprec::cuda {

int block_outer_update(const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& rows,
                       const std::vector<int64_t>& numels, int64_t num_rows, int64_t block_size,
                       double w_old, double w_new, int state_dtype, int row_dtype, uintptr_t stream);

// `workspace` holds workspace_blocks × block_root_workspace(block_size)
// doubles; blocks are processed in launches of at most workspace_blocks.
int block_inv_root(const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& roots,
                   const std::vector<uintptr_t>& status, const std::vector<int64_t>& numels,
                   int64_t block_size, double scale, double damping, double power, int state_dtype,
                   uintptr_t workspace, int64_t workspace_blocks, uintptr_t stream);

int block_fisher_step(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
                      const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
                      const std::vector<uintptr_t>& roots, const std::vector<uintptr_t>& status,
                      const std::vector<int64_t>& numels, int64_t block_size, double beta1,
                      double beta2, double step_size, double inv_c2_root, double eps, double decay,
                      bool maximize, bool graft, int param_dtype, uintptr_t stream);

}  // namespace fisherprec::cuda
