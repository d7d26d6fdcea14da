// Bindings of the batched symmetric eigensolver: _C.symmetric_eigh_cpu(...,
// threads) and, in a CUDA build, _C.symmetric_eigh_cuda(..., workspace, stream)
// (fisherprec/ops/eigh.py marshals them).
#include "bindings/bindings.h"
#include "cpu/eigh.h"
#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/eigh.h"
#endif

using namespace fisherprec::bindings;  // check_cuda

FISHERPREC_BINDINGS(eigh) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("symmetric_eigh_cpu", &fisherprec::cpu::symmetric_eigh, py::arg("matrices"),
        py::arg("eigenvalues"), py::arg("eigenvectors"), py::arg("status"), py::arg("count"),
        py::arg("n"), py::arg("dtype"), py::arg("threads"), nogil);
#if defined(FISHERPREC_WITH_CUDA)
  m.def(
      "symmetric_eigh_cuda",
      [](uintptr_t matrices, uintptr_t eigenvalues, uintptr_t eigenvectors, uintptr_t status,
         int64_t count, int64_t n, int dtype, uintptr_t workspace, uintptr_t stream) {
        check_cuda(fisherprec::cuda::symmetric_eigh(matrices, eigenvalues, eigenvectors, status, count,
                                                    n, dtype, workspace, stream),
                   "symmetric_eigh");
      },
      py::arg("matrices"), py::arg("eigenvalues"), py::arg("eigenvectors"), py::arg("status"),
      py::arg("count"), py::arg("n"), py::arg("dtype"), py::arg("workspace"), py::arg("stream"), nogil);
#endif
}
