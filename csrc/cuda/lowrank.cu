// CUDA kernels of the low-rank window (math: fisherprec/lowrank.h).
//
// Every kernel walks the flat vector of a param group in chunks of kChunk
// elements, one block per chunk. The dot kernels stage a tile of the chunk's
// float64 inputs in shared memory, then each warp streams its window columns
// over it with coalesced loads (column j belongs to warp j mod kWarps, so a
// lane keeps kColsPerWarp float64 accumulators per dot in registers). Each
// block writes one row of partials; a second kernel sums the rows in chunk
// order, so results are deterministic for a given device.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "cuda/lowrank.h"
#include "fisherprec/lowrank.h"

namespace fisherprec::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kColsPerWarp = kLowrankMaxRank / kWarps;  // 16
constexpr int64_t kChunk = 8192;                       // elements per block
constexpr int kTile = 1024;                            // elements staged in shared memory
constexpr int kMaxTensors = 40;

// Up to kMaxTensors tensors of a call, passed by value as a kernel argument.
// Block b works on tensor t with block_start[t] ≤ b < block_start[t + 1].
struct Table {
  const void* a[kMaxTensors];  // grads / x / y
  void* b[kMaxTensors];        // exp_avg (stats) / x (combine)
  float* v[kMaxTensors];       // exp_avg_sq (stats), may be null
  int64_t offset[kMaxTensors];  // position of the tensor in the flat vector
  int64_t numel[kMaxTensors];
  int64_t row_base[kMaxTensors];  // first partial row of the tensor
  int block_start[kMaxTensors + 1];
  int tensors;
};

struct Work {
  int t;
  int64_t begin, end, row;
};

__device__ __forceinline__ Work locate(const Table& table) {
  int t = 0;
  while (t + 1 < table.tensors && static_cast<int>(blockIdx.x) >= table.block_start[t + 1]) ++t;
  const int64_t c = blockIdx.x - table.block_start[t];
  const int64_t begin = c * kChunk;
  const int64_t end = begin + kChunk < table.numel[t] ? begin + kChunk : table.numel[t];
  return {t, begin, end, table.row_base[t] + c};
}

__device__ __forceinline__ double warp_sum(double x) {
  for (int s = 16; s > 0; s >>= 1) x += __shfl_down_sync(0xffffffffu, x, s);
  return x;
}

// Sum of one value per thread over the block, in a fixed order; valid in thread 0.
__device__ double block_sum(double x, double* scratch) {
  x = warp_sum(x);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

// Stats = false: dots (optionally inserting x into row `slot`), nout = ncols.
// Stats = true: the optimizer's first pass, nout = 2·ncols + 2.
template <class T, class W, bool Stats>
__global__ void __launch_bounds__(kThreads) dots_kernel(Table table, W* window, int64_t stride, int ncols,
                                                        int64_t slot, LowrankStatsScalars s, double* partial,
                                                        int nout) {
  __shared__ double x1s[kTile];
  __shared__ double x2s[Stats ? kTile : 1];
  __shared__ double scratch[kWarps];
  const Work work = locate(table);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* x = static_cast<const T*>(table.a[work.t]);
  float* m = Stats ? static_cast<float*>(table.b[work.t]) : nullptr;
  float* v = table.v[work.t];
  const int64_t offset = table.offset[work.t];
  double acc1[kColsPerWarp], acc2[kColsPerWarp];
#pragma unroll
  for (int w = 0; w < kColsPerWarp; ++w) acc1[w] = acc2[w] = 0.0;
  double mm = 0.0, aa = 0.0;

  for (int64_t tile = work.begin; tile < work.end; tile += kTile) {
    const int n = static_cast<int>(work.end - tile < kTile ? work.end - tile : kTile);
    for (int e = threadIdx.x; e < n; e += kThreads) {
      const int64_t i = tile + e;
      W* stored = slot >= 0 ? window + slot * stride + offset + i : nullptr;
      if constexpr (Stats) {
        double a, b, graft;
        float unused_v = 0.0f;
        lowrank_stats_element<W>(to_float(x[i]), m[i], v ? v[i] : unused_v, stored, s, a, b, graft);
        x1s[e] = a;
        x2s[e] = b;
        mm += b * b;
        aa += graft;
      } else {
        if (stored) {
          *stored = from_double<W>(to_double(x[i]));
          x1s[e] = to_double(*stored);
        } else {
          x1s[e] = to_double(x[i]);
        }
      }
    }
    __syncthreads();  // also publishes the inserted row to the other warps
#pragma unroll
    for (int w = 0; w < kColsPerWarp; ++w) {
      const int j = warp + w * kWarps;
      if (j < ncols) {
        const W* col = window + j * stride + offset + tile;
        for (int e = lane; e < n; e += 32) {
          const double g = to_double(col[e]);
          acc1[w] += g * x1s[e];
          if constexpr (Stats) acc2[w] += g * x2s[e];
        }
      }
    }
    __syncthreads();
  }

  double* row = partial + work.row * nout;
#pragma unroll
  for (int w = 0; w < kColsPerWarp; ++w) {
    const int j = warp + w * kWarps;
    const double s1 = warp_sum(acc1[w]);
    const double s2 = Stats ? warp_sum(acc2[w]) : 0.0;
    if (lane == 0 && j < ncols) {
      row[j] = s1;
      if constexpr (Stats) row[ncols + j] = s2;
    }
  }
  if constexpr (Stats) {
    const double total_mm = block_sum(mm, scratch);
    const double total_aa = block_sum(aa, scratch);
    if (threadIdx.x == 0) {
      row[2 * ncols] = total_mm;
      row[2 * ncols + 1] = total_aa;
    }
  }
}

// out[k] = Σ_rows partial[row][k], rows in order.
__global__ void reduce_rows_kernel(const double* partial, int64_t rows, int nout, double* out) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= nout) return;
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) total += partial[r * nout + k];
  out[k] = total;
}

