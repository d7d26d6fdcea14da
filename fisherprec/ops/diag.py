"""The diagonal Fisher family (csrc/include/fisherprec/diag.h): the fused
AdamW-order step over a (device, dtype) bucket and the per-sample diagonal
Fisher update. Both mutate their outputs and return None."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fisherprec.ops._native import FLOATING_DTYPES, data_ptrs, dtype_code, native_op, numels, run
from fisherprec.ops.checks import check_betas, check_no_overlap, check_tensor, check_tensor_list

DIAG_PARAM_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
DIAG_STATE_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
__all__ = ["DIAG_PARAM_DTYPES", "DIAG_STATE_DTYPES", "diag_fisher_update_", "diag_step_"]


def _diag_step_native(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: float,
    power: float,
    bias_correction: bool,
    maximize: bool,
) -> None:
    run(
        "diag_step",
        params[0].device,
        data_ptrs(params),
        data_ptrs(grads),
        data_ptrs(exp_avgs),
        data_ptrs(exp_avg_sqs),
        numels(params),
        dtype_code(params[0].dtype),
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        float(step),
        float(power),
        bool(bias_correction),
        bool(maximize),
    )


native_op("diag_step", mutates_args=("params", "exp_avgs", "exp_avg_sqs"))(_diag_step_native)


@native_op("diag_step_counted", mutates_args=("params", "exp_avgs", "exp_avg_sqs"))
def _diag_step_counted(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: torch.Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    power: float,
    bias_correction: bool,
    maximize: bool,
) -> None:
    """``diag_step`` with the step count of tensor i read from the CPU tensor
    ``steps[i]`` inside the op: torch.compile traces one opaque call, with no
    host read in the graph (DiagFisher's compiled step; internal, its caller
    validated the buffers)."""
    buckets: dict[float, list[int]] = {}
    for i, step in enumerate(steps.tolist()):
        buckets.setdefault(step, []).append(i)
    for step, idx in buckets.items():
        _diag_step_native(
            [params[i] for i in idx],
            [grads[i] for i in idx],
            [exp_avgs[i] for i in idx],
            [exp_avg_sqs[i] for i in idx],
            lr, beta1, beta2, eps, weight_decay, step, power, bias_correction, maximize,
        )  # fmt: skip


def _check_diag_hyperparameters(
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: float,
    power: float,
) -> None:
    for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"Invalid {name} value: {value}")
    check_betas(beta1, beta2)
    if not (math.isfinite(step) and step >= 1.0):
        raise ValueError(f"Invalid step value: {step} (the step count after increment, >= 1)")
    if not (math.isfinite(power) and power > 0.0):
        raise ValueError(f"Invalid power value: {power} (must be finite and > 0)")


def check_diag_step_args(
    params: object, grads: object, exp_avgs: object, exp_avg_sqs: object
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Validate the buffers of one fused diagonal step (see ``diag_step_``)."""
    params = check_tensor_list("params", params, dtypes=DIAG_PARAM_DTYPES)
    grads = check_tensor_list(
        "grads", grads, dtypes=DIAG_PARAM_DTYPES, like=params, like_name="params"
    )
    if grads[0].dtype != params[0].dtype:
        raise TypeError(
            f"grads have dtype {grads[0].dtype} but params have {params[0].dtype}; they must match"
        )
    exp_avgs = check_tensor_list(
        "exp_avgs", exp_avgs, dtypes=(torch.float32,), like=params, like_name="params"
    )
    exp_avg_sqs = check_tensor_list(
        "exp_avg_sqs", exp_avg_sqs, dtypes=(torch.float32,), like=params, like_name="params"
    )
    # A grad sharing memory with a written buffer would be read after it is
    # overwritten; grads may share memory with each other (they are only read).
    check_no_overlap(
        {"params": params, "grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs},
        read_only=("grads",),
    )
    return params, grads, exp_avgs, exp_avg_sqs


def diag_step_unchecked_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: float,
    power: float,
    bias_correction: bool,
    maximize: bool,
) -> None:
    """``diag_step_`` without validation, for callers that built the buffers
    themselves (``DiagFisher`` validates its state when it creates or loads it).

    In eager mode it calls the kernel directly and bumps the version counters
    of the written tensors, as an in-place op would: the custom-op dispatcher
    costs about 1 µs per tensor, 20% of a step over 200 small tensors. Under
    ``torch.compile`` it goes through ``torch.ops.fisherprec.diag_step``.
    """
    args = (lr, beta1, beta2, eps, weight_decay, step, power, bias_correction, maximize)
    if torch.compiler.is_compiling() or params[0].device.type == "meta":
        torch.ops.fisherprec.diag_step(params, grads, exp_avgs, exp_avg_sqs, *args)
        return
    _diag_step_native(params, grads, exp_avgs, exp_avg_sqs, *args)
    torch.autograd.graph.increment_version([*params, *exp_avgs, *exp_avg_sqs])


