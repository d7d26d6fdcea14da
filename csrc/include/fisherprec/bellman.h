// The Bellman backup of a finite MDP (docs/theory.md, "The Hamiltonian view of reinforcement learning"), per state, shared by the
// CPU loop and the CUDA kernel.
//
// Transitions are compressed sparse rows over the (S·A) × S matrix whose row
// s·A + a holds P(·|s, a) (state-major: the A rows of a state are adjacent,
// so a sweep over states reads P as one stream). For a state s, with V the
// current values:
//
//   Q(s, a) = r(s, a) + γ Σ_{s'} P(s'|s, a) V(s')
//   V'(s)   = max_a Q(s, a),   π(s) = the first a attaining the max
//
// A row may sum to less than 1 (episodic problems): the missing mass is the
// probability that the episode ends after (s, a), which contributes its reward
// and no continuation value. Sums are accumulated in double for every storage
// type. With a fixed policy π the backup is the policy's evaluation step,
// V'(s) = Q(s, π(s)).
#pragma once

#include "fisherprec/common.h"

namespace fisherprec {

// Σ_{s'} P(s'|row) V(s') for one CSR row, accumulated in double.
template <class T, class I>
FP_HD double bellman_expectation(const int64_t* __restrict__ indptr, const I* __restrict__ indices,
                                 const T* __restrict__ values, const T* __restrict__ v, int64_t row) {
  const int64_t end = indptr[row + 1];
  double acc = 0.0;
  for (int64_t j = indptr[row]; j < end; ++j)
    acc += static_cast<double>(values[j]) * static_cast<double>(v[indices[j]]);
  return acc;
}

// One state's backup. Writes v_out[s], policy_out[s] and, when q_out is not
// null, the row q_out[s·A .. s·A + A). With policy_in non-null, only the action
// policy_in[s] is backed up (q_out must then be null). Returns V'(s) − V(s) in
// double, for the caller's residual.
template <class T, class I>
FP_HD double bellman_backup_state(int64_t s, int64_t num_states, int64_t num_actions,
                                  const int64_t* __restrict__ indptr, const I* __restrict__ indices,
                                  const T* __restrict__ values, const T* __restrict__ reward,
                                  const T* __restrict__ v, double gamma, const int64_t* __restrict__ policy_in,
                                  T* __restrict__ v_out, int64_t* __restrict__ policy_out, T* __restrict__ q_out) {
  double best;
  int64_t best_action;
  if (policy_in != nullptr) {
    best_action = policy_in[s];
    best = static_cast<double>(reward[s * num_actions + best_action]) +
           gamma * bellman_expectation(indptr, indices, values, v, s * num_actions + best_action);
  } else {
    best = 0.0;
    best_action = 0;
    for (int64_t a = 0; a < num_actions; ++a) {
      const double q = static_cast<double>(reward[s * num_actions + a]) +
                       gamma * bellman_expectation(indptr, indices, values, v, s * num_actions + a);
      if (q_out != nullptr) q_out[s * num_actions + a] = static_cast<T>(q);
      if (a == 0 || q > best) {  // strict: ties keep the lowest action
        best = q;
        best_action = a;
      }
    }
  }
  const T rounded = static_cast<T>(best);
  v_out[s] = rounded;
  policy_out[s] = best_action;
  return static_cast<double>(rounded) - static_cast<double>(v[s]);
}

}  // namespace fisherprec
