r"""The finite-MDP solvers: :func:`value_iteration`, :func:`q_value_iteration`
and :func:`policy_iteration`, each a loop around the native Bellman backup
(:func:`fisherprec.ops.bellman_backup`) with MacQueen's bounds as the stopping
rule, so that ``tol`` bounds ‖V − V*‖∞.

They take (P, R, γ) or an :class:`MDP` and validate it once through
:mod:`fisherprec.bellman._mdp`; the shared argument and guarantee text of
their docstrings is filled in at the end of this module.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fisherprec.bellman._mdp import MDP, MDPSolution, _as_mdp, _FiniteMDP


def _solver_inputs(
    P: object, R: object, gamma: object, episodic: bool | None
) -> tuple[object, object, Any, bool]:
    """(P, R, gamma, episodic) from either call form: ``solver(P, R, gamma)`` or
    ``solver(mdp, gamma)``, where the MDP's second positional slot holds γ."""
    if isinstance(P, MDP):
        if R is not None:
            if getattr(R, "ndim", 0) != 0 or isinstance(R, (list, tuple)):  # an array, not γ
                raise TypeError(
                    "R is part of the MDP: call solver(mdp, gamma), not solver(mdp, R, gamma)"
                )
            if gamma is not None:
                raise TypeError(
                    "with an MDP the second argument is gamma: call solver(mdp, gamma, tol=...), "
                    "passing tol and max_iter by keyword"
                )
            gamma = R
        if gamma is None:
            raise TypeError("missing gamma: call solver(mdp, gamma)")
        return P.transitions, P.rewards, gamma, P.episodic if episodic is None else episodic
    if R is None:
        raise TypeError("missing R: call solver(P, R, gamma) or solver(mdp, gamma)")
    if gamma is None:
        raise TypeError("missing gamma: call solver(P, R, gamma)")
    return P, R, gamma, bool(episodic)


def _check_solver_args(gamma: float, tol: float, max_iter: int) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma < 1.0:
        raise ValueError(f"Invalid gamma value: {gamma} (need 0 <= gamma < 1)")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"Invalid tol value: {tol}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"Invalid max_iter value: {max_iter}")


def _macqueen(lo: float, hi: float, gamma: float, stochastic: bool) -> tuple[float, float]:
    """(shift, bound) from the range [lo, hi] of x_{k+1} − x_k: the fixed point
    lies in [x_{k+1} + c·lo, x_{k+1} + c·hi], c = γ/(1−γ), so x_{k+1} + shift
    with shift = c(lo + hi)/2 is within bound = c(hi − lo)/2 of it. With rows
    summing to less than 1 a constant is not carried through exactly, and the
    range must contain 0."""
    if not stochastic:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    c = gamma / (1.0 - gamma)
    return c * (lo + hi) / 2, c * (hi - lo) / 2


_GUARANTEE = """
    Stopping rule and guarantee: T is a γ-contraction in ‖·‖∞ and monotone, so
    with Δ = x_{k+1} − x_k ∈ [lo, hi] (x = V, or Q for Q iteration) the fixed
    point satisfies x_{k+1} + c·lo ≤ x* ≤ x_{k+1} + c·hi, c = γ/(1−γ)
    (MacQueen's bounds; for ``episodic`` rows that sum to less than 1 the
    range is first widened to contain 0). The solver stops at the first k with
    c·(hi − lo)/2 ≤ tol and returns the midpoint x_{k+1} + c·(lo + hi)/2, so
    **‖V − V*‖∞ ≤ tol** (and ‖Q − Q*‖∞ ≤ tol for Q iteration), up to
    floating-point round-off. Since hi − lo ≤ 2‖Δ‖∞, this is at the latest when
    the sup-norm residual ‖Δ‖∞ ≤ tol(1−γ)/γ. ``error_bound`` holds the bound at
    exit and ``converged`` whether it is ≤ tol."""

_ARGS = """
    Call it as ``solver(P, R, gamma, ...)`` or, with an :class:`MDP` (e.g. from
    :func:`from_gymnasium`), as ``solver(mdp, gamma, tol=..., ...)``.

    Args:
        P: an :class:`MDP`, or the transition probabilities P(s'|s, a): a dense (A, S, S) tensor or
            numpy array, a :class:`CSRTransitions`, a torch sparse CSR tensor of
            shape (A·S, S) (rows a·S + s) or (A, S, S) (batched), or a torch
            sparse COO tensor of shape (A, S, S). Entries ≥ 0; every row sums to 1
            (or to at most 1 with ``episodic=True``).
        R: rewards, (S, A) expected r(s, a) or (A, S, S) R(a, s, s').
        gamma: discount γ ∈ [0, 1).
        tol: target accuracy of V in ‖·‖∞ (see below).
        max_iter: most iterations.
        episodic: allow rows that sum to less than 1: the missing mass is the
            probability that the episode ends after (s, a), which earns its
            reward and no continuation value (a terminal state's rows are all
            zero, so V(s) = max_a r(s, a)). :func:`from_gymnasium` builds P so.
            None (default): ``P.episodic`` for an :class:`MDP`, else False.
        dtype: compute dtype, float64 (default) or float32."""


