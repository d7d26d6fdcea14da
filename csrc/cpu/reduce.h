// CPU kernel entry points, called by bindings.cpp. Pointers arrive as
// integers from fisherprec/ops/reduce.py, which has validated dtype, device,
// contiguity, sizes and aliasing: nothing here checks them again.
// Each kernel family has its own header like this one.
#pragma once

#include <cstdint>
#include <vector>

namespace fisherprec::cpu {

// ---- reduce (foundation) ----
// Σ over all tensors of Σ x², accumulated in float64.
double sum_of_squares(const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& numels,
                      int dtype, int threads);

}  // namespace fisherprec::cpu
