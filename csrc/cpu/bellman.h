// CPU entry point of the Bellman backup (see fisherprec/bellman.h for the
// math). Called by bindings.cpp with pointers that fisherprec/ops/bellman.py has
// validated (dtypes, shapes, CSR structure, index ranges).
#pragma once

#include <cstdint>
#include <utility>

namespace fisherprec::cpu {

// ---- bellman ----
// One synchronous backup of every state: v_out = T v (or T_π v when
// policy_in != 0), policy_out = the greedy actions, q_out (optional, 0 = none)
// = Q as (S, A). dtype: 0 float32 or 1 float64 for values/reward/v/v_out/q_out;
// index_dtype: 0 int32 or 1 int64 for indices; indptr and policies are int64.
// Returns (min, max) over states of v_out − v, in double ((0, 0) when S = 0).
// Deterministic for any thread count.
std::pair<double, double> bellman_backup(uintptr_t indptr, uintptr_t indices, int index_dtype,
                                         uintptr_t values, uintptr_t reward, uintptr_t v, double gamma,
                                         uintptr_t policy_in, int64_t num_states, int64_t num_actions,
                                         int dtype, uintptr_t v_out, uintptr_t policy_out,
                                         uintptr_t q_out, int threads);

}  // namespace fisherprec::cpu
