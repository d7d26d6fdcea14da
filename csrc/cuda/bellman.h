#pragma once

#include <cstdint>

namespace fisherprec::cuda {

// ---- bellman ----
// The CPU backup's contract (csrc/cpu/bellman.h) on device buffers, queued on
// `stream`, one thread per state. The residual range is left to the caller
// (a torch reduction on v_out − v). Returns 0 or a cudaError_t code.
int bellman_backup(uintptr_t indptr, uintptr_t indices, int index_dtype, uintptr_t values, uintptr_t reward,
                   uintptr_t v, double gamma, uintptr_t policy_in, int64_t num_states, int64_t num_actions,
                   int dtype, uintptr_t v_out, uintptr_t policy_out, uintptr_t q_out, uintptr_t stream);

}  // namespace fisherprec::cuda
