// Shared by the CPU and CUDA backends: scalar types, conversions and the
// dtype codes the Python layer passes down. Everything here is plain C++17
// that nvcc also compiles for the device, so the CPU tests exercise the same
// math the GPU runs.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define FP_HD __host__ __device__ __forceinline__
#else
#define FP_HD inline
#endif

namespace fisherprec {

// Must match fisherprec/ops/_native.py:_DTYPE_CODES.
enum class DType : int { Float32 = 0, Float64 = 1, BFloat16 = 2, Float16 = 3 };

template <class To, class From>
FP_HD To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// 16-bit floats as raw storage with portable, bit-exact conversions
// (round to nearest even), identical on host and device.
struct bfloat16 {
  uint16_t bits;
};
struct float16 {
  uint16_t bits;
};

FP_HD float to_float(float x) { return x; }
FP_HD float to_float(double x) { return static_cast<float>(x); }
FP_HD float to_float(bfloat16 x) { return bit_cast<float>(static_cast<uint32_t>(x.bits) << 16); }
FP_HD float to_float(float16 h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  const uint32_t mant = h.bits & 0x3ffu;
  if (exp == 0x1f) return bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {  // zero or subnormal: mant · 2^-24
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  return bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

template <class T>
FP_HD T from_float(float x);
template <>
FP_HD float from_float<float>(float x) { return x; }
template <>
FP_HD double from_float<double>(float x) { return x; }
template <>
FP_HD bfloat16 from_float<bfloat16>(float x) {
  const uint32_t u = bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  return bfloat16{static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
template <>
FP_HD float16 from_float<float16>(float x) {
  const uint32_t u = bit_cast<uint32_t>(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u)  // inf or nan (nan stays quiet)
    return float16{static_cast<uint16_t>(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u))};
  if (a >= 0x477ff000u) return float16{static_cast<uint16_t>(sign | 0x7c00u)};  // ≥ 65520 → inf
  if (a < 0x38800000u) {
    // |x| < 2^-14: a half subnormal. Adding 0.5f aligns the float's ulp with
    // 2^-24, so the hardware's round-to-nearest-even does the rounding.
    const float shifted = bit_cast<float>(a) + 0.5f;
    return float16{static_cast<uint16_t>(sign | (bit_cast<uint32_t>(shifted) - 0x3f000000u))};
  }
  a += 0xc8000fffu + ((a >> 13) & 1u);  // rebias exponent 127 → 15, round to nearest even
  return float16{static_cast<uint16_t>(sign | (a >> 13))};
}

// Host only. The Python layer validates dtypes, so reaching this is a bug.
[[noreturn]] inline void throw_bad_dtype(int code) {
  throw std::invalid_argument("fisherprec internal error: unsupported dtype code " + std::to_string(code));
}

}  // namespace fisherprec

// Calls BODY with `scalar_t` bound to the C++ type of a floating dtype code.
#define FP_DISPATCH_FLOATING(DTYPE, ...)                        \
  [&] {                                                         \
    switch (static_cast<::fisherprec::DType>(DTYPE)) {          \
      case ::fisherprec::DType::Float32: {                      \
        using scalar_t = float;                                 \
        return __VA_ARGS__();                                   \
      }                                                         \
      case ::fisherprec::DType::Float64: {                      \
        using scalar_t = double;                                \
        return __VA_ARGS__();                                   \
      }                                                         \
      case ::fisherprec::DType::BFloat16: {                     \
        using scalar_t = ::fisherprec::bfloat16;                \
        return __VA_ARGS__();                                   \
      }                                                         \
      case ::fisherprec::DType::Float16: {                      \
        using scalar_t = ::fisherprec::float16;                 \
        return __VA_ARGS__();                                   \
      }                                                         \
    }                                                           \
    ::fisherprec::throw_bad_dtype(DTYPE);                                     \
  }()
