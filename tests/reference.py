"""Float64 dense references for every kernel. One function per formula, in
docs/theory.md's notation, written for clarity, never for speed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


def bellman_backup(
    P: torch.Tensor,
    R: torch.Tensor,
    V: torch.Tensor,
    gamma: float,
    policy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q(s, a) = r(s, a) + γ Σ_{s'} P[a, s, s'] V(s'); V'(s) = max_a Q (or Q(s, π(s)));
    π'(s) = first argmax. P: dense (A, S, S); R: (S, A). All in float64."""
    P, R, V = P.double(), R.double(), V.double()
    q = R + gamma * torch.einsum("ast,t->sa", P, V)
    if policy is not None:
        return q.gather(1, policy.unsqueeze(1)).squeeze(1), policy.clone(), q
    best = q.max(dim=1).values
    first = (q == best.unsqueeze(1)).to(torch.int64).argmax(dim=1)
    return best, first, q


def mdp_optimal_values(
    P: np.ndarray, R: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(V*, a greedy optimal policy, Q*) of a finite MDP in plain numpy: value
    iteration until the iterates stop changing, then the greedy policy's value
    by an exact linear solve (I − γ P_π) V = r_π. P: (A, S, S) with rows that sum
    to ≤ 1 (the missing mass ends the episode); R: (S, A)."""
    S = P.shape[1]
    v = np.zeros(S)
    for _ in range(1_000_000):
        q = R + gamma * np.einsum("ast,t->sa", P, v)
        v_next = q.max(axis=1)
        done = np.max(np.abs(v_next - v)) <= 1e-15 * max(1.0, np.max(np.abs(v_next)))
        v = v_next
        if done:
            break
    policy = q.argmax(axis=1)
    p_pi = P[policy, np.arange(S), :]
    v_star = np.linalg.solve(np.eye(S) - gamma * p_pi, R[np.arange(S), policy])
    q_star = R + gamma * np.einsum("ast,t->sa", P, v_star)
    return v_star, policy, q_star


def toy_text_optimal_values(table: dict, num_states: int, gamma: float) -> np.ndarray:
    """V* of a gymnasium toy-text table P[s][a] = [(p, s', r, done), ...], straight
    from the table's outcome lists (no transition matrix):
    V(s) = max_a Σ_outcomes p (r + γ (1 − done) V(s')), iterated to the float64
    fixed point."""
    num_actions = len(table[0])
    width = max(len(table[s][a]) for s in range(num_states) for a in range(num_actions))
    shape = (num_states, num_actions, width)
    prob, reward, alive = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    nxt = np.zeros(shape, dtype=np.int64)
    for s in range(num_states):
        for a in range(num_actions):
            for k, (p, s_next, r, done) in enumerate(table[s][a]):
                prob[s, a, k], nxt[s, a, k], reward[s, a, k] = p, int(s_next), r
                alive[s, a, k] = 0.0 if done else 1.0
    v = np.zeros(num_states)
    for _ in range(1_000_000):
        v_next = np.sum(prob * (reward + gamma * alive * v[nxt]), axis=2).max(axis=1)
        change = np.max(np.abs(v_next - v))
        v = v_next
        if change <= 1e-15 * max(1.0, np.max(np.abs(v))):
            break
    return v


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
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """One Sherman–Morrison scoring step (docs/theory.md, "Fermat's principle and A-optimal design"): with u = X b, v = X c,
    s' = s − β u², t' = t − 2β u v + β² γ u², Δ = t'/(1 + η s'); masked rows keep
    s, t and are never the argmax. Returns (s', t', max Δ, argmax) (ties: lowest index)."""
    x = pool.to(torch.float64)
    s, t = s.clone(), t.clone()
    if beta != 0.0:
        u, v = x @ b, x @ c
        live = ~mask
        s[live] = (s - beta * u * u)[live]
        t[live] = (t - 2 * beta * u * v + beta * beta * gamma * u * u)[live]
    score = t / (1 + eta * s)
    score[mask] = -torch.inf
    if bool(mask.all()):
        return s, t, -float("inf"), -1
    best = float(score.max())
    return s, t, best, int(torch.nonzero(score == best)[0])


def greedy_a_optimal(
    pool: torch.Tensor, n: int, ridge: float, second_moment: torch.Tensor | None = None
) -> list[int]:
    """Sequential A-optimal selection by brute force: at each step the candidate
    minimising tr((XᵀX + λI)⁻¹ M) with X the chosen rows plus it, λ = `ridge` while
    XᵀX is singular and 0 afterwards."""
    x = pool.to(torch.float64)
    p = x.shape[1]
    m = torch.eye(p, dtype=torch.float64) / p if second_moment is None else second_moment
    gram = torch.zeros(p, p, dtype=torch.float64)
    chosen: list[int] = []
    for _ in range(n):
        eig = torch.linalg.eigvalsh(gram)
        lam = 0.0 if len(chosen) >= p and eig[0] > 1e-10 * eig[-1] else ridge
        base = gram + lam * torch.eye(p, dtype=torch.float64)
        scores = [
            float("inf")
            if i in chosen
            else float(torch.trace(torch.linalg.inv(base + torch.outer(x[i], x[i])) @ m))
            for i in range(x.shape[0])
        ]
        best = min(range(len(scores)), key=scores.__getitem__)
        chosen.append(best)
        gram += torch.outer(x[best], x[best])
    return chosen


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
    """One decoupled-decay Adam step (docs/theory.md, "The learning Lagrangian and F^(-p) updates") in float64, from the
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
    weight_decay: float = 1e-2,  # the optimizers' default (AdamW's)
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
    weight_decay: float = 1e-2,  # the optimizers' default (AdamW's)
    eps: float = 1e-8,
    decay: float = 1.0,
    rcond: float = 1e-3,
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


def kron_fisher(
    grads: Sequence[torch.Tensor],
    shape: Sequence[int],
    max_dim: int,
    beta: float | None = None,
) -> torch.Tensor:
    """The Kronecker-factored empirical Fisher from its definition, densely.

    The tensor of `shape` is the matrix (m, n): (1, n) for 1-D, (d0, rest) else.
    Each max_dim × max_dim tile (the last of a side shorter) of it has
    L = E[G Gᵀ], R = E[Gᵀ G] (mean over all rows of `grads`, or the
    bias-corrected EMA of per-call means, as `empirical_fisher`) and the block
    F = kron(L, R) / tr L over its entries' row-major indices in the tensor."""
    shape = tuple(shape)
    m = 1 if len(shape) <= 1 else shape[0]
    n = int(np.prod(shape)) // m
    p = m * n
    batches = [g.to(torch.float64).reshape(-1, m, n) for g in grads]
    dense = torch.zeros(p, p, dtype=torch.float64)
    flat_index = torch.arange(p).reshape(m, n)
    for r0 in range(0, m, max_dim):
        for c0 in range(0, n, max_dim):
            rows, cols = slice(r0, min(m, r0 + max_dim)), slice(c0, min(n, c0 + max_dim))
            tiles = [b[:, rows, cols] for b in batches]
            if beta is None:
                every = torch.cat(tiles)
                left = sum(t @ t.T for t in every) / every.shape[0]
                right = sum(t.T @ t for t in every) / every.shape[0]
            else:
                left = right = 0.0
                for tile in tiles:
                    left = beta * left + (1 - beta) * sum(t @ t.T for t in tile) / tile.shape[0]
                    right = beta * right + (1 - beta) * sum(t.T @ t for t in tile) / tile.shape[0]
                left = left / (1 - beta ** len(tiles))
                right = right / (1 - beta ** len(tiles))
            trace = float(torch.trace(left))
            if trace == 0:
                continue
            where = flat_index[rows, cols].reshape(-1)
            dense[where[:, None], where[None, :]] = torch.kron(left, right) / trace
    return dense
