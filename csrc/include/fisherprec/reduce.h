// Reductions over many tensors. The proof op of the foundation: the fused
// sum of squares Σ_t Σ_i x_{t,i}², accumulated in float64.
#pragma once

#include "fisherprec/common.h"

namespace fisherprec {

// Partial sum of squares of x[begin, end), in float64 for every input dtype.
template <class T>
FP_HD double sum_of_squares_range(const T* x, int64_t begin, int64_t end) {
  double acc = 0.0;
  for (int64_t i = begin; i < end; ++i) {
    const double v = static_cast<double>(to_float(x[i]));
    acc += v * v;
  }
  return acc;
}

template <>
FP_HD double sum_of_squares_range<double>(const double* x, int64_t begin, int64_t end) {
  double acc = 0.0;
  for (int64_t i = begin; i < end; ++i) acc += x[i] * x[i];
  return acc;
}

}  // namespace fisherprec
