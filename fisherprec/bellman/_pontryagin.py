r"""Deterministic control by the discrete Pontryagin principle: the Hamiltonian
H^(k)(s, a, λ) = r(s, a, k) + f(s, a)ᵀλ, the costate recursion by autograd and
:func:`pontryagin`, which makes the Lagrangian stationary in the actions.

Kept apart from the finite-MDP code: it works on differentiable torch
dynamics and rewards, not on tables, and shares nothing with the native
backup. :mod:`fisherprec.bellman._lqr` gives the closed form its costates are
checked against (λ_k = ∇V_k(s_k)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fisherprec import ops

Reward = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
Dynamics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Terminal = Callable[[torch.Tensor], torch.Tensor]


def hamiltonian(
    r: Reward, f: Dynamics, s: torch.Tensor, a: torch.Tensor, lam: torch.Tensor, k: int = 0
) -> torch.Tensor:
    """The discrete Hamiltonian H^(k)(s, a, λ) = r(s, a, k) + f(s, a)ᵀλ.

    Args:
        r: reward ``r(s, a, k)`` returning a scalar tensor.
        f: dynamics ``f(s, a)`` returning the next state, shaped like ``s``.
        s, a: state and action.
        lam: the costate λ_{k+1}, shaped like ``s``.
        k: time index passed to ``r``.

    Example:
        >>> import torch
        >>> from fisherprec.bellman import hamiltonian
        >>> f = lambda s, a: s + a
        >>> r = lambda s, a, k: -(a * a).sum()
        >>> hamiltonian(r, f, torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([3.0]))
        tensor(5.)
    """
    next_state = f(s, a)
    if next_state.shape != lam.shape:
        raise ValueError(
            f"f(s, a) has shape {tuple(next_state.shape)} but lam has shape {tuple(lam.shape)}"
        )
    return _scalar("r(s, a, k)", r(s, a, k)) + (next_state * lam).sum()


@dataclass
class PontryaginResult:
    """What :func:`pontryagin` found.

    Attributes:
        states: (n+1, d) s_0 … s_n along the final actions.
        actions: (n, m) a_0 … a_{n−1}.
        costates: (n+1, d) λ_0 … λ_n (λ_0 = ∇_{s_0} J).
        residuals: max_k ‖∂H^(k)/∂a‖∞ at every iterate, first to last.
        objective: J at the final actions.
        iterations: action updates made.
        converged: whether the last residual is below ``tol``.
    """

    states: torch.Tensor
    actions: torch.Tensor
    costates: torch.Tensor
    residuals: list[float]
    objective: float
    iterations: int
    converged: bool


def _scalar(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must return a scalar tensor, got {shape}")
    return value.reshape(())


def _adjoint(
    f: Dynamics, r: Reward, h: Terminal, s0: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward rollout, then the costate recursion backwards by autograd.
    Returns (states, costates, ∂H/∂a per step, J)."""
    n = actions.shape[0]
    with torch.no_grad():
        states = [s0]
        for k in range(n):
            nxt = f(states[k], actions[k])
            if not isinstance(nxt, torch.Tensor) or nxt.shape != s0.shape:
                got = tuple(nxt.shape) if isinstance(nxt, torch.Tensor) else type(nxt).__name__
                raise ValueError(
                    f"f(s, a) must return a state of shape {tuple(s0.shape)}, got {got}"
                )
            states.append(nxt)
    costates = torch.empty((n + 1, *s0.shape), dtype=s0.dtype, device=s0.device)
    d_actions = torch.zeros_like(actions)
    with torch.enable_grad():
        s_n = states[n].detach().requires_grad_(True)
        h_n = _scalar("h(s)", h(s_n))
        (lam,) = torch.autograd.grad(h_n, s_n, allow_unused=True)
        lam = torch.zeros_like(s_n) if lam is None else lam
        costates[n] = lam
        objective = h_n.detach().clone()
        for k in range(n - 1, -1, -1):
            s = states[k].detach().requires_grad_(True)
            a = actions[k].detach().requires_grad_(True)
            reward = _scalar("r(s, a, k)", r(s, a, k))
            big_h = reward + (f(s, a) * lam).sum()  # H^(k)(s_k, a_k, λ_{k+1})
            grad_s, grad_a = torch.autograd.grad(big_h, (s, a), allow_unused=True)
            lam = torch.zeros_like(s) if grad_s is None else grad_s  # λ_k = ∂H^(k)/∂s
            costates[k] = lam
            if grad_a is not None:
                d_actions[k] = grad_a
            objective += reward.detach()
    return torch.stack(states), costates, d_actions, objective


