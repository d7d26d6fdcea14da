// Multi-tensor work splitting for the CPU backend: every tensor of a call is
// cut into fixed-size chunks and the chunks are spread over OpenMP threads.
// Chunk boundaries do not depend on the thread count, so any reduction that
// combines per-chunk partials in chunk order is deterministic.
#pragma once

#include <cstdint>
#include <vector>

#if defined(FISHERPREC_WITH_OPENMP)
#include <omp.h>
#endif

namespace fisherprec::cpu {

// 64 Ki elements: large enough to amortise scheduling, small enough to
// balance a list of tensors of very different sizes over threads.
constexpr int64_t kChunkElems = int64_t{1} << 16;

struct Chunk {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

inline std::vector<Chunk> make_chunks(const std::vector<int64_t>& numels,
                                      int64_t chunk_elems = kChunkElems) {
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < static_cast<int64_t>(numels.size()); ++t)
    for (int64_t b = 0; b < numels[t]; b += chunk_elems)
      chunks.push_back({t, b, b + chunk_elems < numels[t] ? b + chunk_elems : numels[t]});
  return chunks;
}

// f(i) for i in [0, n) over `threads` threads (the caller passes torch's
// thread count down so that kernels never oversubscribe the machine).
template <class F>
void parallel_for(int64_t n, int threads, F&& f) {
#if defined(FISHERPREC_WITH_OPENMP)
  if (threads > 1 && n > 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) f(i);
}

inline int max_threads() {
#if defined(FISHERPREC_WITH_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace fisherprec::cpu
