#include <cuda_runtime.h>

#include "cuda/bellman.h"
#include "fisherprec/bellman.h"

namespace fisherprec::cuda {
namespace {

constexpr int kBellmanThreads = 256;

template <class T, class I>
__global__ void bellman_backup_kernel(const int64_t* indptr, const I* indices, const T* values, const T* reward,
                                      const T* v, double gamma, const int64_t* policy_in, int64_t num_states,
                                      int64_t num_actions, T* v_out, int64_t* policy_out, T* q_out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < num_states; s += stride)
    bellman_backup_state(s, num_states, num_actions, indptr, indices, values, reward, v, gamma, policy_in, v_out,
                         policy_out, q_out);  // the shared per-state math
}

template <class T, class I>
int launch(uintptr_t indptr, uintptr_t indices, uintptr_t values, uintptr_t reward, uintptr_t v, double gamma,
           uintptr_t policy_in, int64_t num_states, int64_t num_actions, uintptr_t v_out, uintptr_t policy_out,
           uintptr_t q_out, cudaStream_t stream) {
  if (num_states == 0) return 0;
  const int64_t wanted = (num_states + kBellmanThreads - 1) / kBellmanThreads;
  const int blocks = static_cast<int>(wanted < 65535 * 16 ? wanted : 65535 * 16);
  bellman_backup_kernel<T, I><<<blocks, kBellmanThreads, 0, stream>>>(
      reinterpret_cast<const int64_t*>(indptr), reinterpret_cast<const I*>(indices),
      reinterpret_cast<const T*>(values), reinterpret_cast<const T*>(reward), reinterpret_cast<const T*>(v), gamma,
      reinterpret_cast<const int64_t*>(policy_in), num_states, num_actions, reinterpret_cast<T*>(v_out),
      reinterpret_cast<int64_t*>(policy_out), reinterpret_cast<T*>(q_out));
  return static_cast<int>(cudaGetLastError());
}

template <class T>
int dispatch_index(uintptr_t indptr, uintptr_t indices, int index_dtype, uintptr_t values, uintptr_t reward,
                   uintptr_t v, double gamma, uintptr_t policy_in, int64_t num_states, int64_t num_actions,
                   uintptr_t v_out, uintptr_t policy_out, uintptr_t q_out, cudaStream_t stream) {
  if (index_dtype == 0)
    return launch<T, int32_t>(indptr, indices, values, reward, v, gamma, policy_in, num_states, num_actions, v_out,
                              policy_out, q_out, stream);
  return launch<T, int64_t>(indptr, indices, values, reward, v, gamma, policy_in, num_states, num_actions, v_out,
                            policy_out, q_out, stream);
}

}  // namespace

int bellman_backup(uintptr_t indptr, uintptr_t indices, int index_dtype, uintptr_t values, uintptr_t reward,
                   uintptr_t v, double gamma, uintptr_t policy_in, int64_t num_states, int64_t num_actions,
                   int dtype, uintptr_t v_out, uintptr_t policy_out, uintptr_t q_out, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0)
    return dispatch_index<float>(indptr, indices, index_dtype, values, reward, v, gamma, policy_in, num_states,
                                 num_actions, v_out, policy_out, q_out, s);
  return dispatch_index<double>(indptr, indices, index_dtype, values, reward, v, gamma, policy_in, num_states,
                                num_actions, v_out, policy_out, q_out, s);
}

}  // namespace fisherprec::cuda
