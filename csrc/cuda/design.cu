// One greedy / Frank–Wolfe scoring step on the GPU: a warp per pool row
// (coalesced reads of the row, shuffle-reduced dot products), the update and
// score from fisherprec/design.h, then a deterministic two-level argmax (ties
// go to the lowest index, whatever the block count).
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/design.h"
#include "fisherprec/design.h"

namespace fisherprec::cuda {
namespace {

constexpr int kDesignThreads = 256;
constexpr int kDesignWarps = kDesignThreads / 32;
constexpr int kDesignBlocks = 1024;

__device__ __forceinline__ void warp_argmax(double& score, int64_t& index) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const double other_score = __shfl_down_sync(0xffffffffu, score, offset);
    const long long other_index = __shfl_down_sync(0xffffffffu, static_cast<long long>(index), offset);
    if (design_better(other_score, other_index, score, index)) {
      score = other_score;
      index = other_index;
    }
  }
}

// Combines the per-warp bests of a block into out[0] (score), out[1] (index).
__device__ __forceinline__ void block_argmax(double score, int64_t index, double* out) {
  __shared__ double scores[kDesignWarps];
  __shared__ long long indices[kDesignWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warp_argmax(score, index);
  if (lane == 0) {
    scores[warp] = score;
    indices[warp] = index;
  }
  __syncthreads();
  if (warp == 0) {
    score = lane < kDesignWarps ? scores[lane] : -INFINITY;
    index = lane < kDesignWarps ? indices[lane] : -1;
    warp_argmax(score, index);
    if (lane == 0) {
      out[0] = score;
      out[1] = static_cast<double>(index);
    }
  }
}

template <class T>
__global__ void design_score_kernel(const T* __restrict__ pool, int64_t n, int64_t p,
                                    const double* __restrict__ b, const double* __restrict__ c, double beta,
                                    double gamma, double eta, double* __restrict__ s, double* __restrict__ t,
                                    const uint8_t* __restrict__ mask, double* __restrict__ partial) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  double best_score = -INFINITY;
  int64_t best_index = -1;
  for (int64_t i = warp; i < n; i += warps) {  // warp-uniform loop
    if (mask[i]) continue;
    double u = 0.0, v = 0.0;
    if (beta != 0.0) {
      const T* x = pool + i * p;
      for (int64_t j = lane; j < p; j += 32) {
        const double xj = design_load(x[j]);
        u += xj * b[j];
        v += xj * c[j];
      }
      for (int offset = 16; offset > 0; offset >>= 1) {
        u += __shfl_xor_sync(0xffffffffu, u, offset);
        v += __shfl_xor_sync(0xffffffffu, v, offset);
      }
    }
    if (lane == 0) {
      double si = s[i], ti = t[i];
      const double score = design_update_score(u, v, beta, gamma, eta, si, ti);
      s[i] = si;
      t[i] = ti;
      if (design_better(score, i, best_score, best_index)) {
        best_score = score;
        best_index = i;
      }
    }
  }
  block_argmax(best_score, best_index, partial + 2 * blockIdx.x);
}

__global__ void design_reduce_kernel(const double* __restrict__ partial, int blocks, double* __restrict__ out) {
  double best_score = -INFINITY;
  int64_t best_index = -1;
  for (int k = threadIdx.x; k < blocks; k += blockDim.x) {
    const double score = partial[2 * k];
    const int64_t index = static_cast<int64_t>(partial[2 * k + 1]);
    if (design_better(score, index, best_score, best_index)) {
      best_score = score;
      best_index = index;
    }
  }
  block_argmax(best_score, best_index, out);
}

}  // namespace

int design_workspace_blocks() { return kDesignBlocks; }

int design_score_step(uintptr_t pool, int64_t n, int64_t p, int dtype, uintptr_t b, uintptr_t c, double beta,
                      double gamma, double eta, uintptr_t s, uintptr_t t, uintptr_t mask, uintptr_t out,
                      uintptr_t workspace, uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  auto* partial = reinterpret_cast<double*>(workspace);
  const int64_t needed = (n + kDesignWarps - 1) / kDesignWarps;
  const int blocks = static_cast<int>(needed < 1 ? 1 : (needed < kDesignBlocks ? needed : kDesignBlocks));
  FP_DISPATCH_FLOATING(dtype, [&] {
    design_score_kernel<scalar_t><<<blocks, kDesignThreads, 0, st>>>(
        reinterpret_cast<const scalar_t*>(pool), n, p, reinterpret_cast<const double*>(b),
        reinterpret_cast<const double*>(c), beta, gamma, eta, reinterpret_cast<double*>(s),
        reinterpret_cast<double*>(t), reinterpret_cast<const uint8_t*>(mask), partial);
  });
  if (auto err = cudaGetLastError()) return static_cast<int>(err);
  design_reduce_kernel<<<1, kDesignThreads, 0, st>>>(partial, blocks, reinterpret_cast<double*>(out));
  return static_cast<int>(cudaGetLastError());
}

}  // namespace fisherprec::cuda
