r"""Sequential A-optimal selection from a pool (:func:`greedy`): each step adds
the row that most decreases tr((XᵀX)⁻¹ M), scored for all candidates at once
by the native Sherman–Morrison step (:func:`fisherprec.ops.design_score_step`).

``_greedy`` takes the scoring step as a parameter so that the benchmark
(:mod:`fisherprec.benchmarks.design`) can time the same algorithm with a torch
step in its place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fisherprec import ops
from fisherprec.design._closed_forms import t_sample
from fisherprec.design._common import (
    _check_int,
    _check_pool,
    _check_real,
    _inverse_if_invertible,
    _quadratic_forms,
    _second_moment,
    _trace_with,
)


def _row_sq_norms(x: torch.Tensor) -> torch.Tensor:
    """‖x_i‖² accumulated in float64, in one pass."""
    return torch.linalg.vector_norm(x, dim=1, dtype=torch.float64).square()


@dataclass(frozen=True)
class GreedyResult:
    """Result of :func:`greedy`.

    Attributes:
        indices: (n,) int64, distinct rows of the pool in the order chosen.
        errors: (n,) float64, ε after each choice (float64: exact inverse when
            the chosen rows first span R^p, Sherman–Morrison updates after); ``inf``
            while they do not yet span R^p.
        ridge: the absolute ridge λ used for scoring while XᵀX was singular.
    """

    indices: torch.Tensor
    errors: torch.Tensor
    ridge: float

    def t_sample(self, threshold: float) -> int | None:
        return t_sample(self.errors, threshold)


def greedy(
    pool: torch.Tensor,
    n: int,
    sigma2: float = 1.0,
    second_moment: torch.Tensor | None = None,
    *,
    ridge: float = 1e-6,
    rcond: float = 1e-10,
) -> GreedyResult:
    """Sequential A-optimal selection of n distinct rows of `pool`.

    Each step adds the candidate that most decreases tr(B M), B = (XᵀX)⁻¹, i.e.
    the one with the smallest ε after the step. With b = B x_k for the chosen
    x_k, Sherman–Morrison gives B' = B − b bᵀ/(1 + x_kᵀ b), and every candidate's
    s_i = x_iᵀBx_i and t_i = x_iᵀBMBx_i follow from two dot products, so a step
    is one native O(N·p) pass over the pool (:func:`fisherprec.ops.design_score_step`,
    OpenMP on the CPU, CUDA on the GPU) that also returns the best score Δ_i = t_i/(1+s_i).

    While XᵀX is singular (fewer than p independent points), scores use
    A = XᵀX + λI with λ = ``ridge`` × the mean squared row norm of the pool:
    every step then favours the candidate with the largest component outside the
    span of the chosen points. Once the chosen rows span R^p (λ_min(XᵀX) >
    ``rcond``·λ_max), B is recomputed as the exact (XᵀX)⁻¹ and every s_i, t_i
    once in O(N·p²); from then on the greedy is exact (λ = 0).

    Args:
        pool: (N, p) candidates (float32/float64/bfloat16/float16, CPU or CUDA).
        n: number of points to choose, 1 ≤ n ≤ N.
        sigma2: noise variance σ² (scales the reported errors only).
        second_moment: M = E[x xᵀ] of the test inputs, (p, p); default I/p.
        ridge: relative ridge while XᵀX is singular (> 0).
        rcond: relative eigenvalue below which XᵀX counts as singular.

    Returns:
        :class:`GreedyResult` with the chosen indices and ε after each choice.

    Example:
        >>> import torch, fisherprec as fp
        >>> g = torch.Generator().manual_seed(0)
        >>> pool = torch.nn.functional.normalize(torch.randn(1000, 8, generator=g), dim=1)
        >>> result = fp.design.greedy(pool, 16)
        >>> result.indices.unique().numel(), bool(result.errors[-1] < 1.6)
        (16, True)
    """
    return _greedy(pool, n, sigma2, second_moment, ridge, rcond, ops.design_score_step)


def _greedy(
    pool: torch.Tensor,
    n: int,
    sigma2: float,
    second_moment: torch.Tensor | None,
    ridge: float,
    rcond: float,
    score_step: Callable[..., torch.Tensor],
) -> GreedyResult:
    """:func:`greedy` with the scoring step as a parameter (the benchmark swaps in torch)."""
    pool, total = _check_pool(pool)
    # The choices are invariant under pool → pool/c while XᵀX scales by c⁻²:
    # select on a pool of unit scale (c a power of two, so dividing is exact)
    # so that neither XᵀX nor its inverse leaves float64 for a pool scaled
    # by 1e±200, and convert ε and λ back to the pool's own units.
    scale = _power_of_two_scale(pool)
    if scale != 1.0:
        pool = pool / scale
        total = float(ops.sum_of_squares([pool]))
    num, p = pool.shape
    n = _check_int("n", n, 1)
    if n > num:
        raise ValueError(f"Invalid n value: {n} (the pool has only {num} candidates)")
    sigma2 = _check_real("sigma2", sigma2, minimum=0.0)
    ridge = _check_real("ridge", ridge, minimum=0.0)
    if ridge == 0.0:
        raise ValueError("Invalid ridge value: 0.0 (must be > 0)")
    rcond = _check_real("rcond", rcond, minimum=0.0)
    device = pool.device
    m = _second_moment(second_moment, p, device)

    # Phase 1: ridge-regularised scoring, B = (XᵀX + λI)⁻¹ starting from I/λ.
    mean_sq = total / num
    lam = ridge * (mean_sq if 0 < mean_sq < math.inf else 1.0)
    b_mat = torch.eye(p, dtype=torch.float64, device=device) / lam
    if m is None:
        s = _row_sq_norms(pool) / lam
        t = s / (p * lam)
    else:
        s, t = _quadratic_forms(pool, b_mat, m)
    defined = False

    mask = torch.zeros(num, dtype=torch.bool, device=device)
    out = torch.empty(2, dtype=torch.float64, device=device)
    zeros = torch.zeros(p, dtype=torch.float64, device=device)
    b, c, beta, gamma = zeros, zeros, 0.0, 0.0
    gram = torch.zeros(p, p, dtype=torch.float64, device=device)
    indices = torch.empty(n, dtype=torch.int64)
    errors = torch.full((n,), math.inf, dtype=torch.float64)
    for k in range(n):
        score_step(pool, b, c, beta, gamma, 1.0, s, t, mask, out)
        index = int(out[1])
        if index < 0:  # cannot happen for n <= N with finite inputs
            raise RuntimeError("greedy: no candidate left to score")
        indices[k] = index
        mask[index] = True
        x = pool[index].to(torch.float64)
        gram += torch.outer(x, x)
        # Sherman–Morrison for the next step's pending update.
        b = b_mat @ x
        beta = 1.0 / (1.0 + float(x @ b))
        mb = b / p if m is None else m @ b  # M b
        c = b_mat @ mb  # B M b, with the B before this update
        gamma = float(b @ mb)
        b_mat -= beta * torch.outer(b, b)
        if not defined and k + 1 >= p:
            inverse = _inverse_if_invertible(gram, rcond)
            if inverse is not None:  # Phase 2: exact B = (XᵀX)⁻¹, λ = 0 from here on
                defined = True
                b_mat = inverse
                s, t = _quadratic_forms(pool, b_mat, m)
                b, c, beta, gamma = zeros, zeros, 0.0, 0.0
        if defined:  # B is exact at the switch, then kept by Sherman–Morrison (λ = 0)
            # tr(B M) of the original pool is tr(B' M)/c²; inf only if it
            # exceeds float64 itself.
            errors[k] = sigma2 * (1.0 + _trace_with(b_mat, m) / scale / scale)
    return GreedyResult(indices=indices, errors=errors, ridge=lam * scale * scale)


def _power_of_two_scale(pool: torch.Tensor) -> float:
    """2^⌊log2 max|x_ij|⌋ (1.0 for an all-zero pool)."""
    largest = float(pool.abs().amax())
    return 2.0 ** math.floor(math.log2(largest)) if largest > 0 else 1.0
