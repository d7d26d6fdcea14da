#include "cpu/bellman.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/parallel.h"
#include "fisherprec/bellman.h"

namespace fisherprec::cpu {
namespace {

// States per work item: fixed, so the per-chunk (min, max) partials and hence
// the result do not depend on the thread count. Small enough to balance two
// threads on a few thousand states, large enough to amortise scheduling.
constexpr int64_t kStatesPerChunk = 1024;

// No prefetch of the gathers V[s']: they are random reads (V of 10^6 states
// is 8 MB, past L2), but the out-of-order core already keeps enough of them
// in flight. Prefetching the gathers of states ahead (tried 1 to 16 states,
// T0 to NTA hints) was 5-20% slower on 10^6 × 4 × 8 with 2 threads: it
// re-reads the indices, and its misses compete for the demand loads' miss
// buffers. With a fixed policy, P itself no longer streams (one row in A, at
// a random offset): touching the whole of state s + 8's rows turns the reads
// back into a stream the hardware follows (~20% faster there; ~8% slower in
// the max sweep, which streams already).
constexpr int64_t kStreamAhead = 8;

template <class X>
inline void prefetch_stream(const X* x, int64_t begin, int64_t end) {
#if defined(__GNUC__)
  constexpr int64_t kLine = 64 / sizeof(X);
  for (int64_t j = begin; j < end; j += kLine) __builtin_prefetch(x + j, 0, 0);
#endif
}

// f(c) for every chunk c, dynamically scheduled: the gathers make the cost of
// a chunk depend on what else shares the caches, and a static split waits for
// the slower thread. Results stay deterministic: each chunk writes its own
// partials, combined in chunk order.
template <class F>
void for_each_chunk(int64_t chunks, int threads, F&& f) {
#if defined(FISHERPREC_WITH_OPENMP)
  if (threads > 1 && chunks > 1) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (int64_t c = 0; c < chunks; ++c) f(c);
    return;
  }
#endif
  for (int64_t c = 0; c < chunks; ++c) f(c);
}

template <class T, class I>
std::pair<double, double> backup(const int64_t* indptr, const I* indices, const T* values, const T* reward,
                                 const T* v, double gamma, const int64_t* policy_in, int64_t num_states,
                                 int64_t num_actions, T* v_out, int64_t* policy_out, T* q_out, int threads) {
  if (num_states == 0) return {0.0, 0.0};
  const int64_t chunks = (num_states + kStatesPerChunk - 1) / kStatesPerChunk;
  std::vector<double> lo(chunks), hi(chunks);
  for_each_chunk(chunks, threads, [&](int64_t c) {
    const int64_t begin = c * kStatesPerChunk;
    const int64_t end = std::min(begin + kStatesPerChunk, num_states);
    double chunk_lo = std::numeric_limits<double>::infinity();
    double chunk_hi = -std::numeric_limits<double>::infinity();
    for (int64_t s = begin; s < end; ++s) {
      if (policy_in != nullptr && s + kStreamAhead < num_states) {
        const int64_t first = indptr[(s + kStreamAhead) * num_actions];
        const int64_t last = indptr[(s + kStreamAhead + 1) * num_actions];
        prefetch_stream(values, first, last);
        prefetch_stream(indices, first, last);
      }
      const double delta = bellman_backup_state(s, num_states, num_actions, indptr, indices, values, reward, v,
                                                gamma, policy_in, v_out, policy_out, q_out);
      chunk_lo = std::min(chunk_lo, delta);
      chunk_hi = std::max(chunk_hi, delta);
    }
    lo[c] = chunk_lo;
    hi[c] = chunk_hi;
  });
  return {*std::min_element(lo.begin(), lo.end()), *std::max_element(hi.begin(), hi.end())};
}

template <class T>
std::pair<double, double> dispatch_index(uintptr_t indptr, uintptr_t indices, int index_dtype, uintptr_t values,
                                         uintptr_t reward, uintptr_t v, double gamma, uintptr_t policy_in,
                                         int64_t num_states, int64_t num_actions, uintptr_t v_out,
                                         uintptr_t policy_out, uintptr_t q_out, int threads) {
  auto run = [&](auto index_tag) {
    using I = decltype(index_tag);
    return backup(reinterpret_cast<const int64_t*>(indptr), reinterpret_cast<const I*>(indices),
                  reinterpret_cast<const T*>(values), reinterpret_cast<const T*>(reward),
                  reinterpret_cast<const T*>(v), gamma, reinterpret_cast<const int64_t*>(policy_in), num_states,
                  num_actions, reinterpret_cast<T*>(v_out), reinterpret_cast<int64_t*>(policy_out),
                  reinterpret_cast<T*>(q_out), threads);
  };
  if (index_dtype == 0) return run(int32_t{});
  if (index_dtype == 1) return run(int64_t{});
  throw std::invalid_argument("fisherprec internal error: unsupported index dtype code " +
                              std::to_string(index_dtype));
}

}  // namespace

std::pair<double, double> bellman_backup(uintptr_t indptr, uintptr_t indices, int index_dtype, uintptr_t values,
                                         uintptr_t reward, uintptr_t v, double gamma, uintptr_t policy_in,
                                         int64_t num_states, int64_t num_actions, int dtype, uintptr_t v_out,
                                         uintptr_t policy_out, uintptr_t q_out, int threads) {
  switch (static_cast<DType>(dtype)) {
    case DType::Float32:
      return dispatch_index<float>(indptr, indices, index_dtype, values, reward, v, gamma, policy_in, num_states,
                                   num_actions, v_out, policy_out, q_out, threads);
    case DType::Float64:
      return dispatch_index<double>(indptr, indices, index_dtype, values, reward, v, gamma, policy_in, num_states,
                                    num_actions, v_out, policy_out, q_out, threads);
    default:
      throw_bad_dtype(dtype);
  }
}

}  // namespace fisherprec::cpu
