#include "cpu/block.h"

#include <algorithm>
#include <vector>

#include "cpu/parallel.h"
#include "fisherprec/block.h"

namespace fisherprec::cpu {
namespace {

struct BlockRef {
  int64_t tensor;
  int64_t block;  // index within the tensor
};

// Blocks of all tensors of a call, numbered 0..total-1 in tensor order;
// first[t] is the number of tensor t's first block. O(#tensors) memory, so
// a step over millions of small blocks allocates nothing per block.
class BlockIndex {
 public:
  BlockIndex(const std::vector<int64_t>& numels, int64_t b) : first_(numels.size() + 1, 0) {
    for (size_t t = 0; t < numels.size(); ++t) first_[t + 1] = first_[t] + block_count(numels[t], b);
  }
  int64_t total() const { return first_.back(); }
  BlockRef operator[](int64_t flat) const {
    // the last tensor whose first block is ≤ flat (empty tensors own no block)
    const auto it = std::upper_bound(first_.begin(), first_.end(), flat);
    const int64_t t = static_cast<int64_t>(it - first_.begin()) - 1;
    return {t, flat - first_[t]};
  }

 private:
  std::vector<int64_t> first_;
};

// The per-block bodies carry target_clones so that their inlined inner loops
// are vectorised for the widest ISA found at run time. Results are
// deterministic for a given machine; clones may differ in the last bit
// (FMA contraction), so two machines may too.
template <class S>
__attribute__((target_clones("avx512f", "avx2", "default"))) int32_t root_one(
    const S* F, S* R, int64_t b, int64_t s, double scale, double damping, double power) {
  thread_local std::vector<double> work;
  work.resize(static_cast<size_t>(block_root_workspace(b)));
  for (int64_t i = s; i < b; ++i)  // the padding of a tail block stays zero
    for (int64_t j = 0; j < b; ++j) R[i * b + j] = R[j * b + i] = S(0);
  return ::fisherprec::block_inv_root(F, R, b, s, scale, damping, power, work.data());
}

template <class S, class T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void outer_one(
    S* F, const T* g, int64_t row_stride, int64_t rows, int64_t b, int64_t s, S w_old, S w_new) {
  block_outer_ema_rows(F, b, g, row_stride, rows, s, w_old, w_new, 0, s, /*upper=*/true);
  block_mirror_upper(F, b, s);
}

template <class T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void step_one(
    T* param, const T* grad, float* m, float* v, const float* R, int64_t b, int64_t s, bool use_root,
    const BlockStepScalars& sc) {
  float u[256];
  block_step(param, grad, m, v, R, b, s, use_root, sc, u);
}

}  // namespace

void block_outer_update(const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& rows,
                        const std::vector<int64_t>& numels, int64_t num_rows, int64_t block_size,
                        double w_old, double w_new, int state_dtype, int row_dtype, int threads) {
  const BlockIndex blocks(numels, block_size);
  const int64_t b = block_size;
  auto run = [&](auto state_tag) {
    using S = decltype(state_tag);
    FP_DISPATCH_FLOATING(row_dtype, [&] {
      parallel_for(blocks.total(), threads, [&](int64_t i) {
        const BlockRef r = blocks[i];
        const int64_t n = numels[r.tensor];
        S* F = reinterpret_cast<S*>(states[r.tensor]) + r.block * b * b;
        const scalar_t* g = reinterpret_cast<const scalar_t*>(rows[r.tensor]) + r.block * b;
        outer_one<S, scalar_t>(F, g, n, num_rows, b, block_length(n, b, r.block),
                               static_cast<S>(w_old), static_cast<S>(w_new));
      });
    });
  };
  if (state_dtype == static_cast<int>(DType::Float64))
    run(double{});
  else
    run(float{});
}

void block_inv_root(const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& roots,
                    const std::vector<uintptr_t>& status, const std::vector<int64_t>& numels,
                    int64_t block_size, double scale, double damping, double power, int state_dtype,
                    int threads) {
  const BlockIndex blocks(numels, block_size);
  const int64_t b = block_size;
  auto run = [&](auto state_tag) {
    using S = decltype(state_tag);
    // Dynamic scheduling would balance tail blocks better, but each block's
    // result does not depend on which thread computes it, so static is fine.
    parallel_for(blocks.total(), threads, [&](int64_t i) {
      const BlockRef r = blocks[i];
      const S* F = reinterpret_cast<const S*>(states[r.tensor]) + r.block * b * b;
      S* R = reinterpret_cast<S*>(roots[r.tensor]) + r.block * b * b;
      reinterpret_cast<int32_t*>(status[r.tensor])[r.block] =
          root_one<S>(F, R, b, block_length(numels[r.tensor], b, r.block), scale, damping, power);
    });
  };
  if (state_dtype == static_cast<int>(DType::Float64))
    run(double{});
  else
    run(float{});
}

void block_fisher_step(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
                       const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
                       const std::vector<uintptr_t>& roots, const std::vector<uintptr_t>& status,
                       const std::vector<int64_t>& numels, int64_t block_size, double beta1,
                       double beta2, double step_size, double inv_c2_root, double eps, double decay,
                       bool maximize, bool graft, int param_dtype, int threads) {
  const BlockIndex blocks(numels, block_size);
  const int64_t b = block_size;
  BlockStepScalars sc;
  sc.diag = diag_scalars(beta1, beta2, step_size, 1.0 / inv_c2_root, eps, decay, 0.5, maximize);
  sc.graft = graft;
  FP_DISPATCH_FLOATING(param_dtype, [&] {
    parallel_for(blocks.total(), threads, [&](int64_t i) {
      const BlockRef r = blocks[i];
      const int64_t t = r.tensor, off = r.block * b;
      const bool use_root = reinterpret_cast<const int32_t*>(status[t])[r.block] == kRootOk;
      step_one<scalar_t>(reinterpret_cast<scalar_t*>(params[t]) + off,
                         reinterpret_cast<const scalar_t*>(grads[t]) + off,
                         reinterpret_cast<float*>(exp_avgs[t]) + off,
                         reinterpret_cast<float*>(exp_avg_sqs[t]) + off,
                         reinterpret_cast<const float*>(roots[t]) + r.block * b * b, b,
                         block_length(numels[t], b, r.block), use_root, sc);
    });
  });
}

}  // namespace fisherprec::cpu
