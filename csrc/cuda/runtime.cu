#include <cuda_runtime.h>

#include "cuda/runtime.h"

namespace fisherprec::cuda {

int device_count(int* count) {
  *count = 0;
  return static_cast<int>(cudaGetDeviceCount(count));
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

int synchronize(uintptr_t stream) {
  return static_cast<int>(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)));
}

}  // namespace fisherprec::cuda
