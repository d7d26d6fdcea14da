// Bindings of the lowrank kernels: _C.<kernel>_cpu(..., threads) and, in a CUDA
// build, _C.<kernel>_cuda(..., stream), with the same leading arguments
// (fisherprec/ops/lowrank.py marshals them; fisherprec/ops/_native.py:run calls them).
#include "bindings/bindings.h"
#include "cpu/lowrank.h"
#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/lowrank.h"
#endif

using namespace fisherprec::bindings;  // Ptrs, Sizes, check_cuda

FISHERPREC_BINDINGS(lowrank) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
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
