// The pybind11 module fisherprec._C. It links neither libtorch nor (when CUDA
// is built) the shared CUDA runtime: functions take raw data pointers as
// integers, sizes, dtype codes and a CUDA stream handle, as validated by
// fisherprec/ops.py. Every call releases the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "cpu/bellman.h"
#include "cpu/design.h"
#include "cpu/block.h"
#include "cpu/parallel.h"
#include "cpu/reduce.h"
#include "cpu/diag.h"
#include "cpu/lowrank.h"

#if defined(FISHERPREC_WITH_CUDA)
#include "cuda/bellman.h"
#include "cuda/design.h"
#include "cuda/block.h"
#include "cuda/reduce.h"
#include "cuda/diag.h"
#include "cuda/lowrank.h"
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

  // ---- bellman ----
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

  // ---- design ----
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

  // ---- diag ----
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

  // ---- block ----
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
