// Bindings of the block kernels: _C.<kernel>_cpu(..., threads) and, in a CUDA
// build, _C.<kernel>_cuda(..., stream), with the same leading arguments
// (fisherprec/ops/block.py marshals them; fisherprec/ops/_native.py:run calls them).
#include "bindings/bindings.h"
#include "cpu/block.h"
#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/block.h"
#endif

using namespace fisherprec::bindings;  // Ptrs, Sizes, check_cuda

FISHERPREC_BINDINGS(block) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("block_outer_update_cpu", &fisherprec::cpu::block_outer_update, py::arg("states"),
        py::arg("rows"), py::arg("numels"), py::arg("num_rows"), py::arg("block_size"),
        py::arg("w_old"), py::arg("w_new"), py::arg("state_dtype"), py::arg("row_dtype"),
        py::arg("threads"), nogil);
  m.def("block_inv_root_cpu", &fisherprec::cpu::block_inv_root, py::arg("states"), py::arg("roots"),
        py::arg("status"), py::arg("numels"), py::arg("block_size"), py::arg("scale"),
        py::arg("damping"), py::arg("power"), py::arg("state_dtype"), py::arg("threads"), nogil);
  m.def("block_fisher_step_cpu", &fisherprec::cpu::block_fisher_step, py::arg("params"),
        py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("roots"),
        py::arg("status"), py::arg("numels"), py::arg("block_size"), py::arg("beta1"),
        py::arg("beta2"), py::arg("step_size"), py::arg("inv_c2_root"), py::arg("eps"),
        py::arg("decay"), py::arg("maximize"), py::arg("graft"), py::arg("param_dtype"),
        py::arg("threads"), nogil);
#if defined(FISHERPREC_WITH_CUDA)
  m.def(
      "block_outer_update_cuda",
      [](const Ptrs& states, const Ptrs& rows, const Sizes& numels, int64_t num_rows,
         int64_t block_size, double w_old, double w_new, int state_dtype, int row_dtype,
         uintptr_t stream) {
        check_cuda(fisherprec::cuda::block_outer_update(states, rows, numels, num_rows, block_size,
                                                        w_old, w_new, state_dtype, row_dtype, stream),
                   "block_outer_update");
      },
      py::arg("states"), py::arg("rows"), py::arg("numels"), py::arg("num_rows"),
      py::arg("block_size"), py::arg("w_old"), py::arg("w_new"), py::arg("state_dtype"),
      py::arg("row_dtype"), py::arg("stream"), nogil);
  m.def(
      "block_inv_root_cuda",
      [](const Ptrs& states, const Ptrs& roots, const Ptrs& status, const Sizes& numels,
         int64_t block_size, double scale, double damping, double power, int state_dtype,
         uintptr_t workspace, int64_t workspace_blocks, uintptr_t stream) {
        check_cuda(fisherprec::cuda::block_inv_root(states, roots, status, numels, block_size, scale,
                                                    damping, power, state_dtype, workspace,
                                                    workspace_blocks, stream),
                   "block_inv_root");
      },
      py::arg("states"), py::arg("roots"), py::arg("status"), py::arg("numels"),
      py::arg("block_size"), py::arg("scale"), py::arg("damping"), py::arg("power"),
      py::arg("state_dtype"), py::arg("workspace"), py::arg("workspace_blocks"), py::arg("stream"),
      nogil);
  m.def(
      "block_fisher_step_cuda",
      [](const Ptrs& params, const Ptrs& grads, const Ptrs& exp_avgs, const Ptrs& exp_avg_sqs,
         const Ptrs& roots, const Ptrs& status, const Sizes& numels, int64_t block_size,
         double beta1, double beta2, double step_size, double inv_c2_root, double eps, double decay,
         bool maximize, bool graft, int param_dtype, uintptr_t stream) {
        check_cuda(fisherprec::cuda::block_fisher_step(params, grads, exp_avgs, exp_avg_sqs, roots,
                                                       status, numels, block_size, beta1, beta2,
                                                       step_size, inv_c2_root, eps, decay, maximize,
                                                       graft, param_dtype, stream),
                   "block_fisher_step");
      },
      py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
      py::arg("roots"), py::arg("status"), py::arg("numels"), py::arg("block_size"),
      py::arg("beta1"), py::arg("beta2"), py::arg("step_size"), py::arg("inv_c2_root"),
      py::arg("eps"), py::arg("decay"), py::arg("maximize"), py::arg("graft"),
      py::arg("param_dtype"), py::arg("stream"), nogil);
#endif
}
