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


def block_sizes(num_params: int, block_size: int) -> list[int]:
    """Lengths of the contiguous blocks of a flat vector (the last may be shorter)."""
    return [min(block_size, num_params - start) for start in range(0, num_params, block_size)]


def block_outer_update(
    state: torch.Tensor, rows: torch.Tensor, block_size: int, old_weight: float, new_weight: float
) -> torch.Tensor:
    """Per block k of the flat vector: F_k ← old·F_k + new·Σ_r g_{r,k} g_{r,k}ᵀ, in the
    (ceil(n/b), b, b) storage whose slot k holds block k in its leading corner."""
    out = state.to(torch.float64) * old_weight
    g = rows.to(torch.float64)
    for k, size in enumerate(block_sizes(g.shape[1], block_size)):
        gk = g[:, k * block_size : k * block_size + size]
        out[k, :size, :size] += new_weight * (gk.T @ gk)
    return out


def block_fisher_steps(
    params: Sequence[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    *,
    lr: float,
    block_size: int,
    betas: tuple[float, float],
    damping: float,
    update_every: int,
    graft: str | None,
    weight_decay: float = 0.0,
    power: float = 0.5,
    eps: float = 1e-8,
    maximize: bool = False,
) -> list[torch.Tensor]:
    """BlockFisher in float64: `grads[t][i]` is the gradient of params[i] at step t+1.

    Per tensor, per block b of the flat tensor: m, v the Adam EMAs; F_b the EMA of
    g_b g_bᵀ; R_b = (F_b/c2 + λI)^(-p) by eigh every `update_every` steps (None
    before the first and when not finite); u_b = R_b m̂_b grafted to ‖a_b‖, a the
    Adam direction m̂/(sqrt(v̂)+ε), or u_b = a_b without a root;
    θ ← θ(1 − lr·wd) − lr·u."""
    beta1, beta2 = betas
    theta = [p.to(torch.float64).flatten().clone() for p in params]
    m = [torch.zeros_like(x) for x in theta]
    v = [torch.zeros_like(x) for x in theta]
    sizes = [block_sizes(x.numel(), block_size) for x in theta]
    fisher = [[torch.zeros(s, s, dtype=torch.float64) for s in ss] for ss in sizes]
    roots: list[list[torch.Tensor | None]] = [[None] * len(ss) for ss in sizes]
    for t, step_grads in enumerate(grads, start=1):
        c1, c2 = 1 - beta1**t, 1 - beta2**t
        for i, grad in enumerate(step_grads):
            g = grad.to(torch.float64).flatten() * (-1.0 if maximize else 1.0)
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            adam = (m[i] / c1) / ((v[i] / c2).sqrt() + eps)
            u = torch.empty_like(g)
            for k, s in enumerate(sizes[i]):
                sl = slice(k * block_size, k * block_size + s)
                fisher[i][k] = beta2 * fisher[i][k] + (1 - beta2) * torch.outer(g[sl], g[sl])
                if t % update_every == 0:
                    r = inv_root(fisher[i][k] / c2, damping, power)
                    roots[i][k] = r if torch.isfinite(r).all() else None
                r = roots[i][k]
                if r is None:
                    u[sl] = adam[sl]
                    continue
                ub = r @ (m[i][sl] / c1)
                if graft == "diag":
                    norm = ub.norm()
                    ub = ub * (adam[sl].norm() / norm) if norm > 0 else torch.zeros_like(ub)
                u[sl] = ub
            theta[i] = theta[i] * (1 - lr * weight_decay) - lr * u
    return [x.reshape(p.shape) for x, p in zip(theta, params, strict=True)]
