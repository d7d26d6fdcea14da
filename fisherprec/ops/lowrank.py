"""The window G of the low-rank Fisher is one (r, P) buffer per param group:
row j is a past gradient, and the group's tensors are consecutive segments
of the flat vector of length P (math: csrc/include/fisherprec/lowrank.h)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fisherprec import _C
from fisherprec.ops._native import FLOATING_DTYPES, data_ptrs, dtype_code, native_op, numels, run
from fisherprec.ops.checks import (
    check_betas,
    check_no_overlap,
    check_tensor,
    check_tensor_list,
)

LOWRANK_WINDOW_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16)
LOWRANK_MAX_RANK = 256  # must match csrc/include/fisherprec/lowrank.h:kLowrankMaxRank
__all__ = [
    "LOWRANK_MAX_RANK",
    "LOWRANK_WINDOW_DTYPES",
    "lowrank_combine",
    "lowrank_dots",
    "lowrank_insert",
    "lowrank_stats",
]


def _check_window(window: object, columns: object, tensors: object, name: str = "tensors"):
    window = check_tensor("window", window, dtypes=LOWRANK_WINDOW_DTYPES, ndim=2)
    if window.shape[0] > LOWRANK_MAX_RANK:
        raise ValueError(
            f"window has {window.shape[0]} rows; at most {LOWRANK_MAX_RANK} are supported"
        )
    if isinstance(columns, bool) or not isinstance(columns, int):
        raise TypeError(f"columns must be an int, got {type(columns).__name__}")
    if not 0 <= columns <= window.shape[0]:
        raise ValueError(f"columns={columns} is outside [0, {window.shape[0]}] (the window's rows)")
    tensors = check_tensor_list(name, tensors, dtypes=FLOATING_DTYPES)
    if tensors[0].device != window.device:
        raise RuntimeError(f"{name}[0] is on {tensors[0].device} but window is on {window.device}")
    total = sum(t.numel() for t in tensors)
    if total != window.shape[1]:
        raise ValueError(
            f"{name} hold {total} elements in all but the window has {window.shape[1]} columns per row"
        )
    return window, tensors


def _check_slot(slot: object, columns: int) -> int:
    if isinstance(slot, bool) or not isinstance(slot, int):
        raise TypeError(f"slot must be an int, got {type(slot).__name__}")
    if not 0 <= slot < columns:
        raise ValueError(f"slot={slot} is outside [0, columns={columns})")
    return slot


def _lowrank_workspace(
    tensors: list[torch.Tensor], nout: int, keep: list[torch.Tensor]
) -> tuple[int]:
    """float64 scratch of the CUDA reductions (kept alive in `keep` until queued)."""
    size = _C.lowrank_workspace_doubles(numels(tensors), nout)
    keep.append(torch.empty(max(size, 1), dtype=torch.float64, device=tensors[0].device))
    return (keep[-1].data_ptr(),)


@native_op("lowrank_dots", mutates_args=("window", "out"))
def _lowrank_dots(
    window: torch.Tensor, columns: int, slot: int, tensors: list[torch.Tensor], out: torch.Tensor
) -> None:
    keep: list[torch.Tensor] = []
    run(
        "lowrank_dots",
        window.device,
        window.data_ptr(),
        dtype_code(window.dtype),
        window.shape[1],
        columns,
        slot,
        data_ptrs(tensors),
        numels(tensors),
        dtype_code(tensors[0].dtype),
        out.data_ptr(),
        cuda_extra=lambda: _lowrank_workspace(tensors, columns, keep),
    )


@native_op("lowrank_stats", mutates_args=("exp_avg", "exp_avg_sq", "window", "out"))
def _lowrank_stats(
    grads: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    window: torch.Tensor,
    columns: int,
    slot: int,
    beta1: float,
    beta2: float,
    inv_c2_root: float,
    eps: float,
    maximize: bool,
    out: torch.Tensor,
) -> None:
    keep: list[torch.Tensor] = []
    run(
        "lowrank_stats",
        window.device,
        data_ptrs(grads),
        numels(grads),
        dtype_code(grads[0].dtype),
        data_ptrs(exp_avg),
        data_ptrs(exp_avg_sq),
        window.data_ptr(),
        dtype_code(window.dtype),
        window.shape[1],
        columns,
        slot,
        beta1,
        beta2,
        inv_c2_root,
        eps,
        maximize,
        out.data_ptr(),
        cuda_extra=lambda: _lowrank_workspace(grads, 2 * columns + 2, keep),
    )


@native_op("lowrank_combine", mutates_args=("out",))
def _lowrank_combine(
    out: list[torch.Tensor],
    x: list[torch.Tensor],
    window: torch.Tensor,
    columns: int,
    coef: torch.Tensor,
    decay: float,
) -> None:
    run(
        "lowrank_combine",
        window.device,
        data_ptrs(out),
        numels(out),
        dtype_code(out[0].dtype),
        data_ptrs(x),
        dtype_code(x[0].dtype),
        window.data_ptr(),
        dtype_code(window.dtype),
        window.shape[1],
        columns,
        coef.data_ptr(),
        decay,
    )


def lowrank_dots(
    window: torch.Tensor, columns: int, tensors: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Gᵀx: the inner products of the first `columns` rows of `window` with the
    flat vector formed by `tensors`, in one pass, accumulated in float64.

    Args:
        window: (r, P) contiguous float32, float64 or bfloat16 tensor, r ≤ 256.
        columns: how many leading rows take part (0 ≤ columns ≤ r).
        tensors: contiguous tensors of one floating dtype on window's device,
            P elements in all, in flat-vector order.

    Returns:
        A (columns,) float64 tensor. On the CPU it does not depend on the thread count.

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> G = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
        >>> ops.lowrank_dots(G, 2, [torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
        tensor([7., 5.], dtype=torch.float64)
    """
    window, tensors = _check_window(window, columns, tensors)
    out = torch.empty(columns, dtype=torch.float64, device=window.device)
    torch.ops.fisherprec.lowrank_dots(window, columns, -1, tensors, out)
    return out


