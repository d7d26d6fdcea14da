// What every binding file of fisherprec._C shares. Functions take raw data
// pointers as integers, sizes, dtype codes and a thread count (CPU) or a CUDA
// stream handle, as validated by fisherprec/ops/; every call releases the GIL.
//
// A kernel family binds itself with FISHERPREC_BINDINGS(family) { ... } in its
// own csrc/bindings/<family>.cpp: the module (module.cpp) runs every registered
// family, so adding one edits no shared file.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/runtime.h"
#endif

namespace py = pybind11;

namespace fisherprec::bindings {

using Ptrs = std::vector<uintptr_t>;
using Sizes = std::vector<int64_t>;
using Binder = void (*)(py::module_&);

// The registered families, filled by static initialisers before the module's
// init function runs (a function-local static: no initialisation-order issue).
std::vector<std::pair<std::string, Binder>>& binders();

struct Registration {
  Registration(const char* family, Binder bind) { binders().emplace_back(family, bind); }
};

#if defined(FISHERPREC_WITH_CUDA)
// A CUDA runtime error code as a Python RuntimeError naming the kernel.
inline void check_cuda(int code, const char* what) {
  if (code != 0)
    throw std::runtime_error(std::string("fisherprec: CUDA error in ") + what + ": " +
                             fisherprec::cuda::error_string(code));
}
#endif

}  // namespace fisherprec::bindings

#define FISHERPREC_BINDINGS(family)                                                         \
  static void fisherprec_bind_##family(py::module_& m);                                     \
  static const ::fisherprec::bindings::Registration fisherprec_registration_##family(#family, \
                                                                     &fisherprec_bind_##family); \
  static void fisherprec_bind_##family(py::module_& m)
