#pragma once

#include <cstdint>

namespace fisherprec::cuda {

// ---- design ----
// Same contract as fisherprec::cpu::design_score_step (all pointers on the
// device); `workspace` holds 2 * design_workspace_blocks() doubles. Queued on
// `stream`; returns a cudaError_t code.
int design_workspace_blocks();
int design_score_step(uintptr_t pool, int64_t n, int64_t p, int dtype, uintptr_t b, uintptr_t c,
                      double beta, double gamma, double eta, uintptr_t s, uintptr_t t, uintptr_t mask,
                      uintptr_t out, uintptr_t workspace, uintptr_t stream);

}  // namespace fisherprec::cuda
