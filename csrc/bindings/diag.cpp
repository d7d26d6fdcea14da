// Bindings of the diag kernels: _C.<kernel>_cpu(..., threads) and, in a CUDA
// build, _C.<kernel>_cuda(..., stream), with the same leading arguments
// (fisherprec/ops/diag.py marshals them; fisherprec/ops/_native.py:run calls them).
#include "bindings/bindings.h"
#include "cpu/diag.h"
#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/diag.h"
#endif

using namespace fisherprec::bindings;  // Ptrs, Sizes, check_cuda

FISHERPREC_BINDINGS(diag) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("diag_step_cpu", &fisherprec::cpu::diag_step, py::arg("params"), py::arg("grads"),
        py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("numels"), py::arg("dtype"), py::arg("lr"),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("step"),
        py::arg("power"), py::arg("bias_correction"), py::arg("maximize"), py::arg("threads"), nogil);
  m.def("diag_fisher_update_cpu", &fisherprec::cpu::diag_fisher_update, py::arg("grads"), py::arg("batch"),
        py::arg("numel"), py::arg("grad_dtype"), py::arg("state"), py::arg("state_dtype"),
        py::arg("old_weight"), py::arg("new_weight"), py::arg("threads"), nogil);
#if defined(FISHERPREC_WITH_CUDA)
  m.def(
      "diag_step_cuda",
      [](const Ptrs& params, const Ptrs& grads, const Ptrs& exp_avgs, const Ptrs& exp_avg_sqs,
         const Sizes& numels, int dtype, double lr, double beta1, double beta2, double eps,
         double weight_decay, double step, double power, bool bias_correction, bool maximize,
         uintptr_t stream) {
        check_cuda(fisherprec::cuda::diag_step(params, grads, exp_avgs, exp_avg_sqs, numels, dtype, lr, beta1,
                                               beta2, eps, weight_decay, step, power, bias_correction,
                                               maximize, stream),
                   "diag_step");
      },
      py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("numels"),
      py::arg("dtype"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
      py::arg("weight_decay"), py::arg("step"), py::arg("power"), py::arg("bias_correction"),
      py::arg("maximize"), py::arg("stream"), nogil);
  m.def(
      "diag_fisher_update_cuda",
      [](uintptr_t grads, int64_t batch, int64_t numel, int grad_dtype, uintptr_t state, int state_dtype,
         double old_weight, double new_weight, uintptr_t stream) {
        check_cuda(fisherprec::cuda::diag_fisher_update(grads, batch, numel, grad_dtype, state, state_dtype,
                                                        old_weight, new_weight, stream),
                   "diag_fisher_update");
      },
      py::arg("grads"), py::arg("batch"), py::arg("numel"), py::arg("grad_dtype"), py::arg("state"),
      py::arg("state_dtype"), py::arg("old_weight"), py::arg("new_weight"), py::arg("stream"), nogil);
#endif
}