def value_iteration(
    P: object,
    R: object = None,
    gamma: float | None = None,
    tol: float = 1e-8,
    max_iter: int = 100_000,
    *,
    episodic: bool | None = None,
    dtype: torch.dtype = torch.float64,
) -> MDPSolution:
    r"""Solve a finite discounted MDP by value iteration on the native backup:
    V_{k+1}(s) = max_a [ r(s, a) + γ Σ_{s'} P(s'|s, a) V_k(s') ], from V_0 = 0.
    {args}
    {guarantee}

    Returns:
        An :class:`MDPSolution` (``Q`` is None); ``policy`` is greedy with
        respect to the last iterate before the returned values.

    Example:
        >>> import torch
        >>> from fisherprec.bellman import value_iteration
        >>> # 1 state, 2 actions paying 1 and 2 per step: V* = 2 / (1 − γ)
        >>> P = torch.ones(2, 1, 1, dtype=torch.float64)
        >>> R = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
        >>> sol = value_iteration(P, R, gamma=0.5)
        >>> sol.V, sol.policy
        (tensor([4.], dtype=torch.float64), tensor([1]))
    """
    P, R, gamma, episodic = _solver_inputs(P, R, gamma, episodic)
    _check_solver_args(gamma, tol, max_iter)
    mdp = _as_mdp(P, R, episodic, dtype)
    v = mdp.reward.new_zeros(mdp.num_states)
    residuals: list[float] = []
    bound, policy = math.inf, torch.zeros(mdp.num_states, dtype=torch.int64, device=v.device)
    for _ in range(max_iter):
        v_next, policy, _, lo, hi = mdp.backup(v, gamma)
        residuals.append(max(-lo, hi))
        shift, bound = _macqueen(lo, hi, gamma, mdp.stochastic)
        v = v_next
        if bound <= tol:
            v = v + shift
            break
    return MDPSolution(
        V=v,
        policy=policy,
        Q=None,
        iterations=len(residuals),
        residuals=residuals,
        error_bound=bound,
        converged=bound <= tol,
    )


def q_value_iteration(
    P: object,
    R: object = None,
    gamma: float | None = None,
    tol: float = 1e-8,
    max_iter: int = 100_000,
    *,
    episodic: bool | None = None,
    dtype: torch.dtype = torch.float64,
) -> MDPSolution:
    r"""Solve a finite discounted MDP by Q iteration on the native backup:
    Q_{k+1}(s, a) = r(s, a) + γ Σ_{s'} P(s'|s, a) max_{a'} Q_k(s', a'), from Q_0 = 0.
    {args}
    {guarantee}

    Returns:
        An :class:`MDPSolution` with ``Q`` (S, A), ``V = max_a Q`` and the
        greedy ``policy = argmax_a Q``.

    Example:
        >>> import torch
        >>> from fisherprec.bellman import q_value_iteration
        >>> P = torch.ones(2, 1, 1, dtype=torch.float64)
        >>> R = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
        >>> q_value_iteration(P, R, gamma=0.5).Q   # Q*(s, a) = r(s, a) + γ V*
        tensor([[3., 4.]], dtype=torch.float64)
    """
    P, R, gamma, episodic = _solver_inputs(P, R, gamma, episodic)
    _check_solver_args(gamma, tol, max_iter)
    mdp = _as_mdp(P, R, episodic, dtype)
    q = mdp.reward.new_zeros(mdp.num_states, mdp.num_actions)
    v = mdp.reward.new_zeros(mdp.num_states)  # max_a Q_k
    residuals: list[float] = []
    bound, policy = math.inf, torch.zeros(mdp.num_states, dtype=torch.int64, device=v.device)
    for _ in range(max_iter):
        v, policy, q_next, _, _ = mdp.backup(v, gamma, with_q=True)
        lo, hi = (q_next.double() - q.double()).aminmax()
        lo, hi = float(lo), float(hi)
        residuals.append(max(-lo, hi))
        shift, bound = _macqueen(lo, hi, gamma, mdp.stochastic)
        q = q_next
        if bound <= tol:
            q, v = q + shift, v + shift
            break
    return MDPSolution(
        V=v,
        policy=policy,
        Q=q,
        iterations=len(residuals),
        residuals=residuals,
        error_bound=bound,
        converged=bound <= tol,
    )


