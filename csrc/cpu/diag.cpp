#include "cpu/diag.h"

#include "cpu/parallel.h"
#include "fisherprec/convert_vec.h"
#include "fisherprec/diag.h"

// The hot loops are compiled once per ISA level and picked at load time
// (ifunc), so the portable build still runs AVX2+FMA / AVX-512 code where the
// CPU has it. The math is the same inline functions in every clone; the only
// fused multiply-adds are explicit fmaf calls (ISO C++ mode does not contract),
// which the baseline clone gets from libm, correctly rounded: results do not
// depend on which clone runs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define FP_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FP_CPU_CLONES
#endif

namespace fisherprec::cpu {
namespace {

template <class T, bool kSqrt>
inline void step_range(T* __restrict param, const T* __restrict grad, float* __restrict m,
                       float* __restrict v, int64_t n, const DiagScalars& s) {
  const DiagScalars sc = s;  // a local copy: no aliasing with the buffers
  for (int64_t i = 0; i < n; ++i) {
    float mi = m[i], vi = v[i];
    const float p = ::fisherprec::diag_step<kSqrt>(to_float_vec(param[i]), to_float_vec(grad[i]), mi, vi, sc);
    m[i] = mi;
    v[i] = vi;
    param[i] = from_float_vec<T>(p);
  }
}

// One non-template function per parameter dtype: GCC multiversions functions,
// not templates.
FP_CPU_CLONES void step_range_f32(float* param, const float* grad, float* m, float* v, int64_t n,
                                  const DiagScalars& s, bool sqrt_root) {
  if (sqrt_root)
    step_range<float, true>(param, grad, m, v, n, s);
  else
    step_range<float, false>(param, grad, m, v, n, s);
}

FP_CPU_CLONES void step_range_bf16(bfloat16* param, const bfloat16* grad, float* m, float* v, int64_t n,
                                   const DiagScalars& s, bool sqrt_root) {
  if (sqrt_root)
    step_range<bfloat16, true>(param, grad, m, v, n, s);
  else
    step_range<bfloat16, false>(param, grad, m, v, n, s);
}

FP_CPU_CLONES void step_range_f16(float16* param, const float16* grad, float* m, float* v, int64_t n,
                                  const DiagScalars& s, bool sqrt_root) {
  if (sqrt_root)
    step_range<float16, true>(param, grad, m, v, n, s);
  else
    step_range<float16, false>(param, grad, m, v, n, s);
}

// Per-sample Fisher over columns [begin, end): the rows are streamed once,
// summing into a small double buffer that stays in L1.
constexpr int64_t kFisherCols = 1024;

template <class G, class S>
inline void fisher_cols(const G* __restrict grads, int64_t batch, int64_t numel, S* __restrict state,
                        int64_t begin, int64_t end, double old_weight, double new_weight) {
  double acc[kFisherCols];
  const int64_t width = end - begin;
  for (int64_t j = 0; j < width; ++j) acc[j] = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    const G* row = grads + i * numel + begin;
    for (int64_t j = 0; j < width; ++j) {
      const double g = static_cast<double>(to_float_vec(row[j]));
      acc[j] += g * g;
    }
  }
  for (int64_t j = 0; j < width; ++j)
    state[begin + j] = diag_fisher_combine(state[begin + j], acc[j], old_weight, new_weight);
}

template <>
inline void fisher_cols<double, double>(const double* __restrict grads, int64_t batch, int64_t numel,
                                        double* __restrict state, int64_t begin, int64_t end,
                                        double old_weight, double new_weight) {
  double acc[kFisherCols];
  const int64_t width = end - begin;
  for (int64_t j = 0; j < width; ++j) acc[j] = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    const double* row = grads + i * numel + begin;
    for (int64_t j = 0; j < width; ++j) acc[j] += row[j] * row[j];
  }
  for (int64_t j = 0; j < width; ++j)
    state[begin + j] = diag_fisher_combine(state[begin + j], acc[j], old_weight, new_weight);
}

template <>
inline void fisher_cols<double, float>(const double* __restrict grads, int64_t batch, int64_t numel,
                                       float* __restrict state, int64_t begin, int64_t end,
                                       double old_weight, double new_weight) {
  double acc[kFisherCols];
  const int64_t width = end - begin;
  for (int64_t j = 0; j < width; ++j) acc[j] = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    const double* row = grads + i * numel + begin;
    for (int64_t j = 0; j < width; ++j) acc[j] += row[j] * row[j];
  }
  for (int64_t j = 0; j < width; ++j)
    state[begin + j] = diag_fisher_combine(state[begin + j], acc[j], old_weight, new_weight);
}