def lowrank_insert(
    window: torch.Tensor, slot: int, columns: int, tensors: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Store the flat vector x (`tensors`) in row `slot` of `window` (rounded to
    its dtype) and return G[:columns] x̂ in the same pass: the new row of
    K = GᵀG, computed from the stored values (x̂ = the rounded x).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> G = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
        >>> ops.lowrank_insert(G, 1, 2, [torch.tensor([3.0, 4.0])])
        tensor([11., 25.], dtype=torch.float64)
        >>> G[1]
        tensor([3., 4.])
    """
    window, tensors = _check_window(window, columns, tensors)
    slot = _check_slot(slot, columns)
    check_no_overlap({"window": [window], "tensors": tensors}, read_only=("tensors",))
    out = torch.empty(columns, dtype=torch.float64, device=window.device)
    torch.ops.fisherprec.lowrank_dots(window, columns, slot, tensors, out)
    return out


def lowrank_stats(
    grads: Sequence[torch.Tensor],
    exp_avg: Sequence[torch.Tensor],
    exp_avg_sq: Sequence[torch.Tensor],
    window: torch.Tensor,
    columns: int,
    slot: int | None,
    *,
    beta1: float,
    beta2: float,
    bias_correction2: float = 1.0,
    eps: float = 1e-8,
    maximize: bool = False,
) -> torch.Tensor:
    """The first pass of a LowRankFisher step, over every tensor of a group.

    Per element (g = ±grad): m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g²
    (the Adam moments of diag.h; `exp_avg_sq` may be empty: no v); with a
    `slot`, g is stored in that row of `window` first. Returns a float64
    tensor ``[Gᵀĝ (columns), Gᵀm (columns), Σ m², Σ (m / (√(v/c2) + ε))²]``
    with G = window[:columns] and c2 = `bias_correction2` (the last entry is 0
    without `exp_avg_sq`).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> G = torch.zeros(2, 3)
        >>> m = [torch.zeros(3)]
        >>> ops.lowrank_stats([torch.tensor([1.0, 2.0, 2.0])], m, [], G, 1, 0, beta1=0.5, beta2=0.9)
        tensor([9.0000, 4.5000, 2.2500, 0.0000], dtype=torch.float64)
    """
    window, grads = _check_window(window, columns, grads, "grads")
    exp_avg = check_tensor_list(
        "exp_avg", exp_avg, dtypes=(torch.float32,), like=grads, like_name="grads"
    )
    exp_avg_sq = list(exp_avg_sq)
    if exp_avg_sq:
        exp_avg_sq = check_tensor_list(
            "exp_avg_sq", exp_avg_sq, dtypes=(torch.float32,), like=grads, like_name="grads"
        )
    beta1, beta2 = check_betas(beta1, beta2)
    if not 0.0 < bias_correction2 <= 1.0:
        raise ValueError(f"Invalid bias_correction2 value: {bias_correction2}")
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"Invalid eps value: {eps}")
    slot_code = -1 if slot is None else _check_slot(slot, columns)
    check_no_overlap(
        {"grads": grads, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "window": [window]},
        read_only=("grads",),
    )
    out = torch.empty(2 * columns + 2, dtype=torch.float64, device=window.device)
    torch.ops.fisherprec.lowrank_stats(
        grads,
        exp_avg,
        exp_avg_sq,
        window,
        columns,
        slot_code,
        float(beta1),
        float(beta2),
        1.0 / math.sqrt(bias_correction2),
        float(eps),
        bool(maximize),
        out,
    )
    return out


def lowrank_combine(
    out: Sequence[torch.Tensor],
    x: Sequence[torch.Tensor],
    window: torch.Tensor,
    columns: int,
    coef: torch.Tensor,
    decay: float = 1.0,
) -> None:
    """In place, over every tensor of a group: y ← decay·y + coef[0]·x + G coef[1:]
    with G = window[:columns] (one pass, float64 arithmetic, one rounding to
    y's dtype). ``decay=0`` does not read y. The second pass of a LowRankFisher
    step (y = θ, x = m) and of ``LowRank.inv_root_mv``.

    Args:
        out: the tensors y (any floating dtype), P elements in all.
        x: float32 or float64 tensors shaped like `out`.
        coef: (columns + 1,) float64 tensor on the window's device (read by the
            kernel: no host synchronisation).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> y = [torch.ones(2)]
        >>> G = torch.tensor([[1.0, 2.0]])
        >>> ops.lowrank_combine(y, [torch.ones(2)], G, 1, torch.tensor([0.5, 2.0], dtype=torch.float64), 3.0)
        >>> y[0]
        tensor([5.5000, 7.5000])
    """
    window, out = _check_window(window, columns, out, "out")
    x = check_tensor_list("x", x, dtypes=(torch.float32, torch.float64), like=out, like_name="out")
    check_tensor("coef", coef, dtypes=(torch.float64,), device=window.device, shape=(columns + 1,))
    if not math.isfinite(decay):
        raise ValueError(f"Invalid decay value: {decay}")
    check_no_overlap(
        {"out": out, "x": x, "window": [window], "coef": [coef]},
        read_only=("x", "window", "coef"),
    )
    torch.ops.fisherprec.lowrank_combine(out, x, window, columns, coef, float(decay))