# Policy evaluation solves (I − γP_π)V = r_π densely up to this many states,
# and iterates the native backup with the policy fixed above it.
_DENSE_EVALUATION_MAX_STATES = 2048


def _evaluate(
    mdp: _FiniteMDP, policy: torch.Tensor, gamma: float, v: torch.Tensor, accuracy: float
) -> torch.Tensor:
    """V^π, exactly (dense solve) or to within ``accuracy`` in ‖·‖∞."""
    S = mdp.num_states
    device = mdp.reward.device
    states = torch.arange(S, device=device)
    if S <= _DENSE_EVALUATION_MAX_STATES:
        rows = states * mdp.num_actions + policy
        starts, counts = mdp.indptr[rows], mdp.indptr[rows + 1] - mdp.indptr[rows]
        owner = torch.repeat_interleave(states, counts)
        first = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        entries = (
            torch.repeat_interleave(starts, counts)
            + torch.arange(int(counts.sum()), device=device)
            - first
        )
        system = torch.eye(S, dtype=torch.float64, device=device)
        system.index_put_(
            (owner, mdp.indices[entries].long()),
            -gamma * mdp.values[entries].double(),
            accumulate=True,
        )
        r_pi = mdp.reward.double()[states, policy]
        return torch.linalg.solve(system, r_pi).to(mdp.reward.dtype)
    for _ in range(1_000_000):
        v_next, _, _, lo, hi = mdp.backup(v, gamma, policy=policy)
        shift, bound = _macqueen(lo, hi, gamma, mdp.stochastic)
        v = v_next
        if bound <= accuracy:
            return v + shift
    return v


def policy_iteration(
    P: object,
    R: object = None,
    gamma: float | None = None,
    tol: float = 1e-8,
    max_iter: int = 100_000,
    *,
    episodic: bool | None = None,
    dtype: torch.dtype = torch.float64,
) -> MDPSolution:
    r"""Solve a finite discounted MDP by policy iteration: evaluate π exactly
    (a dense solve of (I − γP_π)V = r_π up to 2048 states; above, the native
    backup with π fixed, to within tol(1−γ)/4), then improve it greedily with
    the native backup, keeping the current action where it is within
    tol(1−γ)/2 of the best (no cycling on ties). Starts from the greedy policy
    of V = 0.
    {args}

    Stopping rule and guarantee: for any V, ‖V − V*‖∞ ≤ ‖TV − V‖∞ / (1−γ)
    (T is a γ-contraction). The solver stops when this bound, for V = V^π,
    is ≤ tol, or when the policy no longer changes, and returns the policy
    and its value V^π, so **‖V − V*‖∞ ≤ tol** whenever ``converged``
    (``error_bound`` holds the bound at exit).

    Returns:
        An :class:`MDPSolution` (``Q`` is None); ``iterations`` counts
        evaluations, ``residuals`` holds ‖TV^π − V^π‖∞ for each.

    Example:
        >>> import torch
        >>> from fisherprec.bellman import policy_iteration
        >>> P = torch.ones(2, 1, 1, dtype=torch.float64)
        >>> R = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
        >>> policy_iteration(P, R, gamma=0.5).V
        tensor([4.], dtype=torch.float64)
    """
    P, R, gamma, episodic = _solver_inputs(P, R, gamma, episodic)
    _check_solver_args(gamma, tol, max_iter)
    mdp = _as_mdp(P, R, episodic, dtype)
    v = mdp.reward.new_zeros(mdp.num_states)
    _, policy, _, _, _ = mdp.backup(v, gamma)
    keep_margin = tol * (1.0 - gamma) / 2
    residuals: list[float] = []
    bound = math.inf
    for _ in range(max_iter):
        v = _evaluate(mdp, policy, gamma, v, tol * (1.0 - gamma) / 4)
        v_next, greedy, q, lo, hi = mdp.backup(v, gamma, with_q=True)
        residuals.append(max(-lo, hi))
        bound = residuals[-1] / (1.0 - gamma)
        if bound <= tol:
            break
        current = q.gather(1, policy.unsqueeze(1)).squeeze(1)
        improved = torch.where(current >= v_next - keep_margin, policy, greedy)
        if torch.equal(improved, policy):
            break
        policy = improved
    return MDPSolution(
        V=v,
        policy=policy,
        Q=None,
        iterations=len(residuals),
        residuals=residuals,
        error_bound=bound,
        converged=bound <= tol,
    )


for _solver in (value_iteration, q_value_iteration, policy_iteration):
    _solver.__doc__ = (
        (_solver.__doc__ or "").replace("{args}", _ARGS).replace("{guarantee}", _GUARANTEE)
    )
