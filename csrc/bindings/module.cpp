// The pybind11 module fisherprec._C: build information, the CUDA device count,
// then every kernel family that registered itself with FISHERPREC_BINDINGS in
// csrc/bindings/<family>.cpp (see bindings.h). It links neither libtorch nor (when
// CUDA is built) the shared CUDA runtime.
#include <algorithm>

#include "bindings/bindings.h"
#include "cpu/parallel.h"

namespace fisherprec::bindings {
std::vector<std::pair<std::string, Binder>>& binders() {
  static std::vector<std::pair<std::string, Binder>> registered;
  return registered;
}
}  // namespace fisherprec::bindings

using fisherprec::bindings::binders;
#if defined(FISHERPREC_WITH_CUDA)
using fisherprec::bindings::check_cuda;
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "fisherprec native kernels (internal: use fisherprec.ops)";

  // ---- build information ----
  m.def("build_info", [] {
    py::dict info;
    info["version"] = FISHERPREC_VERSION;
    info["compiler"] = FISHERPREC_CXX_COMPILER;
#if defined(FISHERPREC_WITH_OPENMP)
    info["openmp"] = true;
#else
    info["openmp"] = false;
#endif
    info["openmp_max_threads"] = fisherprec::cpu::max_threads();
#if defined(FISHERPREC_WITH_CUDA)
    info["cuda_built"] = true;
    info["cuda_archs"] = FISHERPREC_CUDA_ARCHS;
    info["cuda_compiler_version"] = FISHERPREC_CUDA_VERSION;
#else
    info["cuda_built"] = false;
    info["cuda_archs"] = "";
    info["cuda_compiler_version"] = "";
#endif
    return info;
  });

  // Number of usable CUDA devices. Raises RuntimeError with the runtime's
  // message when there is no driver (or CUDA was not built).
  m.def("cuda_device_count", [] {
#if defined(FISHERPREC_WITH_CUDA)
    int count = 0;
    check_cuda(fisherprec::cuda::device_count(&count), "cudaGetDeviceCount");
    return count;
#else
    throw std::runtime_error("fisherprec was built without CUDA kernels");
    return 0;
#endif
  });

  // ---- the kernel families, in name order (static initialisation order is not) ----
  auto families = binders();
  std::sort(families.begin(), families.end());
  py::list names;
  for (const auto& [family, bind] : families) {
    bind(m);
    names.append(family);
  }
  m.attr("families") = names;
}
