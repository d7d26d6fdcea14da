#include "cpu/eigh.h"

#include <vector>

#include "cpu/parallel.h"
#include "fisherprec/eigh.h"

namespace fisherprec::cpu {
namespace {

// target_clones: the solver's inlined inner loops are vectorised for the
// widest ISA found at run time (as the block root's, csrc/cpu/block.cpp).
template <class T>
__attribute__((target_clones("avx512f", "avx2", "default"))) int32_t eigh_one(const T* M, double* w,
                                                                              double* V, int64_t n) {
  thread_local std::vector<double> e;
  e.resize(static_cast<size_t>(n));
  return ::fisherprec::symmetric_eigh(M, w, V, e.data(), n);
}

}  // namespace

void symmetric_eigh(uintptr_t matrices, uintptr_t eigenvalues, uintptr_t eigenvectors,
                    uintptr_t status, int64_t count, int64_t n, int dtype, int threads) {
  FP_DISPATCH_FLOATING(dtype, [&] {
    const auto* M = reinterpret_cast<const scalar_t*>(matrices);
    auto* w = reinterpret_cast<double*>(eigenvalues);
    auto* V = reinterpret_cast<double*>(eigenvectors);
    auto* st = reinterpret_cast<int32_t*>(status);
    parallel_for(count, threads, [&](int64_t k) {
      st[k] = eigh_one<scalar_t>(M + k * n * n, w + k * n, V + k * n * n, n);
    });
  });
}

}  // namespace fisherprec::cpu
