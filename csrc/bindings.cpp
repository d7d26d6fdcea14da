// The pybind11 module fisherprec._C. It links neither libtorch nor (when CUDA
// is built) the shared CUDA runtime: functions take raw data pointers as
// integers, sizes, dtype codes and a CUDA stream handle, as validated by
// fisherprec/ops.py. Every call releases the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "cpu/parallel.h"
#include "cpu/lowrank.h"
#include "cpu/reduce.h"

#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/lowrank.h"
#include "cuda/reduce.h"
#include "cuda/runtime.h"
#endif

namespace py = pybind11;
using Ptrs = std::vector<uintptr_t>;
using Sizes = std::vector<int64_t>;

#if defined(FISHERPREC_WITH_CUDA)
namespace {
void check_cuda(int code, const char* what) {
  if (code != 0)
    throw std::runtime_error(std::string("fisherprec: CUDA error in ") + what + ": " +
                             fisherprec::cuda::error_string(code));
}
}  // namespace
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "fisherprec native kernels (internal: use fisherprec.ops)";
  const auto nogil = py::call_guard<py::gil_scoped_release>();

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

  // ---- reduce (foundation) ----
  m.def("sum_of_squares_cpu", &fisherprec::cpu::sum_of_squares, py::arg("ptrs"), py::arg("numels"),
        py::arg("dtype"), py::arg("threads"), nogil);

#if defined(FISHERPREC_WITH_CUDA)
  m.def(
      "sum_of_squares_cuda",
      [](const Ptrs& ptrs, const Sizes& numels, int dtype, uintptr_t out, uintptr_t stream) {
        check_cuda(fisherprec::cuda::sum_of_squares(ptrs, numels, dtype, out, stream), "sum_of_squares");
      },
      py::arg("ptrs"), py::arg("numels"), py::arg("dtype"), py::arg("out"), py::arg("stream"), nogil);
#endif

  // ---- lowrank ----
  m.def("lowrank_dots_cpu", &fisherprec::cpu::lowrank_dots, py::arg("window"), py::arg("window_dtype"),
        py::arg("stride"), py::arg("columns"), py::arg("slot"), py::arg("ptrs"), py::arg("numels"),
        py::arg("dtype"), py::arg("out"), py::arg("threads"), nogil);
  m.def("lowrank_stats_cpu", &fisherprec::cpu::lowrank_stats, py::arg("grads"), py::arg("numels"),
        py::arg("dtype"), py::arg("m"), py::arg("v"), py::arg("window"), py::arg("window_dtype"),
        py::arg("stride"), py::arg("columns"), py::arg("slot"), py::arg("beta1"), py::arg("beta2"),
        py::arg("inv_c2_root"), py::arg("eps"), py::arg("maximize"), py::arg("out"), py::arg("threads"),
        nogil);
  m.def("lowrank_combine_cpu", &fisherprec::cpu::lowrank_combine, py::arg("y"), py::arg("numels"),
        py::arg("dtype"), py::arg("x"), py::arg("x_dtype"), py::arg("window"), py::arg("window_dtype"),
        py::arg("stride"), py::arg("columns"), py::arg("coef"), py::arg("decay"), py::arg("threads"), nogil);
#if defined(FISHERPREC_WITH_CUDA)
  m.def("lowrank_workspace_doubles", &fisherprec::cuda::lowrank_workspace_doubles, py::arg("numels"),
        py::arg("nout"));
  m.def(
      "lowrank_dots_cuda",
      [](uintptr_t window, int window_dtype, int64_t stride, int64_t columns, int64_t slot, const Ptrs& ptrs,
         const Sizes& numels, int dtype, uintptr_t out, uintptr_t workspace, uintptr_t stream) {
        check_cuda(fisherprec::cuda::lowrank_dots(window, window_dtype, stride, columns, slot, ptrs, numels,
                                                  dtype, out, workspace, stream),
                   "lowrank_dots");
      },
      py::arg("window"), py::arg("window_dtype"), py::arg("stride"), py::arg("columns"), py::arg("slot"),
      py::arg("ptrs"), py::arg("numels"), py::arg("dtype"), py::arg("out"), py::arg("workspace"),
      py::arg("stream"), nogil);
  m.def(
      "lowrank_stats_cuda",
      [](const Ptrs& grads, const Sizes& numels, int dtype, const Ptrs& mom, const Ptrs& v, uintptr_t window,
         int window_dtype, int64_t stride, int64_t columns, int64_t slot, float beta1, float beta2,
         float inv_c2_root, float eps, bool maximize, uintptr_t out, uintptr_t workspace, uintptr_t stream) {
        check_cuda(fisherprec::cuda::lowrank_stats(grads, numels, dtype, mom, v, window, window_dtype, stride,
                                                   columns, slot, beta1, beta2, inv_c2_root, eps, maximize,
                                                   out, workspace, stream),
                   "lowrank_stats");
      },
      py::arg("grads"), py::arg("numels"), py::arg("dtype"), py::arg("m"), py::arg("v"), py::arg("window"),
      py::arg("window_dtype"), py::arg("stride"), py::arg("columns"), py::arg("slot"), py::arg("beta1"),
      py::arg("beta2"), py::arg("inv_c2_root"), py::arg("eps"), py::arg("maximize"), py::arg("out"),
      py::arg("workspace"), py::arg("stream"), nogil);
  m.def(
      "lowrank_combine_cuda",
      [](const Ptrs& y, const Sizes& numels, int dtype, const Ptrs& x, int x_dtype, uintptr_t window,
         int window_dtype, int64_t stride, int64_t columns, uintptr_t coef, double decay, uintptr_t stream) {
        check_cuda(fisherprec::cuda::lowrank_combine(y, numels, dtype, x, x_dtype, window, window_dtype, stride,
                                                     columns, coef, decay, stream),
                   "lowrank_combine");
      },
      py::arg("y"), py::arg("numels"), py::arg("dtype"), py::arg("x"), py::arg("x_dtype"), py::arg("window"),
      py::arg("window_dtype"), py::arg("stride"), py::arg("columns"), py::arg("coef"), py::arg("decay"),
      py::arg("stream"), nogil);
#endif
}
