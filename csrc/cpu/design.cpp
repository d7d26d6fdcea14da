#include "cpu/design.h"

#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "fisherprec/design.h"

namespace fisherprec::cpu {
namespace {

// Rows per work item: fixed, so the argmax (ties → lowest index) and every
// per-row result are independent of the thread count.
constexpr int64_t kDesignRows = 2048;

struct Best {
  double score;
  int64_t index;
};

struct StepArgs {
  int64_t p;
  const double* b;
  const double* c;
  double beta, gamma, eta;
  double* s;
  double* t;
  const uint8_t* mask;
};

// u = xᵀb and v = xᵀc in float64 with a fixed summation order (independent
// partial sums, then a fixed tree), so results never depend on threads.
// Generic dtypes (bfloat16, float16): plain loop.
template <class T>
inline void dot2(const T* __restrict x, const double* __restrict b, const double* __restrict c,
                 int64_t p, double& u, double& v) {
  double su = 0.0, sv = 0.0;
  for (int64_t j = 0; j < p; ++j) {
    const double xj = design_load(x[j]);
    su += xj * b[j];
    sv += xj * c[j];
  }
  u = su;
  v = sv;
}

// float32 / float64: GCC/Clang vector extensions, 2×4 doubles per product
// (AVX2 ymm in the avx2 clone, pairs of SSE registers in the default one).
// The helpers below are always inlined: their 32-byte vector values never
// cross a call boundary, so GCC's note about the AVX calling convention is moot.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
__attribute__((always_inline)) inline v4d load4(const double* x) {
  v4d r;
  std::memcpy(&r, x, sizeof r);
  return r;
}
__attribute__((always_inline)) inline v4d load4(const float* x) {
  v4f r;
  std::memcpy(&r, x, sizeof r);
  return __builtin_convertvector(r, v4d);
}

template <class T>
inline void dot2_vec(const T* __restrict x, const double* __restrict b, const double* __restrict c,
                     int64_t p, double& u, double& v) {
  v4d u0 = {0, 0, 0, 0}, u1 = u0, v0 = u0, v1 = u0;
  int64_t j = 0;
  for (; j + 8 <= p; j += 8) {
    const v4d x0 = load4(x + j), x1 = load4(x + j + 4);
    u0 += x0 * load4(b + j);
    u1 += x1 * load4(b + j + 4);
    v0 += x0 * load4(c + j);
    v1 += x1 * load4(c + j + 4);
  }
  const v4d us = u0 + u1, vs = v0 + v1;
  double su = (us[0] + us[2]) + (us[1] + us[3]);
  double sv = (vs[0] + vs[2]) + (vs[1] + vs[3]);
  for (; j < p; ++j) {
    const double xj = static_cast<double>(x[j]);
    su += xj * b[j];
    sv += xj * c[j];
  }
  u = su;
  v = sv;
}
template <>
inline void dot2<float>(const float* __restrict x, const double* __restrict b,
                        const double* __restrict c, int64_t p, double& u, double& v) {
  dot2_vec(x, b, c, p, u, v);
}
template <>
inline void dot2<double>(const double* __restrict x, const double* __restrict b,
                         const double* __restrict c, int64_t p, double& u, double& v) {
  dot2_vec(x, b, c, p, u, v);
}

template <class T>
inline Best score_rows(const T* __restrict pool, const StepArgs& a, int64_t begin, int64_t end) {
  Best best{-std::numeric_limits<double>::infinity(), -1};
  const int64_t p = a.p;
  const bool update = a.beta != 0.0;
  const double* __restrict b = a.b;
  const double* __restrict c = a.c;
  double* __restrict s = a.s;
  double* __restrict t = a.t;
  const uint8_t* __restrict mask = a.mask;
  for (int64_t i = begin; i < end; ++i) {
    if (mask[i]) continue;  // already chosen: its s, t are never read again
    double u = 0.0, v = 0.0;
    if (update) dot2(pool + i * p, b, c, p, u, v);
    const double score = design_update_score(u, v, a.beta, a.gamma, a.eta, s[i], t[i]);
    if (design_better(score, i, best.score, best.index)) best = {score, i};
  }
  return best;
}

// Wider ISAs chosen at run time for the two hot dtypes (no -march=native).
__attribute__((target_clones("avx512f", "avx2", "default"))) Best score_rows_f32(
    const float* pool, const StepArgs& a, int64_t begin, int64_t end) {
  return score_rows<float>(pool, a, begin, end);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) Best score_rows_f64(
    const double* pool, const StepArgs& a, int64_t begin, int64_t end) {
  return score_rows<double>(pool, a, begin, end);
}

template <class T>
Best score_range(const T* pool, const StepArgs& a, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    return score_rows_f32(pool, a, begin, end);
  } else if constexpr (std::is_same_v<T, double>) {
    return score_rows_f64(pool, a, begin, end);
  } else {
    return score_rows<T>(pool, a, begin, end);
  }
}

}  // namespace

void design_score_step(uintptr_t pool, int64_t n, int64_t p, int dtype, uintptr_t b, uintptr_t c,
                       double beta, double gamma, double eta, uintptr_t s, uintptr_t t, uintptr_t mask,
                       uintptr_t out, int threads) {
  const StepArgs args{p,
                      reinterpret_cast<const double*>(b),
                      reinterpret_cast<const double*>(c),
                      beta,
                      gamma,
                      eta,
                      reinterpret_cast<double*>(s),
                      reinterpret_cast<double*>(t),
                      reinterpret_cast<const uint8_t*>(mask)};
  const int64_t items = (n + kDesignRows - 1) / kDesignRows;
  std::vector<Best> partial(static_cast<size_t>(items));
  FP_DISPATCH_FLOATING(dtype, [&] {
    const auto* rows = reinterpret_cast<const scalar_t*>(pool);
    parallel_for(items, threads, [&](int64_t k) {
      const int64_t begin = k * kDesignRows;
      const int64_t end = begin + kDesignRows < n ? begin + kDesignRows : n;
      partial[static_cast<size_t>(k)] = score_range(rows, args, begin, end);
    });
  });
  Best best{-std::numeric_limits<double>::infinity(), -1};
  for (const Best& candidate : partial)  // item order: deterministic
    if (design_better(candidate.score, candidate.index, best.score, best.index)) best = candidate;
  auto* result = reinterpret_cast<double*>(out);
  result[0] = best.score;
  result[1] = static_cast<double>(best.index);
}

}  // namespace fisherprec::cpu
