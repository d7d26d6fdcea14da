// Batched symmetric eigensolver on the CPU (math in fisherprec/eigh.h).
// Pointers come validated from fisherprec/ops/eigh.py.
#pragma once

#include <cstdint>

namespace fisherprec::cpu {

// For each of `count` row-major n×n matrices (dtype code `dtype`):
// eigenvalues (count, n) and eigenvectors (count, n, n, vectors as rows)
// float64, status (count,) int32. One matrix per task, so the result does
// not depend on the thread count.
void symmetric_eigh(uintptr_t matrices, uintptr_t eigenvalues, uintptr_t eigenvectors,
                    uintptr_t status, int64_t count, int64_t n, int dtype, int threads);

}  // namespace fisherprec::cpu