template <class Y, class X, class W>
__global__ void __launch_bounds__(kThreads) combine_kernel(Table table, const W* window, int64_t stride,
                                                           int ncols, const double* coef, double decay) {
  __shared__ double c[kLowrankMaxRank + 1];
  for (int j = threadIdx.x; j <= ncols; j += kThreads) c[j] = coef[j];
  __syncthreads();
  const Work work = locate(table);
  Y* y = static_cast<Y*>(const_cast<void*>(table.a[work.t]));
  const X* x = static_cast<const X*>(table.b[work.t]);
  const int64_t offset = table.offset[work.t];
  for (int64_t i = work.begin + threadIdx.x; i < work.end; i += kThreads) {
    const W* g = window + offset + i;
    double gc = 0.0;
    for (int j = 0; j < ncols; ++j) gc += c[1 + j] * to_double(g[j * stride]);
    y[i] = from_double<Y>(
        ::fisherprec::lowrank_combine(decay == 0.0 ? 0.0 : to_double(y[i]), decay, c[0], to_double(x[i]), gc));
  }
}

// Calls launch(table, blocks) for batches of up to kMaxTensors non-empty
// tensors; returns the first CUDA error, or 0.
template <class Launch>
int for_each_batch(const std::vector<uintptr_t>& a, const std::vector<uintptr_t>& b, const std::vector<uintptr_t>& v,
                   const std::vector<int64_t>& numels, Launch&& launch) {
  Table table{};
  int blocks = 0;
  int64_t offset = 0, rows = 0;
  auto flush = [&]() -> int {
    if (table.tensors == 0) return 0;
    table.block_start[table.tensors] = blocks;
    launch(table, blocks);
    const int err = static_cast<int>(cudaGetLastError());
    table = Table{};
    blocks = 0;
    return err;
  };
  for (size_t t = 0; t < numels.size(); ++t) {
    if (numels[t] > 0) {
      const int k = table.tensors;
      table.a[k] = reinterpret_cast<const void*>(a[t]);
      table.b[k] = b.empty() ? nullptr : reinterpret_cast<void*>(b[t]);
      table.v[k] = v.empty() ? nullptr : reinterpret_cast<float*>(v[t]);
      table.offset[k] = offset;
      table.numel[k] = numels[t];
      table.row_base[k] = rows;
      table.block_start[k] = blocks;
      const int64_t chunks = (numels[t] + kChunk - 1) / kChunk;
      blocks += static_cast<int>(chunks);
      rows += chunks;
      ++table.tensors;
      if (table.tensors == kMaxTensors)
        if (int err = flush()) return err;
    }
    offset += numels[t];
  }
  return flush();
}