def _rollout_objective(
    f: Dynamics, r: Reward, h: Terminal, s0: torch.Tensor, shape: torch.Size
) -> Callable[[torch.Tensor], torch.Tensor]:
    """J as a differentiable function of the flattened actions (for the Hessian)."""

    def objective(flat: torch.Tensor) -> torch.Tensor:
        actions = flat.reshape(shape)
        s, total = s0, flat.new_zeros(())
        for k in range(shape[0]):
            total = total + _scalar("r(s, a, k)", r(s, actions[k], k))
            s = f(s, actions[k])
        return total + _scalar("h(s)", h(s))

    return objective


def pontryagin(
    f: Dynamics,
    r: Reward,
    h: Terminal,
    s0: torch.Tensor,
    horizon: int,
    actions0: torch.Tensor,
    *,
    tol: float = 1e-8,
    max_iter: int = 1000,
    method: str = "newton",
    lr: float = 1.0,
    history_size: int = 50,
) -> PontryaginResult:
    r"""Maximise J = h(s_n) + Σ_{k<n} r(s_k, a_k, k) over the actions by
    making the Lagrangian stationary (the discrete Pontryagin principle).

    Each iteration rolls the dynamics forward from ``s0``, runs the costate
    recursion backwards by autograd,

    .. math::
        λ_n = ∇h(s_n), \qquad λ_k = \frac{∂r}{∂s}(s_k, a_k, k)
              + \Big(\frac{∂f}{∂s}(s_k, a_k)\Big)^{\!⊤} λ_{k+1},

    and moves the actions towards ∂H^(k)/∂a (s_k, a_k, λ_{k+1}) = 0 (that
    derivative is ∂J/∂a_k). It stops when the stationarity residual
    max_k ‖∂H^(k)/∂a‖∞ is below ``tol``.

    Action updates (``method``):

    * ``"newton"`` (default): Newton's method on ∂H/∂a = 0. Its Jacobian is
      the Hessian of J in the actions (n·m × n·m, by autograd through the
      rollout), shifted Levenberg–Marquardt style until −∇²J is positive
      definite, with a backtracking line search on J. Exact in one step on
      linear-quadratic problems; meant for n·m up to a few thousand.
    * ``"lbfgs"``: limited-memory BFGS on J fed the costate gradient, with a
      backtracking line search (no Hessian; for large problems).
    * ``"gradient"``: a ← a + lr·∂H/∂a.

    Args:
        f: dynamics ``f(s, a) -> s'`` (differentiable torch code).
        r: reward ``r(s, a, k) -> scalar`` (a cost enters negated).
        h: terminal reward ``h(s) -> scalar``.
        s0: (d,) initial state.
        horizon: n ≥ 1 steps.
        actions0: (n, m) initial actions (dtype and device of ``s0``).
        tol: stationarity tolerance (absolute, on ∂H/∂a).
        max_iter: most action updates.
        method: ``"newton"``, ``"lbfgs"`` or ``"gradient"``.
        lr: step size of ``"gradient"``; first step of ``"lbfgs"`` is
            lr·∂H/∂a / max(1, ‖∂H/∂a‖∞).
        history_size: L-BFGS memory.

    Returns:
        A :class:`PontryaginResult`; at a maximum its ``costates`` are
        λ_k = ∇V_k(s_k).

    Example:
        >>> import torch
        >>> from fisherprec.bellman import pontryagin
        >>> f = lambda s, a: s + a                        # move by a
        >>> r = lambda s, a, k: -0.5 * (a * a).sum()      # effort
        >>> h = lambda s: -0.5 * ((s - 3.0) ** 2).sum()   # end near 3
        >>> res = pontryagin(f, r, h, torch.zeros(1, dtype=torch.float64), 2,
        ...                  torch.zeros(2, 1, dtype=torch.float64), tol=1e-10)
        >>> [round(a, 9) for a in res.actions.flatten().tolist()]   # steps of 3 / (n + 1)
        [1.0, 1.0]
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"Invalid horizon value: {horizon}")
    s0 = ops.check_tensor("s0", s0, ndim=1)
    if not s0.is_floating_point():
        raise TypeError(f"s0 must be a floating tensor, got {s0.dtype}")
    actions0 = ops.check_tensor("actions0", actions0, ndim=2, device=s0.device)
    if actions0.shape[0] != horizon:
        raise ValueError(
            f"actions0 has shape {tuple(actions0.shape)}, expected ({horizon}, m) for horizon {horizon}"
        )
    if actions0.dtype != s0.dtype:
        raise TypeError(f"actions0 has dtype {actions0.dtype} but s0 has {s0.dtype}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"Invalid tol value: {tol}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"Invalid max_iter value: {max_iter}")
    if method not in ("newton", "lbfgs", "gradient"):
        raise ValueError(
            f"Invalid method value: {method!r}; expected 'newton', 'lbfgs' or 'gradient'"
        )
    if not lr > 0:
        raise ValueError(f"Invalid lr value: {lr}")

    s0 = s0.detach()
    x = actions0.detach().clone()
    cached: dict[str, Any] = {}

    def evaluate() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # A line search has usually evaluated the new point already: reuse it.
        if "x" not in cached or not torch.equal(cached["x"], x):
            cached["x"] = x.detach().clone()
            cached["out"] = _adjoint(f, r, h, s0, cached["x"])
        return cached["out"]

    def newton_step(d_actions: torch.Tensor, objective: torch.Tensor, residual: float) -> None:
        hessian = torch.autograd.functional.hessian(
            _rollout_objective(f, r, h, s0, x.shape), x.reshape(-1)
        )
        curvature = -0.5 * (hessian + hessian.T)  # −∇²J: positive definite at a maximum
        g = d_actions.reshape(-1)
        scale = float(curvature.diagonal().abs().max()) or 1.0
        eye = torch.eye(g.numel(), dtype=g.dtype, device=g.device)
        shift = 0.0
        for _ in range(60):  # Levenberg–Marquardt shift until positive definite
            chol, info = torch.linalg.cholesky_ex(curvature + shift * eye)
            if int(info) == 0:
                break
            shift = max(4.0 * shift, 1e-10 * scale)
        direction = torch.cholesky_solve(g.unsqueeze(1), chol).squeeze(1).reshape(x.shape)
        line_search(direction, d_actions, objective, residual)

    def line_search(
        direction: torch.Tensor, d_actions: torch.Tensor, objective: torch.Tensor, residual: float
    ) -> bool:
        # Backtracking: J up (Armijo) or, at the round-off floor of J, the residual down.
        slope = float((d_actions * direction).sum())
        step = 1.0
        for _ in range(50):
            trial = x + step * direction
            out = _adjoint(f, r, h, s0, trial)
            gain = float(out[3] - objective)
            if gain >= 1e-4 * step * slope or (gain >= 0 and float(out[2].abs().max()) < residual):
                x.copy_(trial)
                cached["x"], cached["out"] = trial, out
                return True
            step /= 2
        return False

    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # L-BFGS (s, y) curvature pairs

    def lbfgs_step(d_actions: torch.Tensor, objective: torch.Tensor, residual: float) -> None:
        # Two-loop recursion for an ascent direction of J (minimising −J), then
        # backtracking on J; pairs with non-positive curvature are skipped.
        start = x.detach().clone()
        q = d_actions.reshape(-1).clone()
        alphas = []
        for s_k, y_k in reversed(pairs):
            alpha = (s_k @ q) / (y_k @ s_k)
            q -= alpha * y_k
            alphas.append(alpha)
        if pairs:
            s_k, y_k = pairs[-1]
            q *= (s_k @ y_k) / (y_k @ y_k)
        else:
            q *= lr / max(residual, 1.0)
        for (s_k, y_k), alpha in zip(pairs, reversed(alphas), strict=True):
            q += s_k * (alpha - (y_k @ q) / (y_k @ s_k))
        if line_search(q.reshape(x.shape), d_actions, objective, residual):
            new_grad = cached["out"][2].reshape(-1)
            step, change = (
                cached["x"].reshape(-1) - start.reshape(-1),
                -(new_grad - d_actions.reshape(-1)),
            )
            if float(step @ change) > 1e-12 * float(step.norm() * change.norm()):
                pairs.append((step, change))
                del pairs[:-history_size]
        else:
            pairs.clear()  # retry once from steepest ascent

    residuals: list[float] = []
    iterations, stalled = 0, 0
    while True:
        states, costates, d_actions, objective = evaluate()
        residual = float(d_actions.abs().max()) if d_actions.numel() else 0.0
        if not math.isfinite(residual) or not math.isfinite(float(objective)):
            raise FloatingPointError(
                f"pontryagin diverged at iteration {iterations} (J = {float(objective)}, "
                f"residual = {residual}); try a smaller lr or better actions0"
            )
        residuals.append(residual)
        if residual < tol or iterations >= max_iter or stalled >= 2:
            break
        before = x.detach().clone()
        if method == "newton":
            newton_step(d_actions, objective, residual)
        elif method == "lbfgs":
            lbfgs_step(d_actions, objective, residual)
        else:
            x.add_(d_actions, alpha=lr)
        iterations += 1
        # No move: the round-off floor (or a line search that found nothing).
        stalled = stalled + 1 if torch.equal(before, x) else 0
    return PontryaginResult(
        states=states,
        actions=x.detach().clone(),
        costates=costates,
        residuals=residuals,
        objective=float(objective),
        iterations=iterations,
        converged=residuals[-1] < tol,
    )
