// Bindings of the design kernels: _C.<kernel>_cpu(..., threads) and, in a CUDA
// build, _C.<kernel>_cuda(..., stream), with the same leading arguments
// (fisherprec/ops/design.py marshals them; fisherprec/ops/_native.py:run calls them).
#include "bindings/bindings.h"
#include "cpu/design.h"
#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/design.h"
#endif

using namespace fisherprec::bindings;  // Ptrs, Sizes, check_cuda

FISHERPREC_BINDINGS(design) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("design_score_step_cpu", &fisherprec::cpu::design_score_step, py::arg("pool"), py::arg("n"),
        py::arg("p"), py::arg("dtype"), py::arg("b"), py::arg("c"), py::arg("beta"), py::arg("gamma"),
        py::arg("eta"), py::arg("s"), py::arg("t"), py::arg("mask"), py::arg("out"), py::arg("threads"),
        nogil);
#if defined(FISHERPREC_WITH_CUDA)
  m.def("design_workspace_blocks", &fisherprec::cuda::design_workspace_blocks);
  m.def(
      "design_score_step_cuda",
      [](uintptr_t pool, int64_t n, int64_t p, int dtype, uintptr_t b, uintptr_t c, double beta, double gamma,
         double eta, uintptr_t s, uintptr_t t, uintptr_t mask, uintptr_t out, uintptr_t workspace,
         uintptr_t stream) {
        check_cuda(fisherprec::cuda::design_score_step(pool, n, p, dtype, b, c, beta, gamma, eta, s, t, mask,
                                                       out, workspace, stream),
                   "design_score_step");
      },
      py::arg("pool"), py::arg("n"), py::arg("p"), py::arg("dtype"), py::arg("b"), py::arg("c"),
      py::arg("beta"), py::arg("gamma"), py::arg("eta"), py::arg("s"), py::arg("t"), py::arg("mask"),
      py::arg("out"), py::arg("workspace"), py::arg("stream"), nogil);
#endif
}
