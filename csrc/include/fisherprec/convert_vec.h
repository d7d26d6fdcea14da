// Branch-free 16-bit float conversions, bit-identical to to_float/from_float
// in common.h (round to nearest even, NaN stays NaN and quiet, overflow to
// inf, half subnormals exact), written with selects instead of early returns
// so that GCC vectorises the loops that call them. Tested exhaustively over
// every 16-bit pattern in tests/test_diag_ops.py.
#pragma once

#include "fisherprec/common.h"

namespace fisherprec {

// c ? a : b as bit arithmetic: GCC's if-conversion gives up on loops with
// several data-dependent selects, masks always vectorise.
FP_HD uint32_t select_bits(bool c, uint32_t a, uint32_t b) {
  return b ^ ((a ^ b) & (0u - static_cast<uint32_t>(c)));
}

FP_HD float to_float_vec(float x) { return x; }
FP_HD float to_float_vec(bfloat16 x) { return to_float(x); }  // already a shift
FP_HD float to_float_vec(float16 h) {
  const uint32_t bits = h.bits;
  const uint32_t sign = (bits & 0x8000u) << 16;
  const uint32_t exp = (bits >> 10) & 0x1fu;
  const uint32_t mant = bits & 0x3ffu;
  const uint32_t normal = sign | ((exp + 112u) << 23) | (mant << 13);
  const uint32_t inf_nan = sign | 0x7f800000u | (mant << 13);
  // zero or subnormal: mant · 2^-24 (exact in float)
  const uint32_t sub = sign | bit_cast<uint32_t>(static_cast<float>(static_cast<int32_t>(mant)) *
                                                 5.9604644775390625e-8f);
  return bit_cast<float>(select_bits(exp == 0x1fu, inf_nan, select_bits(exp == 0u, sub, normal)));
}

template <class T>
FP_HD T from_float_vec(float x);
template <>
FP_HD float from_float_vec<float>(float x) { return x; }
template <>
FP_HD bfloat16 from_float_vec<bfloat16>(float x) {
  const uint32_t u = bit_cast<uint32_t>(x);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  return bfloat16{static_cast<uint16_t>(select_bits(is_nan, quiet_nan, rounded))};
}
template <>
FP_HD float16 from_float_vec<float16>(float x) {
  const uint32_t u = bit_cast<uint32_t>(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // normal: rebias exponent 127 → 15 and round to nearest even (wraps harmlessly elsewhere)
  const uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
  // |x| < 2^-14: adding 0.5f aligns the float's ulp with 2^-24, so the
  // hardware's round-to-nearest-even does the rounding.
  const uint32_t sub = bit_cast<uint32_t>(bit_cast<float>(a) + 0.5f) - 0x3f000000u;
  const uint32_t inf_nan = 0x7c00u | (static_cast<uint32_t>(a > 0x7f800000u) << 9);
  uint32_t r = select_bits(a < 0x38800000u, sub, normal);
  r = select_bits(a >= 0x477ff000u, 0x7c00u, r);  // ≥ 65520 → inf
  r = select_bits(a >= 0x7f800000u, inf_nan, r);
  return float16{static_cast<uint16_t>(sign | r)};
}

}  // namespace fisherprec
