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


def diag_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: float,
    power: float = 0.5,
    bias_correction: bool = True,
    maximize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoupled-decay Adam step (THEORY.md §5, diag) in float64, from the
    given (possibly rounded) inputs: returns (param, exp_avg, exp_avg_sq)."""
    p, g, m, v = (t.to(torch.float64) for t in (param, grad, exp_avg, exp_avg_sq))
    g = -g if maximize else g
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    c1 = 1 - beta1**step if bias_correction else 1.0
    c2 = 1 - beta2**step if bias_correction else 1.0
    p = p * (1 - lr * weight_decay) - lr * (m / c1) / ((v / c2) ** power + eps)
    return p, m, v


def diag_fisher(
    state: torch.Tensor, grads: torch.Tensor, old_weight: float, new_weight: float
) -> torch.Tensor:
    """old_weight · state + new_weight · Σ_i g_i ⊙ g_i over the rows of `grads`."""
    g = grads.to(torch.float64).reshape(-1, state.shape[0])
    return old_weight * state.to(torch.float64) + new_weight * g.square().sum(0)


def diag_of(matrix: torch.Tensor) -> torch.Tensor:
    """The diagonal part of a square matrix, as a matrix."""
    return torch.diag(torch.diagonal(matrix))
