// Batched symmetric eigensolver on CUDA (math in fisherprec/eigh.h); same
// arguments as csrc/cpu/eigh.h plus a float64 workspace of count·n doubles
// and the stream. Returns a cudaError_t code.
#pragma once

#include <cstdint>

namespace fisherprec::cuda {

int symmetric_eigh(uintptr_t matrices, uintptr_t eigenvalues, uintptr_t eigenvectors, uintptr_t status,
                   int64_t count, int64_t n, int dtype, uintptr_t workspace, uintptr_t stream);

}  // namespace fisherprec::cuda