int64_t count_rows(const std::vector<int64_t>& numels) {
  int64_t rows = 0;
  for (int64_t n : numels) rows += (n + kChunk - 1) / kChunk;
  return rows;
}

int reduce_rows(const double* partial, int64_t rows, int nout, double* out, cudaStream_t s) {
  if (nout == 0) return 0;
  if (rows == 0) return static_cast<int>(cudaMemsetAsync(out, 0, nout * sizeof(double), s));
  reduce_rows_kernel<<<(nout + 255) / 256, 256, 0, s>>>(partial, rows, nout, out);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int64_t lowrank_workspace_doubles(const std::vector<int64_t>& numels, int64_t nout) {
  return count_rows(numels) * nout;
}

int lowrank_dots(uintptr_t window, int window_dtype, int64_t stride, int64_t columns, int64_t slot,
                 const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& numels, int dtype,
                 uintptr_t out, uintptr_t workspace, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  auto* partial = reinterpret_cast<double*>(workspace);
  const int nout = static_cast<int>(columns);
  if (nout == 0) return 0;
  const LowrankStatsScalars unused{};
  return FP_DISPATCH_LOWRANK_WINDOW(window_dtype, [&] {
    return FP_DISPATCH_FLOATING(dtype, [&] {
      const int err = for_each_batch(ptrs, {}, {}, numels, [&](const Table& table, int blocks) {
        dots_kernel<scalar_t, window_t, false><<<blocks, kThreads, 0, s>>>(
            table, reinterpret_cast<window_t*>(window), stride, nout, slot, unused, partial, nout);
      });
      if (err) return err;
      return reduce_rows(partial, count_rows(numels), nout, reinterpret_cast<double*>(out), s);
    });
  });
}

int lowrank_stats(const std::vector<uintptr_t>& grads, const std::vector<int64_t>& numels, int dtype,
                  const std::vector<uintptr_t>& m, const std::vector<uintptr_t>& v, uintptr_t window,
                  int window_dtype, int64_t stride, int64_t columns, int64_t slot, float beta1, float beta2,
                  float inv_c2_root, float eps, bool maximize, uintptr_t out, uintptr_t workspace,
                  uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  auto* partial = reinterpret_cast<double*>(workspace);
  const int ncols = static_cast<int>(columns);
  const int nout = 2 * ncols + 2;
  const LowrankStatsScalars scalars =
      lowrank_stats_scalars(beta1, beta2, inv_c2_root, eps, maximize, !v.empty(), slot >= 0);
  return FP_DISPATCH_LOWRANK_WINDOW(window_dtype, [&] {
    return FP_DISPATCH_FLOATING(dtype, [&] {
      const int err = for_each_batch(grads, m, v, numels, [&](const Table& table, int blocks) {
        dots_kernel<scalar_t, window_t, true><<<blocks, kThreads, 0, s>>>(
            table, reinterpret_cast<window_t*>(window), stride, ncols, slot, scalars, partial, nout);
      });
      if (err) return err;
      return reduce_rows(partial, count_rows(numels), nout, reinterpret_cast<double*>(out), s);
    });
  });
}

int lowrank_combine(const std::vector<uintptr_t>& y, const std::vector<int64_t>& numels, int dtype,
                    const std::vector<uintptr_t>& x, int x_dtype, uintptr_t window, int window_dtype,
                    int64_t stride, int64_t columns, uintptr_t coef, double decay, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const int ncols = static_cast<int>(columns);
  const auto* c = reinterpret_cast<const double*>(coef);
  return FP_DISPATCH_LOWRANK_WINDOW(window_dtype, [&] {
    return FP_DISPATCH_FLOATING(dtype, [&] {
      using y_t = scalar_t;
      auto launch_with = [&](auto x_tag) {
        using x_t = decltype(x_tag);
        return for_each_batch(y, x, {}, numels, [&](const Table& table, int blocks) {
          combine_kernel<y_t, x_t, window_t><<<blocks, kThreads, 0, s>>>(
              table, reinterpret_cast<const window_t*>(window), stride, ncols, c, decay);
        });
      };
      // fisherprec/ops/lowrank.py allows float32 and float64 for x.
      return x_dtype == static_cast<int>(DType::Float64) ? launch_with(double{}) : launch_with(float{});
    });
  });
}

}  // namespace fisherprec::cuda
