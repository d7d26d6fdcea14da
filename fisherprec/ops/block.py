"""Block-diagonal Fisher (csrc/include/fisherprec/block.h). A tensor of n
elements is cut into ceil(n/b) blocks of b contiguous elements (the last one
may be shorter); its statistic and its root are (ceil(n/b), b, b) arrays
whose slot k holds block k in its leading corner."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fisherprec.ops._native import FLOATING_DTYPES, data_ptrs, dtype_code, native_op, numels, run
from fisherprec.ops.checks import (
    check_betas,
    check_no_overlap,
    check_real,
    check_tensor_list,
)

BLOCK_STATE_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
MAX_BLOCK_SIZE = 256
# Must match csrc/include/fisherprec/block.h:BlockRootStatus.
ROOT_OK, ROOT_NONFINITE_INPUT, ROOT_NO_CONVERGENCE, ROOT_NONFINITE_OUTPUT, ROOT_NONE = range(5)
__all__ = [
    "BLOCK_STATE_DTYPES",
    "MAX_BLOCK_SIZE",
    "ROOT_NONE",
    "ROOT_NONFINITE_INPUT",
    "ROOT_NONFINITE_OUTPUT",
    "ROOT_NO_CONVERGENCE",
    "ROOT_OK",
    "block_fisher_step_",
    "block_inv_root_",
    "block_outer_update_",
    "block_shape",
]


def block_shape(numel: int, block_size: int) -> tuple[int, int, int]:
    """Shape of the statistic (and root) of a tensor with `numel` elements."""
    return (-(-numel // block_size), block_size, block_size)


def check_block_size(block_size: object) -> int:
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, int)
        or not 1 <= block_size <= MAX_BLOCK_SIZE
    ):
        raise ValueError(
            f"Invalid block_size value: {block_size!r} (an int in [1, {MAX_BLOCK_SIZE}])"
        )
    return block_size


def _check_blocked(
    name: str,
    tensors: object,
    numels_: Sequence[int],
    block_size: int,
    device: torch.device,
    *,
    dtypes: Sequence[torch.dtype],
    per_block: bool = False,
) -> list[torch.Tensor]:
    """A list of (ceil(n/b), b, b) arrays (or (ceil(n/b),) vectors when per_block)."""
    tensors = check_tensor_list(name, tensors, dtypes=dtypes)
    if len(tensors) != len(numels_):
        raise ValueError(f"{name} has {len(tensors)} tensors, expected {len(numels_)}")
    for i, (t, n) in enumerate(zip(tensors, numels_, strict=True)):
        shape = block_shape(n, block_size)
        want = shape[:1] if per_block else shape
        if tuple(t.shape) != want:
            raise ValueError(
                f"{name}[{i}] has shape {tuple(t.shape)}, expected {want} for {n} elements "
                f"in blocks of {block_size}"
            )
        if t.device != device:
            raise RuntimeError(f"{name}[{i}] is on {t.device}, expected {device}")
    return tensors


@native_op("block_outer_update", mutates_args=("states",))
def _block_outer_update(
    states: list[torch.Tensor],
    rows: list[torch.Tensor],
    block_size: int,
    old_weight: float,
    new_weight: float,
) -> None:
    run(
        "block_outer_update",
        states[0].device,
        data_ptrs(states),
        data_ptrs(rows),
        [r.shape[1] for r in rows],
        rows[0].shape[0],
        block_size,
        old_weight,
        new_weight,
        dtype_code(states[0].dtype),
        dtype_code(rows[0].dtype),
    )


@native_op("block_inv_root", mutates_args=("roots", "status"))
def _block_inv_root(
    states: list[torch.Tensor],
    roots: list[torch.Tensor],
    status: list[torch.Tensor],
    numels: list[int],
    block_size: int,
    scale: float,
    damping: float,
    power: float,
) -> None:
    device = states[0].device
    keep: list[torch.Tensor] = []

    def workspace() -> tuple[int, int]:  # float64 scratch for as many blocks as fit 256 MiB
        per_block = block_size * block_size + 6 * block_size  # block_root_workspace(b)
        most = max(block_shape(n, block_size)[0] for n in numels)
        blocks = max(1, min(most, (256 << 20) // (8 * per_block)))
        keep.append(torch.empty(blocks * per_block, dtype=torch.float64, device=device))
        return keep[0].data_ptr(), blocks

    run(
        "block_inv_root",
        device,
        data_ptrs(states),
        data_ptrs(roots),
        data_ptrs(status),
        numels,
        block_size,
        scale,
        damping,
        power,
        dtype_code(states[0].dtype),
        cuda_extra=workspace,
    )


@native_op("block_fisher_step", mutates_args=("params", "exp_avgs", "exp_avg_sqs"))
def _block_fisher_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    roots: list[torch.Tensor],
    status: list[torch.Tensor],
    block_size: int,
    beta1: float,
    beta2: float,
    step_size: float,
    inv_c2_root: float,
    eps: float,
    decay: float,
    maximize: bool,
    graft: bool,
) -> None:
    run(
        "block_fisher_step",
        params[0].device,
        data_ptrs(params),
        data_ptrs(grads),
        data_ptrs(exp_avgs),
        data_ptrs(exp_avg_sqs),
        data_ptrs(roots),
        data_ptrs(status),
        numels(params),
        block_size,
        beta1,
        beta2,
        step_size,
        inv_c2_root,
        eps,
        decay,
        maximize,
        graft,
        dtype_code(params[0].dtype),
    )


def block_outer_update_(
    states: Sequence[torch.Tensor],
    rows: Sequence[torch.Tensor],
    block_size: int,
    old_weight: float,
    new_weight: float,
) -> None:
    """In place, per block of every tensor: F ← old_weight·F + new_weight·Σ_r g_r g_rᵀ.

    One pass over the rows; F stays exactly symmetric.

    Args:
        states: per tensor a (ceil(n/b), b, b) float32 or float64 statistic
            (see :func:`block_shape`), all of one dtype.
        rows: per tensor a (B, n) matrix of B observations (per-sample
            gradients; B = 1 for a minibatch gradient), any floating dtype,
            the same B for all tensors.
        block_size: b, in [1, 256].

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> F = torch.zeros(ops.block_shape(3, 2))
        >>> ops.block_outer_update_([F], [torch.tensor([[1.0, 2.0, 3.0]])], 2, 0.0, 1.0)
        >>> F[0], F[1, :1, :1]
        (tensor([[1., 2.],
                [2., 4.]]), tensor([[9.]]))
    """
    block_size = check_block_size(block_size)
    rows = check_tensor_list("rows", rows, dtypes=FLOATING_DTYPES, same_dtype=True)
    for i, r in enumerate(rows):
        if r.dim() != 2:
            raise ValueError(f"rows[{i}] must be a (B, n) matrix, got shape {tuple(r.shape)}")
        if r.shape[0] != rows[0].shape[0]:
            raise ValueError(f"rows[{i}] has {r.shape[0]} rows but rows[0] has {rows[0].shape[0]}")
    states = _check_blocked(
        "states",
        states,
        [r.shape[1] for r in rows],
        block_size,
        rows[0].device,
        dtypes=BLOCK_STATE_DTYPES,
    )
    old_weight = check_real("old_weight", old_weight)
    new_weight = check_real("new_weight", new_weight)
    check_no_overlap({"states": states, "rows": rows}, read_only=("rows",))
    torch.ops.fisherprec.block_outer_update(states, rows, block_size, old_weight, new_weight)


def block_inv_root_(
    states: Sequence[torch.Tensor],
    roots: Sequence[torch.Tensor],
    status: Sequence[torch.Tensor],
    numels: Sequence[int],
    block_size: int,
    *,
    scale: float = 1.0,
    damping: float,
    power: float = 0.5,
) -> None:
    """In place, per block: R = (scale·F + damping·I)^(-power), eigenvalues of
    scale·F at or below its rounding noise (√b·ε·λ_max, ε of the storage dtype)
    set to 0 first, so that a singular block without damping fails (and falls
    back) instead of returning amplified noise.

    A native batched symmetric eigensolver (Householder + implicit QL, in
    float64 whatever the storage dtype) runs on every block. ``status[t][k]``
    receives the outcome of block k of tensor t: ``ROOT_OK`` (0),
    ``ROOT_NONFINITE_INPUT`` (the block holds NaN/Inf), ``ROOT_NO_CONVERGENCE``
    or ``ROOT_NONFINITE_OUTPUT`` (e.g. damping 0 on a singular block); the root
    of a failed block is filled with NaN. Padding outside a tail block is zero.

    Args:
        states: per tensor a (ceil(n/b), b, b) symmetric statistic, float32 or float64.
        roots: like `states` (same dtype), overwritten.
        status: per tensor an int32 (ceil(n/b),) vector, overwritten.
        numels: n per tensor (the true length; the last block has n − (nb−1)·b).
        block_size: b, in [1, 256].

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> F = torch.tensor([[[4.0, 0.0], [0.0, 16.0]]])
        >>> R, status = torch.empty_like(F), torch.empty(1, dtype=torch.int32)
        >>> ops.block_inv_root_([F], [R], [status], [2], 2, damping=0.0)
        >>> R[0], status
        (tensor([[0.5000, 0.0000],
                [0.0000, 0.2500]]), tensor([0], dtype=torch.int32))
    """
    block_size = check_block_size(block_size)
    numels = [int(n) for n in numels]
    if any(n < 0 for n in numels):
        raise ValueError(f"Invalid numels: {numels}")
    states = check_tensor_list("states", states, dtypes=BLOCK_STATE_DTYPES)
    device = states[0].device
    states = _check_blocked("states", states, numels, block_size, device, dtypes=BLOCK_STATE_DTYPES)
    roots = _check_blocked("roots", roots, numels, block_size, device, dtypes=(states[0].dtype,))
    status = _check_blocked(
        "status", status, numels, block_size, device, dtypes=(torch.int32,), per_block=True
    )
    scale = check_real("scale", scale, positive=True)
    damping = check_real("damping", damping, nonnegative=True)
    power = check_real("power", power, positive=True)
    check_no_overlap({"states": states, "roots": roots, "status": status}, read_only=("states",))
    torch.ops.fisherprec.block_inv_root(
        states, roots, status, numels, block_size, scale, damping, power
    )


def block_fisher_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    roots: Sequence[torch.Tensor],
    status: Sequence[torch.Tensor],
    *,
    block_size: int,
    beta1: float,
    beta2: float,
    step_size: float,
    inv_c2_root: float,
    eps: float,
    decay: float,
    maximize: bool = False,
    graft: bool = True,
) -> None:
    """The fused BlockFisher step, in place on params, exp_avgs (m) and exp_avg_sqs (v).

    Per block: m, v ← the Adam EMAs of g (diag.h); the Adam direction
    a = m / (sqrt(v)·inv_c2_root + eps); where status is ROOT_OK,
    u = R m (times ‖a‖/‖R m‖ when `graft`), else u = a (the diagonal
    fallback); θ ← θ·decay − step_size·u. The caller folds the bias
    corrections in: step_size = lr/(1−β1^t), inv_c2_root = (1−β2^t)^(-1/2),
    and R = (F/(1−β2^t) + λI)^(-p), so R m·step_size = lr·R m̂.

    Args:
        params, grads: one floating dtype; exp_avgs, exp_avg_sqs: float32 like params;
        roots: float32 (ceil(n/b), b, b) per param; status: int32 (ceil(n/b),) per param.
    """
    block_size = check_block_size(block_size)
    params = check_tensor_list("params", params, dtypes=FLOATING_DTYPES)
    grads = check_tensor_list(
        "grads", grads, dtypes=(params[0].dtype,), like=params, like_name="params"
    )
    exp_avgs = check_tensor_list(
        "exp_avgs", exp_avgs, dtypes=(torch.float32,), like=params, like_name="params"
    )
    exp_avg_sqs = check_tensor_list(
        "exp_avg_sqs", exp_avg_sqs, dtypes=(torch.float32,), like=params, like_name="params"
    )
    sizes = numels(params)
    device = params[0].device
    roots = _check_blocked("roots", roots, sizes, block_size, device, dtypes=(torch.float32,))
    status = _check_blocked(
        "status", status, sizes, block_size, device, dtypes=(torch.int32,), per_block=True
    )
    beta1, beta2 = check_betas(beta1, beta2)
    scalars = {
        "beta1": beta1,
        "beta2": beta2,
        "step_size": check_real("step_size", step_size),
        "inv_c2_root": check_real("inv_c2_root", inv_c2_root, positive=True),
        "eps": check_real("eps", eps, nonnegative=True),
        "decay": check_real("decay", decay),
    }
    check_no_overlap(
        {
            "params": params,
            "grads": grads,
            "exp_avgs": exp_avgs,
            "exp_avg_sqs": exp_avg_sqs,
            "roots": roots,
            "status": status,
        },
        read_only=("grads", "roots", "status"),
    )
    torch.ops.fisherprec.block_fisher_step(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        roots,
        status,
        block_size,
        scalars["beta1"],
        scalars["beta2"],
        scalars["step_size"],
        scalars["inv_c2_root"],
        scalars["eps"],
        scalars["decay"],
        bool(maximize),
        bool(graft),
    )
