r"""Continuous A-optimal design weights on a pool by Frank–Wolfe
(:func:`frank_wolfe`), with exact line search and the Kiefer–Wolfowitz
equivalence gap as a certificate of optimality (φ(w) − φ* ≤ gap).

The continuous relaxation of :func:`greedy`'s problem: it reuses the same
native scoring step (η = 0) and quadratic forms, and its ``lower_bound``
says how far any design on the pool, greedy's included, is from optimal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fisherprec import ops
from fisherprec.design._common import (
    _CHUNK_ROWS,
    _check_int,
    _check_pool,
    _check_real,
    _inverse_if_invertible,
    _quadratic_forms,
    _second_moment,
    _trace_with,
)


@dataclass(frozen=True)
class FrankWolfeResult:
    """Result of :func:`frank_wolfe`.

    Attributes:
        weights: (N,) float64 design weights on the simplex.
        objective: φ(w) = tr(A(w)⁻¹ M) of the returned weights, A(w) = Σ w_i x_i x_iᵀ.
        gap: the equivalence-theorem certificate max_i x_iᵀA⁻¹MA⁻¹x_i − φ(w) ≥ 0;
            φ(w) − φ* ≤ gap, and gap = 0 iff w is A-optimal.
        objectives, gaps: (iterations + 1,) float64 histories (before each step).
    """

    weights: torch.Tensor
    objective: float
    gap: float
    objectives: torch.Tensor
    gaps: torch.Tensor

    @property
    def lower_bound(self) -> float:
        """φ(w) − gap ≤ φ*: no design on this pool does better."""
        return self.objective - self.gap

    def error(self, n: int, sigma2: float = 1.0) -> float:
        """ε ≈ σ²(1 + φ/n) of n observations spread as the weights say (exact when n·w is integral)."""
        return sigma2 * (1.0 + self.objective / _check_int("n", n, 1))


def _line_search(phi: float, d: float, s: float, iters: int = 100) -> float:
    """argmin over α ∈ [0, 1) of φ((1−α)w + α e_j) = (φD − αd)/((1−α)D), D = 1 + α(s − 1),
    where d = x_jᵀA⁻¹MA⁻¹x_j and s = x_jᵀA⁻¹x_j (Sherman–Morrison). Convex in α:
    golden-section search."""

    def f(alpha: float) -> float:
        denom = 1.0 + alpha * (s - 1.0)
        return (phi * denom - alpha * d) / ((1.0 - alpha) * denom)

    lo, hi = 0.0, 1.0 - 1e-12
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    alpha = (lo + hi) / 2.0
    return alpha if f(alpha) < phi else 0.0


def frank_wolfe(
    pool: torch.Tensor,
    iters: int,
    *,
    second_moment: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    tol: float = 0.0,
    refresh_every: int = 50,
) -> FrankWolfeResult:
    """Continuous A-optimal design weights on a pool, by Frank–Wolfe with exact line search.

    Minimises φ(w) = tr(A(w)⁻¹ M), A(w) = Σ_i w_i x_i x_iᵀ, over the simplex.
    The gradient is ∂φ/∂w_i = −d_i with d_i = x_iᵀA⁻¹MA⁻¹x_i and Σ w_i d_i = φ,
    so the Frank–Wolfe duality gap is max_i d_i − φ: by the Kiefer–Wolfowitz
    equivalence theorem it is ≥ 0, zero exactly at the A-optimal design, and
    bounds the suboptimality, φ(w) − φ* ≤ gap. Each iteration moves weight to
    the vertex argmax d_i with the exact line-search step; A⁻¹ is kept by
    Sherman–Morrison and d_i by the same native O(N·p) step as :func:`greedy`
    (η = 0). Every ``refresh_every`` iterations A⁻¹ and every d_i are recomputed
    from the weights (O(N·p²)), which bounds rounding drift.

    Args:
        pool: (N, p) candidates spanning R^p.
        iters: number of Frank–Wolfe steps (≥ 0).
        second_moment: M, default I/p.
        weights: initial weights (N,), non-negative, summing to 1; default uniform.
        tol: stop early once gap ≤ tol·φ.
        refresh_every: recompute A⁻¹ and the d_i from the weights this often.

    Example:
        >>> import torch, fisherprec as fp
        >>> g = torch.Generator().manual_seed(0)
        >>> pool = torch.nn.functional.normalize(torch.randn(500, 4, generator=g), dim=1)
        >>> res = fp.design.frank_wolfe(pool, 200)
        >>> bool(res.gaps[-1] < res.gaps[0]), res.lower_bound <= res.objective
        (True, True)
    """
    pool, _ = _check_pool(pool)
    num, p = pool.shape
    iters = _check_int("iters", iters, 0)
    tol = _check_real("tol", tol, minimum=0.0)
    refresh_every = _check_int("refresh_every", refresh_every, 1)
    device = pool.device
    m = _second_moment(second_moment, p, device)
    if weights is None:
        w = torch.full((num,), 1.0 / num, dtype=torch.float64, device=device)
    else:
        w = ops.check_tensor("weights", weights, shape=(num,)).to(torch.float64).clone()
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights must be finite and non-negative")
        if abs(float(w.sum()) - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to 1, got {float(w.sum())}")

    def refresh() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        info = torch.zeros(p, p, dtype=torch.float64, device=device)
        for start in range(0, num, _CHUNK_ROWS):
            rows = pool[start : start + _CHUNK_ROWS].to(torch.float64)
            info += rows.T @ (rows * w[start : start + rows.shape[0], None])
        inverse = _inverse_if_invertible(info)
        if inverse is None:
            raise ValueError("the weighted pool does not span R^p: A(w) is singular, φ is infinite")
        s, t = _quadratic_forms(pool, inverse, m)
        return inverse, s, t

    # A⁻¹ = scale · B with B updated by Sherman–Morrison (the (1 − α) factors go to `scale`).
    b_mat, s, t = refresh()
    scale = 1.0
    mask = torch.zeros(num, dtype=torch.bool, device=device)
    out = torch.empty(2, dtype=torch.float64, device=device)
    zeros = torch.zeros(p, dtype=torch.float64, device=device)
    b, c, beta, gamma = zeros, zeros, 0.0, 0.0
    objectives: list[float] = []
    gaps: list[float] = []
    for it in range(iters + 1):
        ops.design_score_step(pool, b, c, beta, gamma, 0.0, s, t, mask, out)
        j = int(out[1])
        phi = scale * _trace_with(b_mat, m)
        gap = max(scale * scale * float(out[0]) - phi, 0.0)
        objectives.append(phi)
        gaps.append(gap)
        if it == iters or gap <= tol * phi:
            break
        alpha = _line_search(phi, scale * scale * float(t[j]), scale * float(s[j]))
        b, c, beta, gamma = zeros, zeros, 0.0, 0.0
        if alpha <= 0.0:
            continue
        w.mul_(1.0 - alpha)
        w[j] += alpha
        if (it + 1) % refresh_every == 0:
            b_mat, s, t = refresh()
            scale = 1.0
            continue
        # (1−α)A + α x xᵀ = (1−α)(A + κ x xᵀ), κ = α/(1−α); A⁻¹ = scale·B.
        kappa = alpha / (1.0 - alpha)
        x = pool[j].to(torch.float64)
        b = b_mat @ x
        beta = kappa * scale / (1.0 + kappa * scale * float(x @ b))
        mb = b / p if m is None else m @ b
        c = b_mat @ mb
        gamma = float(b @ mb)
        b_mat -= beta * torch.outer(b, b)
        scale /= 1.0 - alpha
    return FrankWolfeResult(
        weights=w.cpu(),
        objective=objectives[-1],
        gap=gaps[-1],
        objectives=torch.tensor(objectives, dtype=torch.float64),
        gaps=torch.tensor(gaps, dtype=torch.float64),
    )
