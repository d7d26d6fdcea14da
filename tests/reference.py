"""Float64 dense references for every kernel. One function per formula, in
THEORY.md's notation, written for clarity, never for speed."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sum_of_squares(tensors: Sequence[torch.Tensor]) -> float:
    """Σ_t Σ_i x_{t,i}²."""
    return float(sum(t.to(torch.float64).square().sum() for t in tensors))


def empirical_fisher(grads: torch.Tensor, beta: float | None = None) -> torch.Tensor:
    """F from a sequence of updates. `grads` is a list of (B_k, P) batches, one per
    update call: the mean of g gᵀ over all rows (beta=None), or the
    bias-corrected EMA of the per-call means of g gᵀ."""
    batches = [g.to(torch.float64).reshape(-1, g.shape[-1]) for g in grads]
    if beta is None:
        rows = torch.cat(batches)
        return rows.T @ rows / rows.shape[0]
    state = torch.zeros(batches[0].shape[1], batches[0].shape[1], dtype=torch.float64)
    for b in batches:
        state = beta * state + (1 - beta) * (b.T @ b) / b.shape[0]
    return state / (1 - beta ** len(batches))


def block_diagonal(matrix: torch.Tensor, block_sizes: Sequence[int]) -> torch.Tensor:
    """The block-diagonal part of `matrix` for consecutive blocks of the given sizes."""
    out = torch.zeros_like(matrix)
    start = 0
    for size in block_sizes:
        out[start : start + size, start : start + size] = matrix[
            start : start + size, start : start + size
        ]
        start += size
    return out


def inv_root(matrix: torch.Tensor, damping: float, power: float = 0.5) -> torch.Tensor:
    """(M + λI)^(-power) for symmetric PSD M, by eigh in float64 (eigenvalues clamped at 0)."""
    m = matrix.to(torch.float64)
    eigvals, eigvecs = torch.linalg.eigh((m + m.T) / 2)
    return (eigvecs * (eigvals.clamp_min(0) + damping).pow(-power)) @ eigvecs.T


def window_fisher(grads: Sequence[torch.Tensor], rank: int, decay: float = 1.0) -> torch.Tensor:
    """The low-rank window F = Σ_j σ_j² g_j g_jᵀ / Σ_j σ_j² over the last
    k = min(N, rank) observations (rows of the updates, in order), σ_j =
    decay^(age), age 0 for the newest; decay = 1 is the mean (1/k) Σ g gᵀ."""
    rows = torch.cat([g.to(torch.float64).reshape(-1, g.shape[-1]) for g in grads])[-rank:]
    weights = torch.tensor(
        [decay ** (len(rows) - 1 - i) for i in range(len(rows))], dtype=torch.float64
    )
    weighted = rows * weights[:, None]
    return weighted.T @ weighted / weights.square().sum()


def lowrank_fisher_steps(
    theta: torch.Tensor,
    grads: Sequence[torch.Tensor],
    *,
    lr: float,
    rank: int,
    betas: tuple[float, float],
    damping: float,
    update_every: int = 1,
    graft: bool = True,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    decay: float = 1.0,
    rcond: float = 1e-6,
    maximize: bool = False,
) -> torch.Tensor:
    """LowRankFisher on a flat θ, through a dense P×P eigendecomposition of
    F = Σ σ² g gᵀ / Σ σ²: retained eigenvalues μ > rcond·max μ get
    (μ + λ)^(-1/2), everything else α = (μ_min retained + λ)^(-1/2);
    D = that operator applied to m̂; graft γ = ‖m̂/(√v̂+ε)‖ / ‖D‖;
    θ ← θ(1 − lr·wd) − lr·γ·D. One gradient per step in `grads`."""
    theta = theta.to(torch.float64).clone()
    beta1, beta2 = betas
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    window: list[torch.Tensor] = []
    for t, g in enumerate(grads, start=1):
        g = g.to(torch.float64) * (-1.0 if maximize else 1.0)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        if (t - 1) % update_every == 0:
            window = ([*window, g])[-rank:]
        weights = torch.tensor(
            [decay ** (len(window) - 1 - i) for i in range(len(window))], dtype=torch.float64
        )
        rows = torch.stack(window) * weights[:, None]
        fisher = rows.T @ rows / weights.square().sum()
        mu, q = torch.linalg.eigh(fisher)
        retained = mu > rcond * mu.max()
        alpha = (mu[retained].min() + damping) ** -0.5 if retained.any() else damping**-0.5
        scale = torch.where(retained, (mu.clamp_min(0) + damping) ** -0.5, alpha)
        m_hat = m / (1 - beta1**t)
        direction = q @ (scale * (q.T @ m_hat))
        gamma = 1.0
        if graft:
            adam = m_hat / ((v / (1 - beta2**t)).sqrt() + eps)
            gamma = float(adam.norm() / direction.norm())
        theta = theta * (1 - lr * weight_decay) - lr * gamma * direction
    return theta
