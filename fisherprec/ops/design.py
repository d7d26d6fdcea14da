"""One scoring step of sequential A-optimal selection in one native pass (the
per-candidate math in csrc/include/fisherprec/design.h, the algorithm around it
in fisherprec.design)."""

from __future__ import annotations

import torch

from fisherprec import _C
from fisherprec.ops._native import FLOATING_DTYPES, dtype_code, native_op, run
from fisherprec.ops.checks import check_no_overlap, check_real, check_tensor

__all__ = ["design_score_step"]


@native_op("design_score_step", mutates_args=("s", "t", "out"))
def _design_score_step(
    pool: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    beta: float,
    gamma: float,
    eta: float,
    s: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    out: torch.Tensor,
) -> None:
    n, p = pool.shape

    def workspace() -> tuple[int]:  # the CUDA kernel's per-block partial maxima
        blocks = _C.design_workspace_blocks()
        work = torch.empty(2 * blocks, dtype=torch.float64, device=pool.device)
        keep.append(work)  # alive until the launch has been queued
        return (work.data_ptr(),)

    keep: list[torch.Tensor] = []
    run(
        "design_score_step",
        pool.device,
        pool.data_ptr(),
        n,
        p,
        dtype_code(pool.dtype),
        b.data_ptr(),
        c.data_ptr(),
        beta,
        gamma,
        eta,
        s.data_ptr(),
        t.data_ptr(),
        mask.data_ptr(),
        out.data_ptr(),
        cuda_extra=workspace,
    )


def design_score_step(
    pool: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    beta: float,
    gamma: float,
    eta: float,
    s: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """One scoring step of sequential A-optimal design, in one native pass over `pool`.

    For every row x_i of `pool` whose `mask` entry is False, with u_i = x_iᵀb and
    v_i = x_iᵀc (skipped when beta == 0):

    .. math::
        s_i \\leftarrow s_i - \\beta u_i^2, \\qquad
        t_i \\leftarrow t_i - 2\\beta u_i v_i + \\beta^2 \\gamma u_i^2, \\qquad
        \\Delta_i = t_i / (1 + \\eta s_i)

    (the Sherman–Morrison update of s_i = x_iᵀBx_i and t_i = x_iᵀBMBx_i after
    B ← B − β b bᵀ, with c = BMb, γ = bᵀMb; see csrc/include/fisherprec/design.h),
    then writes out = [max Δ_i, argmax i] (ties: lowest index; [-inf, -1] when every
    row is masked or the pool is empty). O(N·p) work.

    Args:
        pool: (N, p) float32/float64/bfloat16/float16 candidates, contiguous.
        b, c: (p,) float64.
        beta, gamma, eta: finite floats.
        s, t: (N,) float64, updated in place.
        mask: (N,) bool, True for rows to skip (their s, t are left as they are).
        out: (2,) float64, overwritten.

    Returns:
        `out`.

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> pool = torch.eye(3)
        >>> s, t = torch.ones(3, dtype=torch.float64), torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
        >>> z = torch.zeros(3, dtype=torch.float64)
        >>> out = torch.empty(2, dtype=torch.float64)
        >>> ops.design_score_step(pool, z, z, 0.0, 0.0, 1.0, s, t, torch.zeros(3, dtype=torch.bool), out)
        tensor([1.5000, 1.0000], dtype=torch.float64)
    """
    pool = check_tensor("pool", pool, dtypes=FLOATING_DTYPES, ndim=2)
    n, p = pool.shape
    device = pool.device
    f64 = (torch.float64,)
    check_tensor("b", b, dtypes=f64, device=device, shape=(p,))
    check_tensor("c", c, dtypes=f64, device=device, shape=(p,))
    check_tensor("s", s, dtypes=f64, device=device, shape=(n,))
    check_tensor("t", t, dtypes=f64, device=device, shape=(n,))
    check_tensor("mask", mask, dtypes=(torch.bool,), device=device, shape=(n,))
    check_tensor("out", out, dtypes=f64, device=device, shape=(2,))
    beta = check_real("beta", beta)
    gamma = check_real("gamma", gamma)
    eta = check_real("eta", eta)
    check_no_overlap(
        {"s": [s], "t": [t], "out": [out], "pool": [pool], "b": [b], "c": [c], "mask": [mask]},
        read_only=("pool", "b", "c", "mask"),
    )
    torch.ops.fisherprec.design_score_step(pool, b, c, beta, gamma, eta, s, t, mask, out)
    return out
