// CUDA kernels of the diagonal family: the math is fisherprec/diag.h, the
// same inline functions the CPU loops call.
#include "cuda/diag.h"
#include "cuda/multi_tensor.cuh"
#include "fisherprec/diag.h"

namespace fisherprec::cuda {
namespace {

// Elements per thread per iteration: 16-byte loads of float32 states.
constexpr int kIlp = 4;

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <class T>
__device__ __forceinline__ bool aligned_for_pack(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kIlp)) == 0;
}

// One block per (tensor, chunk) of the table; buffers 0..3 are param, grad,
// exp_avg, exp_avg_sq. Aligned chunks use vector loads, others a plain loop.
template <class T, bool kSqrt>
__global__ void __launch_bounds__(kThreads) diag_step_kernel(TensorTable<4> table, DiagScalars s) {
  const int t = table.block_tensor[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunkElems;
  const int64_t n = table.numel[t];
  const int64_t end = begin + kChunkElems < n ? begin + kChunkElems : n;
  T* __restrict__ param = static_cast<T*>(table.ptr[0][t]);
  const T* __restrict__ grad = static_cast<const T*>(table.ptr[1][t]);
  float* __restrict__ m = static_cast<float*>(table.ptr[2][t]);
  float* __restrict__ v = static_cast<float*>(table.ptr[3][t]);

  const bool vec = aligned_for_pack<T>(param) && aligned_for_pack<T>(grad) && aligned_for_pack<float>(m) &&
                   aligned_for_pack<float>(v);
  if (vec) {
    // begin is a multiple of kChunkElems, hence of kIlp: packs stay aligned.
    const int64_t packs_end = begin + ((end - begin) / kIlp) * kIlp;
    for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * kIlp; i < packs_end;
         i += static_cast<int64_t>(blockDim.x) * kIlp) {
      Pack<T, kIlp> p = *reinterpret_cast<const Pack<T, kIlp>*>(param + i);
      const Pack<T, kIlp> g = *reinterpret_cast<const Pack<T, kIlp>*>(grad + i);
      Pack<float, kIlp> mm = *reinterpret_cast<const Pack<float, kIlp>*>(m + i);
      Pack<float, kIlp> vv = *reinterpret_cast<const Pack<float, kIlp>*>(v + i);
#pragma unroll
      for (int k = 0; k < kIlp; ++k)
        p.v[k] = from_float<T>(::fisherprec::diag_step<kSqrt>(to_float(p.v[k]), to_float(g.v[k]), mm.v[k], vv.v[k], s));
      *reinterpret_cast<Pack<T, kIlp>*>(param + i) = p;
      *reinterpret_cast<Pack<float, kIlp>*>(m + i) = mm;
      *reinterpret_cast<Pack<float, kIlp>*>(v + i) = vv;
    }
    for (int64_t i = packs_end + threadIdx.x; i < end; i += blockDim.x) {
      float mi = m[i], vi = v[i];
      param[i] = from_float<T>(::fisherprec::diag_step<kSqrt>(to_float(param[i]), to_float(grad[i]), mi, vi, s));
      m[i] = mi;
      v[i] = vi;
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      float mi = m[i], vi = v[i];
      param[i] = from_float<T>(::fisherprec::diag_step<kSqrt>(to_float(param[i]), to_float(grad[i]), mi, vi, s));
      m[i] = mi;
      v[i] = vi;
    }
  }
}

// One thread per coordinate j; consecutive threads read consecutive columns
// of each row (coalesced). The sum over rows is in double, in row order.
template <class G, class S>
__global__ void diag_fisher_kernel(const G* __restrict__ grads, int64_t batch, int64_t numel,
                                   S* __restrict__ state, double old_weight, double new_weight) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= numel) return;
  double acc = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    const double g = static_cast<double>(grads[i * numel + j]);
    acc += g * g;
  }
  state[j] = diag_fisher_combine(state[j], acc, old_weight, new_weight);
}

template <class T>
__device__ __forceinline__ double as_double(T x) {
  return static_cast<double>(to_float(x));
}

template <class G, class S>
__global__ void diag_fisher_kernel_lowp(const G* __restrict__ grads, int64_t batch, int64_t numel,
                                        S* __restrict__ state, double old_weight, double new_weight) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= numel) return;
  double acc = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    const double g = as_double(grads[i * numel + j]);
    acc += g * g;
  }
  state[j] = diag_fisher_combine(state[j], acc, old_weight, new_weight);
}

template <class G, class S>
void launch_fisher(const G* grads, int64_t batch, int64_t numel, S* state, double a, double b,
                   cudaStream_t stream) {
  const int threads = 256;
  const int64_t blocks = (numel + threads - 1) / threads;
  if constexpr (std::is_same_v<G, float> || std::is_same_v<G, double>)
    diag_fisher_kernel<G, S><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(grads, batch, numel, state, a, b);
  else
    diag_fisher_kernel_lowp<G, S>
        <<<static_cast<unsigned>(blocks), threads, 0, stream>>>(grads, batch, numel, state, a, b);
}

}  // namespace

int diag_step(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
              const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
              const std::vector<int64_t>& numels, int dtype, double lr, double beta1, double beta2, double eps,
              double weight_decay, double step, double power, bool bias_correction, bool maximize,
              uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const DiagScalars s =
      make_diag_scalars(lr, beta1, beta2, eps, weight_decay, power, bias_correction, step, maximize);
  const std::vector<uintptr_t> table[4] = {params, grads, exp_avgs, exp_avg_sqs};
  const bool sqrt_root = s.power == 0.5f;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    return multi_tensor_apply<4>(table, numels, [&](const TensorTable<4>& tt, int blocks) {
      if (sqrt_root)
        diag_step_kernel<T, true><<<blocks, kThreads, 0, st>>>(tt, s);
      else
        diag_step_kernel<T, false><<<blocks, kThreads, 0, st>>>(tt, s);
    });
  };
  switch (static_cast<DType>(dtype)) {
    case DType::Float32:
      return run(float{});
    case DType::BFloat16:
      return run(bfloat16{});
    case DType::Float16:
      return run(float16{});
    default:
      return static_cast<int>(cudaErrorInvalidValue);  // fisherprec/ops/diag.py admits these three only
  }
}

int diag_fisher_update(uintptr_t grads, int64_t batch, int64_t numel, int grad_dtype, uintptr_t state,
                       int state_dtype, double old_weight, double new_weight, uintptr_t stream) {
  if (numel == 0) return 0;
  auto st = reinterpret_cast<cudaStream_t>(stream);
  FP_DISPATCH_FLOATING(grad_dtype, [&] {
    const auto* g = reinterpret_cast<const scalar_t*>(grads);
    if (static_cast<DType>(state_dtype) == DType::Float64)
      launch_fisher(g, batch, numel, reinterpret_cast<double*>(state), old_weight, new_weight, st);
    else
      launch_fisher(g, batch, numel, reinterpret_cast<float*>(state), old_weight, new_weight, st);
  });
  return static_cast<int>(cudaGetLastError());
}

}  // namespace fisherprec::cuda
