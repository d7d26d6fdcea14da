// CUDA launches of the block-diagonal Fisher math (fisherprec/block.h).
// One launch per tensor: a parameter list holds few tensors, and each launch
// covers all the blocks of its tensor.
//   outer update: one thread per (block, row of the block);
//   inverse root: one thread per block, float64 workspace in global memory
//                 (the QL iteration is sequential per block; many blocks fill the GPU);
//   fused step:   one thread block per Fisher block, one thread per coordinate,
//                 u = Σ_j m_j R[j][:] read coalesced, norms by block reduction.
#include <cuda_runtime.h>

#include "cuda/block.h"
#include "fisherprec/block.h"

namespace fisherprec::cuda {
namespace {

constexpr int kStepThreads = 256;  // ≥ the largest block size the ops layer accepts

template <class S, class T>
__global__ void outer_kernel(S* F, const T* g, int64_t n, int64_t rows, int64_t b, S w_old, S w_new) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nb = block_count(n, b);
  const int64_t k = idx / b, i = idx % b;
  if (k >= nb) return;
  const int64_t s = block_length(n, b, k);
  if (i >= s) return;
  block_outer_ema_rows(F + k * b * b, b, g + k * b, n, rows, s, w_old, w_new, i, i + 1, false);
}

template <class S>
__global__ void root_kernel(const S* F, S* R, int32_t* status, int64_t n, int64_t b, int64_t first,
                            int64_t count, double scale, double damping, double power, double* work) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= count) return;
  const int64_t k = first + j;
  const int64_t s = block_length(n, b, k);
  S* Rk = R + k * b * b;
  for (int64_t i = s; i < b; ++i)
    for (int64_t c = 0; c < b; ++c) Rk[i * b + c] = Rk[c * b + i] = S(0);
  status[k] = ::fisherprec::block_inv_root(F + k * b * b, Rk, b, s, scale, damping, power,
                             work + j * block_root_workspace(b));
}

__device__ double block_sum(double x, double* shared) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < (blockDim.x + 31) / 32; ++w) total += shared[w];
  return total;
}

template <class T>
__global__ void step_kernel(T* param, const T* grad, float* m, float* v, const float* R,
                            const int32_t* status, int64_t n, int64_t b, BlockStepScalars sc) {
  __shared__ float ms[kStepThreads];
  __shared__ double partial[kStepThreads / 32];
  const int64_t k = blockIdx.x;
  const int64_t s = block_length(n, b, k);
  const int64_t off = k * b;
  const int i = threadIdx.x;
  const bool active = i < s;
  float a = 0.0f;
  if (active) {
    a = block_adam_direction(grad[off + i], m[off + i], v[off + i], sc.diag);
    ms[i] = m[off + i];
  }
  if (status[k] != kRootOk) {
    if (active) param[off + i] = block_move(param[off + i], a, sc.diag);
    return;
  }
  const double adam_sq = block_sum(static_cast<double>(a) * a, partial);  // syncs ms too
  float u = 0.0f;
  if (active) {
    const float* Rk = R + k * b * b;
    for (int64_t j = 0; j < s; ++j) u += ms[j] * Rk[j * b + i];
  }
  const double root_sq = block_sum(static_cast<double>(u) * u, partial);
  if (active)
    param[off + i] = block_move(param[off + i], block_graft_scale(adam_sq, root_sq, sc.graft) * u, sc.diag);
}

int grid(int64_t work, int threads) { return static_cast<int>((work + threads - 1) / threads); }

}  // namespace

int block_outer_update(const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& rows,
                       const std::vector<int64_t>& numels, int64_t num_rows, int64_t block_size,
                       double w_old, double w_new, int state_dtype, int row_dtype, uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const int64_t b = block_size;
  auto run = [&](auto state_tag) -> int {
    using S = decltype(state_tag);
    return FP_DISPATCH_FLOATING(row_dtype, [&] {
      for (size_t t = 0; t < numels.size(); ++t) {
        const int64_t work = block_count(numels[t], b) * b;
        if (work == 0) continue;
        outer_kernel<S, scalar_t><<<grid(work, 128), 128, 0, st>>>(
            reinterpret_cast<S*>(states[t]), reinterpret_cast<const scalar_t*>(rows[t]), numels[t],
            num_rows, b, static_cast<S>(w_old), static_cast<S>(w_new));
        if (auto err = cudaGetLastError()) return static_cast<int>(err);
      }
      return 0;
    });
  };
  return state_dtype == static_cast<int>(DType::Float64) ? run(double{}) : run(float{});
}

int block_inv_root(const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& roots,
                   const std::vector<uintptr_t>& status, const std::vector<int64_t>& numels,
                   int64_t block_size, double scale, double damping, double power, int state_dtype,
                   uintptr_t workspace, int64_t workspace_blocks, uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const int64_t b = block_size;
  auto* work = reinterpret_cast<double*>(workspace);
  auto run = [&](auto state_tag) -> int {
    using S = decltype(state_tag);
    for (size_t t = 0; t < numels.size(); ++t) {
      const int64_t nb = block_count(numels[t], b);
      for (int64_t first = 0; first < nb; first += workspace_blocks) {
        const int64_t count = nb - first < workspace_blocks ? nb - first : workspace_blocks;
        root_kernel<S><<<grid(count, 64), 64, 0, st>>>(
            reinterpret_cast<const S*>(states[t]), reinterpret_cast<S*>(roots[t]),
            reinterpret_cast<int32_t*>(status[t]), numels[t], b, first, count, scale, damping, power,
            work);
        if (auto err = cudaGetLastError()) return static_cast<int>(err);
      }
    }
    return 0;
  };
  return state_dtype == static_cast<int>(DType::Float64) ? run(double{}) : run(float{});
}

int block_fisher_step(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
                      const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
                      const std::vector<uintptr_t>& roots, const std::vector<uintptr_t>& status,
                      const std::vector<int64_t>& numels, int64_t block_size, double beta1,
                      double beta2, double step_size, double inv_c2_root, double eps, double decay,
                      bool maximize, bool graft, int param_dtype, uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const int64_t b = block_size;
  BlockStepScalars sc;
  sc.diag = diag_scalars(beta1, beta2, step_size, 1.0 / inv_c2_root, eps, decay, 0.5, maximize);
  sc.graft = graft;
  const int threads = static_cast<int>(((b + 31) / 32) * 32);
  return FP_DISPATCH_FLOATING(param_dtype, [&] {
    for (size_t t = 0; t < numels.size(); ++t) {
      const int64_t nb = block_count(numels[t], b);
      if (nb == 0) continue;
      step_kernel<scalar_t><<<static_cast<unsigned>(nb), threads, 0, st>>>(
          reinterpret_cast<scalar_t*>(params[t]), reinterpret_cast<const scalar_t*>(grads[t]),
          reinterpret_cast<float*>(exp_avgs[t]), reinterpret_cast<float*>(exp_avg_sqs[t]),
          reinterpret_cast<const float*>(roots[t]), reinterpret_cast<const int32_t*>(status[t]), numels[t],
          b, sc);
      if (auto err = cudaGetLastError()) return static_cast<int>(err);
    }
    return 0;
  });
}

}  // namespace fisherprec::cuda
