#pragma once

#include <cstdint>
#include <vector>

namespace fisherprec::cuda {

// out (one device double, overwritten) = Σ over all tensors of Σ x².
int sum_of_squares(const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& numels, int dtype,
                   uintptr_t out, uintptr_t stream);

}  // namespace fisherprec::cuda