// A switch, not FP_DISPATCH_FLOATING: the loop must be inlined into the clone
// (a lambda body would be compiled for the baseline ISA only).
#define FP_FISHER_BLOCK(S, NAME)                                                                   \
  FP_CPU_CLONES void NAME(int grad_dtype, uintptr_t grads, int64_t batch, int64_t numel, S* state, \
                          int64_t begin, int64_t end, double a, double b) {                       \
    switch (static_cast<DType>(grad_dtype)) {                                                      \
      case DType::Float32:                                                                         \
        fisher_cols(reinterpret_cast<const float*>(grads), batch, numel, state, begin, end, a, b); \
        break;                                                                                     \
      case DType::Float64:                                                                         \
        fisher_cols(reinterpret_cast<const double*>(grads), batch, numel, state, begin, end, a, b); \
        break;                                                                                     \
      case DType::BFloat16:                                                                        \
        fisher_cols(reinterpret_cast<const bfloat16*>(grads), batch, numel, state, begin, end, a, b); \
        break;                                                                                     \
      case DType::Float16:                                                                         \
        fisher_cols(reinterpret_cast<const float16*>(grads), batch, numel, state, begin, end, a, b); \
        break;                                                                                     \
    }                                                                                              \
  }
FP_FISHER_BLOCK(float, fisher_block_f32)
FP_FISHER_BLOCK(double, fisher_block_f64)
#undef FP_FISHER_BLOCK

}  // namespace

void diag_step(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
               const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
               const std::vector<int64_t>& numels, int dtype, double lr, double beta1, double beta2,
               double eps, double weight_decay, double step, double power, bool bias_correction,
               bool maximize, int threads) {
  const DiagScalars s =
      make_diag_scalars(lr, beta1, beta2, eps, weight_decay, power, bias_correction, step, maximize);
  const bool sqrt_root = s.power == 0.5f;
  const auto chunks = make_chunks(numels);
  parallel_for(static_cast<int64_t>(chunks.size()), threads, [&](int64_t i) {
    const Chunk& c = chunks[i];
    float* m = reinterpret_cast<float*>(exp_avgs[c.tensor]) + c.begin;
    float* v = reinterpret_cast<float*>(exp_avg_sqs[c.tensor]) + c.begin;
    const int64_t n = c.end - c.begin;
    switch (static_cast<DType>(dtype)) {
      case DType::Float32:
        step_range_f32(reinterpret_cast<float*>(params[c.tensor]) + c.begin,
                       reinterpret_cast<const float*>(grads[c.tensor]) + c.begin, m, v, n, s, sqrt_root);
        break;
      case DType::BFloat16:
        step_range_bf16(reinterpret_cast<bfloat16*>(params[c.tensor]) + c.begin,
                        reinterpret_cast<const bfloat16*>(grads[c.tensor]) + c.begin, m, v, n, s,
                        sqrt_root);
        break;
      case DType::Float16:
        step_range_f16(reinterpret_cast<float16*>(params[c.tensor]) + c.begin,
                       reinterpret_cast<const float16*>(grads[c.tensor]) + c.begin, m, v, n, s, sqrt_root);
        break;
      default:
        break;  // fisherprec/ops/diag.py admits float32, bfloat16 and float16 only
    }
  });
}

void diag_fisher_update(uintptr_t grads, int64_t batch, int64_t numel, int grad_dtype, uintptr_t state,
                        int state_dtype, double old_weight, double new_weight, int threads) {
  const int64_t blocks = (numel + kFisherCols - 1) / kFisherCols;
  // Small problems run on one thread: a parallel region costs more than them.
  const int use_threads = batch * numel < (int64_t{1} << 15) ? 1 : threads;
  parallel_for(blocks, use_threads, [&](int64_t blk) {
    const int64_t begin = blk * kFisherCols;
    const int64_t end = begin + kFisherCols < numel ? begin + kFisherCols : numel;
    if (static_cast<DType>(state_dtype) == DType::Float64)
      fisher_block_f64(grad_dtype, grads, batch, numel, reinterpret_cast<double*>(state), begin, end,
                       old_weight, new_weight);
    else
      fisher_block_f32(grad_dtype, grads, batch, numel, reinterpret_cast<float*>(state), begin, end,
                       old_weight, new_weight);
  });
}

}  // namespace fisherprec::cpu
