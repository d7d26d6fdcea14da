#include "cpu/design.h"

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

template <class T>
inline Best score_rows(const T* pool, const StepArgs& a, int64_t begin, int64_t end) {
  Best best{-std::numeric_limits<double>::infinity(), -1};
  const int64_t p = a.p;
  const bool update = a.beta != 0.0;
  for (int64_t i = begin; i < end; ++i) {
    if (a.mask[i]) continue;  // already chosen: its s, t are never read again
    const T* x = pool + i * p;
    double u = 0.0, v = 0.0;
    if (update) {
      // Reassociated (SIMD) sum: fixed for a given build and ISA, whatever the threads.
#pragma omp simd reduction(+ : u, v)
      for (int64_t j = 0; j < p; ++j) {
        const double xj = design_load(x[j]);
        u += xj * a.b[j];
        v += xj * a.c[j];
      }
    }
    const double score = design_update_score(u, v, a.beta, a.gamma, a.eta, a.s[i], a.t[i]);
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
