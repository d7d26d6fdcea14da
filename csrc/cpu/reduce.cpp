#include "cpu/reduce.h"

#include "cpu/parallel.h"
#include "fisherprec/reduce.h"

namespace fisherprec::cpu {

double sum_of_squares(const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& numels,
                      int dtype, int threads) {
  return FP_DISPATCH_FLOATING(dtype, [&] {
    const auto chunks = make_chunks(numels);
    std::vector<double> partial(chunks.size());
    parallel_for(static_cast<int64_t>(chunks.size()), threads, [&](int64_t i) {
      const Chunk& c = chunks[i];
      partial[i] = sum_of_squares_range(reinterpret_cast<const scalar_t*>(ptrs[c.tensor]), c.begin, c.end);
    });
    double total = 0.0;  // chunk order: the result does not depend on `threads`
    for (double p : partial) total += p;
    return total;
  });
}

}  // namespace fisherprec::cpu
