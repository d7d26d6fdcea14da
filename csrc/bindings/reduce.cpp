// Bindings of the reduce kernels: _C.<kernel>_cpu(..., threads) and, in a CUDA
// build, _C.<kernel>_cuda(..., stream), with the same leading arguments
// (fisherprec/ops/reduce.py marshals them; fisherprec/ops/_native.py:run calls them).
#include "bindings/bindings.h"
#include "cpu/reduce.h"
#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/reduce.h"
#endif

using namespace fisherprec::bindings;  // Ptrs, Sizes, check_cuda

FISHERPREC_BINDINGS(reduce) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
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
}
