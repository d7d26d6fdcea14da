#include "cuda/multi_tensor.cuh"
#include "cuda/reduce.h"
#include "fisherprec/reduce.h"

namespace fisherprec::cuda {
namespace {

template <class T>
__global__ void sum_of_squares_kernel(TensorTable<1> table, double* out) {
  const int t = table.block_tensor[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunkElems;
  const int64_t n = table.numel[t];
  const int64_t end = begin + kChunkElems < n ? begin + kChunkElems : n;
  const T* x = static_cast<const T*>(table.ptr[0][t]);
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    acc += sum_of_squares_range(x, i, i + 1);  // the shared per-element math
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  // Blocks combine in arbitrary order: the GPU result is not bit-reproducible.
  if (threadIdx.x == 0) atomicAdd(out, partial[0]);
}

}  // namespace

int sum_of_squares(const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& numels, int dtype,
                   uintptr_t out, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  auto* result = reinterpret_cast<double*>(out);
  if (auto err = cudaMemsetAsync(result, 0, sizeof(double), s)) return static_cast<int>(err);
  const std::vector<uintptr_t> table[1] = {ptrs};
  return FP_DISPATCH_FLOATING(dtype, [&] {
    return multi_tensor_apply<1>(table, numels, [&](const TensorTable<1>& tt, int blocks) {
      sum_of_squares_kernel<scalar_t><<<blocks, kThreads, 0, s>>>(tt, result);
    });
  });
}

}  // namespace fisherprec::cuda