def diag_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    step: float,
    power: float = 0.5,
    bias_correction: bool = True,
    maximize: bool = False,
) -> None:
    """One fused diagonal-Fisher (AdamW) step over many tensors, in place.

    For every element, in torch.optim.AdamW's order (docs/theory.md, "The learning Lagrangian and F^(-p) updates")::

        g = -grad if maximize else grad
        m = lerp(m, g, 1 - beta1)                  # exp_avgs
        v = beta2 * v + (1 - beta2) * g * g        # exp_avg_sqs
        c1, c2 = 1 - beta1**step, 1 - beta2**step  # 1, 1 without bias_correction
        param = param * (1 - lr * weight_decay) - (lr / c1) * m / (v**power / c2**power + eps)

    One native call and one pass over memory for the whole list; the
    coefficients are computed once, in double, on the host.

    Args:
        params: contiguous float32, bfloat16 or float16 tensors on one device
            (updated in place).
        grads: their gradients: same shapes and dtype.
        exp_avgs, exp_avg_sqs: float32 first and second moments, same shapes
            (updated in place).
        step: the step count *after* this step's increment (1 on the first step).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> p, g = torch.ones(3), torch.full((3,), 0.5)
        >>> m, v = torch.zeros(3), torch.zeros(3)
        >>> ops.diag_step_([p], [g], [m], [v], lr=0.1, step=1)
        >>> p
        tensor([0.9000, 0.9000, 0.9000])
    """
    lists = check_diag_step_args(params, grads, exp_avgs, exp_avg_sqs)
    _check_diag_hyperparameters(lr, beta1, beta2, eps, weight_decay, step, power)
    diag_step_unchecked_(
        *lists,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        step=step,
        power=power,
        bias_correction=bias_correction,
        maximize=maximize,
    )


def _diag_fisher_native(
    state: torch.Tensor, grads: torch.Tensor, old_weight: float, new_weight: float
) -> None:
    batch, numel = grads.shape
    run(
        "diag_fisher_update",
        state.device,
        grads.data_ptr(),
        batch,
        numel,
        dtype_code(grads.dtype),
        state.data_ptr(),
        dtype_code(state.dtype),
        float(old_weight),
        float(new_weight),
    )


native_op("diag_fisher_update", mutates_args=("state",))(_diag_fisher_native)


def diag_fisher_update_(
    state: torch.Tensor, grads: torch.Tensor, *, old_weight: float, new_weight: float
) -> None:
    """Per-sample diagonal Fisher update, in place, in one pass::

        state ← old_weight · state + new_weight · Σ_i grads[i] ⊙ grads[i]

    ``grads`` is (B, P) per-sample gradients or one (P,) gradient, of any
    floating dtype; ``state`` is a (P,) float32 or float64 tensor on the same
    device. Squares are summed in float64, row by row (deterministic). With
    (old_weight, new_weight) = (n/(n+B), 1/(n+B)) it keeps a running mean; with
    (β, (1−β)/B) an EMA of batch means (see fisherprec/fisher/_base.py).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> state = torch.zeros(2, dtype=torch.float64)
        >>> ops.diag_fisher_update_(state, torch.tensor([[1.0, 2.0], [3.0, 0.0]]),
        ...                         old_weight=0.0, new_weight=0.5)
        >>> state
        tensor([5., 2.], dtype=torch.float64)
    """
    state = check_tensor("state", state, dtypes=DIAG_STATE_DTYPES, ndim=1)
    grads = check_tensor("grads", grads, dtypes=FLOATING_DTYPES, device=state.device, ndim=(1, 2))
    if grads.shape[-1] != state.shape[0]:
        raise ValueError(
            f"grads has {grads.shape[-1]} columns but state has {state.shape[0]} entries"
        )
    for name, value in (("old_weight", old_weight), ("new_weight", new_weight)):
        if not math.isfinite(value):
            raise ValueError(f"Invalid {name} value: {value}")
    if not torch.compiler.is_compiling() and state.device.type != "meta":
        check_no_overlap({"state": [state], "grads": [grads]}, read_only=("grads",))
    batch = grads.reshape(-1, state.shape[0])
    if torch.compiler.is_compiling() or state.device.type == "meta":
        torch.ops.fisherprec.diag_fisher_update(state, batch, old_weight, new_weight)
    else:  # direct call: see diag_step_unchecked_
        _diag_fisher_native(state, batch, old_weight, new_weight)
        torch.autograd.graph.increment_version([state])
