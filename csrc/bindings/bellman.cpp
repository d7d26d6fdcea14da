// Bindings of the bellman kernels: _C.<kernel>_cpu(..., threads) and, in a CUDA
// build, _C.<kernel>_cuda(..., stream), with the same leading arguments
// (fisherprec/ops/bellman.py marshals them; fisherprec/ops/_native.py:run calls them).
#include "bindings/bindings.h"
#include "cpu/bellman.h"
#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/bellman.h"
#endif

using namespace fisherprec::bindings;  // Ptrs, Sizes, check_cuda

FISHERPREC_BINDINGS(bellman) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("bellman_backup_cpu", &fisherprec::cpu::bellman_backup, py::arg("indptr"), py::arg("indices"),
        py::arg("index_dtype"), py::arg("values"), py::arg("reward"), py::arg("v"), py::arg("gamma"),
        py::arg("policy_in"), py::arg("num_states"), py::arg("num_actions"), py::arg("dtype"), py::arg("v_out"),
        py::arg("policy_out"), py::arg("q_out"), py::arg("threads"), nogil);
#if defined(FISHERPREC_WITH_CUDA)
  m.def(
      "bellman_backup_cuda",
      [](uintptr_t indptr, uintptr_t indices, int index_dtype, uintptr_t values, uintptr_t reward, uintptr_t v,
         double gamma, uintptr_t policy_in, int64_t num_states, int64_t num_actions, int dtype, uintptr_t v_out,
         uintptr_t policy_out, uintptr_t q_out, uintptr_t stream) {
        check_cuda(fisherprec::cuda::bellman_backup(indptr, indices, index_dtype, values, reward, v, gamma,
                                                    policy_in, num_states, num_actions, dtype, v_out, policy_out,
                                                    q_out, stream),
                   "bellman_backup");
      },
      py::arg("indptr"), py::arg("indices"), py::arg("index_dtype"), py::arg("values"), py::arg("reward"),
      py::arg("v"), py::arg("gamma"), py::arg("policy_in"), py::arg("num_states"), py::arg("num_actions"),
      py::arg("dtype"), py::arg("v_out"), py::arg("policy_out"), py::arg("q_out"), py::arg("stream"), nogil);
#endif
}
