// CUDA entry points of the low-rank kernels (math: fisherprec/lowrank.h;
// arguments as in cpu/lowrank.h). Reductions write one row of partials per
// chunk to `workspace` (lowrank_workspace_doubles(numels, nout) doubles) and
// sum them in chunk order: results are deterministic on the GPU too.
#pragma once

#include <cstdint>
#include <vector>

namespace fisherprec::cuda {

int64_t lowrank_workspace_doubles(const std::vector<int64_t>& numels, int64_t nout);

int lowrank_dots(uintptr_t window, int window_dtype, int64_t stride, int64_t columns, int64_t slot,
                 const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& numels, int dtype,
                 uintptr_t out, uintptr_t workspace, uintptr_t stream);

int lowrank_stats(const std::vector<uintptr_t>& grads, const std::vector<int64_t>& numels, int dtype,
                  const std::vector<uintptr_t>& m, const std::vector<uintptr_t>& v, uintptr_t window,
                  int window_dtype, int64_t stride, int64_t columns, int64_t slot, float beta1, float beta2,
                  float inv_c2_root, float eps, bool maximize, uintptr_t out, uintptr_t workspace,
                  uintptr_t stream);

int lowrank_combine(const std::vector<uintptr_t>& y, const std::vector<int64_t>& numels, int dtype,
                    const std::vector<uintptr_t>& x, int x_dtype, uintptr_t window, int window_dtype,
                    int64_t stride, int64_t columns, uintptr_t coef, double decay, uintptr_t stream);

}  // namespace fisherprec::cuda
