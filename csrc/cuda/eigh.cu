// CUDA launch of the batched symmetric eigensolver (fisherprec/eigh.h): one
// thread per matrix, as the block root (csrc/cuda/block.cu): the QL iteration
// is sequential per matrix, so it pays on a GPU only for many small matrices.
#include <cuda_runtime.h>

#include "cuda/eigh.h"
#include "fisherprec/eigh.h"

namespace fisherprec::cuda {
namespace {

template <class T>
__global__ void eigh_kernel(const T* M, double* w, double* V, int32_t* status, int64_t count, int64_t n,
                            double* work) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= count) return;
  status[k] = ::fisherprec::symmetric_eigh(M + k * n * n, w + k * n, V + k * n * n, work + k * n, n);
}

}  // namespace

int symmetric_eigh(uintptr_t matrices, uintptr_t eigenvalues, uintptr_t eigenvectors, uintptr_t status,
                   int64_t count, int64_t n, int dtype, uintptr_t workspace, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  constexpr int threads = 64;
  const auto blocks = static_cast<unsigned>((count + threads - 1) / threads);
  return FP_DISPATCH_FLOATING(dtype, [&] {
    eigh_kernel<scalar_t><<<blocks, threads, 0, s>>>(
        reinterpret_cast<const scalar_t*>(matrices), reinterpret_cast<double*>(eigenvalues),
        reinterpret_cast<double*>(eigenvectors), reinterpret_cast<int32_t*>(status), count, n,
        reinterpret_cast<double*>(workspace));
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace fisherprec::cuda
