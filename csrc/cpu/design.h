// CPU entry points of the design family (sequential A-optimal selection, see
// csrc/include/fisherprec/design.h). Inputs validated by fisherprec/ops/design.py.
#pragma once

#include <cstdint>

namespace fisherprec::cpu {

// ---- design ----
// One scoring step over all n rows of `pool` (n × p, dtype code `dtype`):
// when beta != 0, updates s and t (float64, n) by the rank-1 Sherman–Morrison
// correction with b, c (float64, p); then writes out[0] = max score over rows
// whose mask byte is 0 and out[1] = its index (−1 and −inf when none).
void design_score_step(uintptr_t pool, int64_t n, int64_t p, int dtype, uintptr_t b, uintptr_t c,
                       double beta, double gamma, double eta, uintptr_t s, uintptr_t t, uintptr_t mask,
                       uintptr_t out, int threads);

}  // namespace fisherprec::cpu
