r"""The Hamiltonian view of reinforcement learning (docs/theory.md, "The Hamiltonian view of reinforcement learning").

Deterministic control, ``s_{k+1} = f(s_k, a_k)``, with the objective

.. math::
    J = h(s_n) + \sum_{k<n} r(s_k, a_k, k)

**maximised**: ``r`` is a reward and ``h`` a terminal reward (a cost c enters
as r = −c). With multipliers λ the stationarity conditions of the Lagrangian
are the discrete Pontryagin principle, in terms of the Hamiltonian
H^(k)(s, a, λ) = r(s, a, k) + f(s, a)ᵀλ:

* λ_n = ∇h(s_n),
* λ_k = ∂r/∂s (s_k, a_k, k) + (∂f/∂s (s_k, a_k))ᵀ λ_{k+1} = ∂H^(k)/∂s,
* ∂H^(k)/∂a (s_k, a_k, λ_{k+1}) = 0,

and at the optimum λ_k = ∇V_k(s_k), the gradient of the value-to-go: the
Bellman equation V_k(s) = max_u [r(s, u, k) + V_{k+1}(f(s, u))].
:func:`pontryagin` solves the first system; :func:`lqr` gives V in closed form
for linear dynamics and quadratic rewards, which makes λ_k = ∇V_k(s_k)
checkable. For LQR the convention is r(s, a) = −½(sᵀQs + aᵀRa),
h(s) = −½ sᵀQ_f s, so V_k(s) = −½ sᵀP_k s and λ_k = −P_k s_k.

Finite MDPs (stochastic transitions, discount γ ∈ [0, 1)) are solved by
:func:`value_iteration`, :func:`policy_iteration` and
:func:`q_value_iteration` on a native Bellman backup
(:func:`fisherprec.ops.bellman_backup`); :func:`from_gymnasium` reads a
toy-text environment's transition table into an :class:`MDP`, which every
solver takes as it is (``value_iteration(mdp, gamma)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from fisherprec import ops

__all__ = [
    "MDP",
    "CSRTransitions",
    "LQRSolution",
    "MDPSolution",
    "PontryaginResult",
    "from_gymnasium",
    "hamiltonian",
    "lqr",
    "policy_iteration",
    "pontryagin",
    "q_value_iteration",
    "random_mdp",
    "value_iteration",
]

Reward = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
Dynamics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Terminal = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------- deterministic control
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


# ------------------------------------------------------------------------ LQR
@dataclass
class LQRSolution:
    """The finite-horizon Riccati solution of :func:`lqr`.

    Attributes:
        gains: (n, m, d) K_k; the optimal action is a_k = −K_k s_k.
        value_matrices: (n+1, d, d) P_k; the value-to-go is
            V_k(s) = −½ sᵀP_k s (rewards are negative costs), P_n = Q_f.
    """

    gains: torch.Tensor
    value_matrices: torch.Tensor

    @property
    def horizon(self) -> int:
        return self.gains.shape[0]

    def action(self, s: torch.Tensor, k: int) -> torch.Tensor:
        """a_k = −K_k s."""
        return -self.gains[k] @ s

    def value(self, s: torch.Tensor, k: int) -> torch.Tensor:
        """V_k(s) = −½ sᵀP_k s."""
        return -0.5 * s @ self.value_matrices[k] @ s

    def value_grad(self, s: torch.Tensor, k: int) -> torch.Tensor:
        """∇V_k(s) = −P_k s: the costate λ_k at s = s_k."""
        return -self.value_matrices[k] @ s

    def rollout(
        self, A: torch.Tensor, B: torch.Tensor, s0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """States (n+1, d) and actions (n, m) of the optimal policy from s0."""
        states, actions = [s0], []
        for k in range(self.horizon):
            actions.append(self.action(states[-1], k))
            states.append(A @ states[-1] + B @ actions[-1])
        return torch.stack(states), torch.stack(actions)


def _check_square(name: str, m: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    m = ops.check_tensor(name, m, shape=(size, size))
    if m.dtype != dtype:
        raise TypeError(f"{name} has dtype {m.dtype} but A has {dtype}")
    scale = float(m.abs().max()) if m.numel() else 0.0
    if not torch.allclose(m, m.T, rtol=0.0, atol=1e-10 * max(scale, 1.0)):
        raise ValueError(f"{name} must be symmetric")
    return m


def lqr(
    A: torch.Tensor,
    B: torch.Tensor,
    Q: torch.Tensor,
    R: torch.Tensor,
    Qf: torch.Tensor,
    horizon: int,
) -> LQRSolution:
    r"""Finite-horizon discrete LQR by the Riccati recursion.

    Dynamics s_{k+1} = A s_k + B a_k; reward r(s, a) = −½(sᵀQs + aᵀRa),
    terminal reward h(s) = −½ sᵀQ_f s (J is maximised, i.e. the quadratic cost
    minimised). With P_n = Q_f, for k = n−1 … 0:

    .. math::
        K_k = (R + BᵀP_{k+1}B)^{-1} BᵀP_{k+1}A, \qquad
        P_k = Q + AᵀP_{k+1}(A − BK_k),

    the optimal action is a_k = −K_k s_k and V_k(s) = −½ sᵀP_k s.

    Args:
        A: (d, d); B: (d, m); Q, Qf: (d, d) symmetric positive semi-definite;
        R: (m, m) symmetric positive definite; all of one floating dtype.
        horizon: n ≥ 1.

    Example:
        >>> import torch
        >>> from fisherprec.bellman import lqr
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> sol = lqr(one, one, one, one, one, horizon=1)
        >>> sol.gains.flatten(), sol.value_matrices[0].flatten()   # K = 1/2, P = 3/2
        (tensor([0.5000], dtype=torch.float64), tensor([1.5000], dtype=torch.float64))
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"Invalid horizon value: {horizon}")
    A = ops.check_tensor("A", A, ndim=2)
    if not A.is_floating_point():
        raise TypeError(f"A must be a floating tensor, got {A.dtype}")
    d = A.shape[0]
    if A.shape != (d, d):
        raise ValueError(f"A must be square, got shape {tuple(A.shape)}")
    B = ops.check_tensor("B", B, ndim=2)
    if B.shape[0] != d:
        raise ValueError(
            f"B has shape {tuple(B.shape)}, expected ({d}, m) for A of shape ({d}, {d})"
        )
    if B.dtype != A.dtype:
        raise TypeError(f"B has dtype {B.dtype} but A has {A.dtype}")
    m = B.shape[1]
    Q = _check_square("Q", Q, d, A.dtype)
    Qf = _check_square("Qf", Qf, d, A.dtype)
    R = _check_square("R", R, m, A.dtype)
    for name, mat in (("Q", Q), ("Qf", Qf)):
        lowest = float(torch.linalg.eigvalsh(mat.double())[0]) if d else 0.0
        if lowest < -1e-10 * max(float(mat.abs().max()), 1.0):
            raise ValueError(
                f"{name} must be positive semi-definite (lowest eigenvalue {lowest:.3g})"
            )
    if m and int(torch.linalg.cholesky_ex(R).info) != 0:
        raise ValueError("R must be positive definite")

    gains = A.new_empty((horizon, m, d))
    values = A.new_empty((horizon + 1, d, d))
    P = Qf
    values[horizon] = P
    for k in range(horizon - 1, -1, -1):
        K = torch.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ (A - B @ K)
        P = 0.5 * (P + P.T)  # keep it exactly symmetric against round-off
        gains[k], values[k] = K, P
    return LQRSolution(gains=gains, value_matrices=values)


# ------------------------------------------------------------- finite MDPs
@dataclass(frozen=True)
class CSRTransitions:
    """Sparse transition probabilities P(s'|s, a) in compressed sparse rows,
    the layout of the native kernel.

    Row ``i = s·A + a`` (state-major: an (S, A, S) tensor with its first two
    axes merged) holds the successors of (s, a): columns
    ``indices[indptr[i]:indptr[i+1]]`` with probabilities
    ``values[indptr[i]:indptr[i+1]]``. Repeated columns in a row add up.
    State-major rows let a sweep read P as one stream; the solvers also accept
    torch sparse tensors in (A, S, S) order and reorder them once.

    Attributes:
        indptr: (S·A + 1,) int64 row offsets (0 first, nnz last, non-decreasing).
        indices: (nnz,) int32 or int64 successor states in [0, S).
        values: (nnz,) floating probabilities.
        num_states: S.
        num_actions: A.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    num_states: int
    num_actions: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.num_actions, self.num_states, self.num_states)

    def to_dense(self) -> torch.Tensor:
        """The (A, S, S) dense tensor (small problems only)."""
        S, A = self.num_states, self.num_actions
        rows = torch.repeat_interleave(
            torch.arange(S * A, device=self.indptr.device), self.indptr.diff()
        )
        dense = self.values.new_zeros(S * A, S)
        dense.index_put_((rows, self.indices.long()), self.values, accumulate=True)
        return dense.reshape(S, A, S).transpose(0, 1).contiguous()

    @classmethod
    def from_dense(cls, P: torch.Tensor) -> CSRTransitions:
        """The nonzeros of a dense (A, S, S) tensor, int64 indices.

        Example:
            >>> import torch
            >>> from fisherprec.bellman import CSRTransitions
            >>> P = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])   # one action: swap
            >>> csr = CSRTransitions.from_dense(P)
            >>> csr.indptr.tolist(), csr.indices.tolist()
            ([0, 1, 2], [1, 0])
        """
        if not isinstance(P, torch.Tensor) or P.dim() != 3 or P.shape[1] != P.shape[2]:
            shape = tuple(P.shape) if isinstance(P, torch.Tensor) else type(P).__name__
            raise ValueError(f"P must be a dense (A, S, S) tensor, got {shape}")
        A, S, _ = P.shape
        rows_major = P.transpose(0, 1).reshape(S * A, S)
        rows, cols = (rows_major != 0).nonzero(as_tuple=True)  # row-major order
        return cls(_indptr(rows, S * A), cols, rows_major[rows, cols], S, A)


@dataclass
class MDPSolution:
    """What a finite-MDP solver found.

    Attributes:
        V: (S,) values, within ``error_bound`` of V* in ‖·‖∞.
        policy: (S,) int64 greedy actions (lowest index on ties).
        Q: (S, A) action values from :func:`q_value_iteration`, else None.
        iterations: sweeps (value / Q iteration) or improvements (policy iteration).
        residuals: the Bellman residual ‖x_{k+1} − x_k‖∞ per iteration
            (x = V, or Q for Q iteration, or ‖TV^π − V^π‖∞ for policy iteration).
        error_bound: the guaranteed bound on ‖V − V*‖∞ at exit (exact arithmetic).
        converged: error_bound ≤ tol.
    """

    V: torch.Tensor
    policy: torch.Tensor
    Q: torch.Tensor | None
    iterations: int
    residuals: list[float] = field(default_factory=list)
    error_bound: float = math.inf
    converged: bool = False


@dataclass(frozen=True)
class MDP:
    """A finite MDP as data: what the solvers need besides γ.

    Every solver takes it in place of ``(P, R)``: ``value_iteration(mdp, gamma)``
    (tol and max_iter then go by keyword). It unpacks like the pair it holds,
    ``P, R = mdp``, so code written for ``(P, R)`` tuples keeps working (then
    pass ``episodic=mdp.episodic`` yourself).

    Attributes:
        transitions: P(s'|s, a) in any form the solvers accept (a dense
            (A, S, S) tensor, a :class:`CSRTransitions`, a torch sparse tensor).
        rewards: (S, A) expected rewards r(s, a), or (A, S, S) R(a, s, s').
        episodic: rows of P may sum to less than 1, the missing mass being
            the probability that the episode ends after (s, a) (no
            continuation value). The solvers use it unless told otherwise.
        terminal: optional (S,) bool mask of the states in which an episode
            ends (for :func:`from_gymnasium`, those a ``done`` outcome arrives
            at). Informative: the solvers read everything they need off P,
            whose rows already leave out the transitions into them.
    """

    transitions: Any
    rewards: torch.Tensor
    episodic: bool = False
    terminal: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.episodic, bool):
            raise TypeError(f"MDP.episodic must be a bool, got {type(self.episodic).__name__}")
        if self.terminal is not None:
            terminal = self.terminal
            if not isinstance(terminal, torch.Tensor) or terminal.dtype != torch.bool:
                raise TypeError("MDP.terminal must be a bool tensor of shape (S,) or None")
            if terminal.shape != (self.num_states,):
                raise ValueError(
                    f"MDP.terminal has shape {tuple(terminal.shape)}, expected "
                    f"({self.num_states},) = (S,)"
                )

    @property
    def num_actions(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def num_states(self) -> int:
        return int(self.transitions.shape[-1])

    def __iter__(self) -> Iterator[Any]:
        """``P, R = mdp``: the tuple form of :func:`from_gymnasium` before it returned an MDP."""
        return iter((self.transitions, self.rewards))


@dataclass(frozen=True)
class _FiniteMDP:
    """A validated MDP in the kernel's layout."""

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    reward: torch.Tensor  # (S, A)
    stochastic: bool  # every row sums to 1: the MacQueen bounds need no clamping

    @property
    def num_states(self) -> int:
        return self.reward.shape[0]

    @property
    def num_actions(self) -> int:
        return self.reward.shape[1]

    def backup(
        self,
        v: torch.Tensor,
        gamma: float,
        *,
        policy: torch.Tensor | None = None,
        with_q: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
        v_new, greedy, q, delta = ops._bellman_backup_checked(
            self.indptr,
            self.indices,
            self.values,
            self.reward,
            v,
            gamma,
            policy,
            with_q,
            check_structure=False,  # checked once in _as_mdp
        )
        lo, hi = delta.tolist()
        return v_new, greedy, q, lo, hi


def _indptr(rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """CSR row offsets of entries listed in non-decreasing row order."""
    indptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
    indptr[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
    return indptr


def _state_major(
    indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, S: int, A: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reorder validated CSR rows a·S + s (action-major) to s·A + a."""
    counts = indptr.diff()
    order = torch.arange(S * A, device=indptr.device).reshape(A, S).T.reshape(-1)  # new → old row
    new_counts, starts = counts[order], indptr[:-1][order]
    total = int(new_counts.sum())
    first = torch.repeat_interleave(new_counts.cumsum(0) - new_counts, new_counts)
    entries = (
        torch.repeat_interleave(starts, new_counts)
        + torch.arange(total, device=indptr.device)
        - first
    )
    new_indptr = torch.zeros_like(indptr)
    new_indptr[1:] = new_counts.cumsum(0)
    return new_indptr, indices[entries], values[entries]


def _csr_parts(P: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """(indptr, indices, values, S, A) of any accepted form of P in the
    kernel's state-major row order, with a validated structure; the values
    are not validated yet."""
    if isinstance(P, CSRTransitions):
        S, A = P.num_states, P.num_actions
        if S < 1 or A < 1:
            raise ValueError(f"P must have at least one state and one action, got S={S}, A={A}")
        indptr = ops.check_tensor("P.indptr", P.indptr, dtypes=(torch.int64,), ndim=1)
        indices = ops.check_tensor(
            "P.indices", P.indices, dtypes=(torch.int32, torch.int64), ndim=1
        )
        values = ops.check_tensor("P.values", P.values, shape=indices.shape)
        if indptr.shape != (S * A + 1,):
            raise ValueError(
                f"P.indptr has shape {tuple(indptr.shape)}, expected ({S * A + 1},) = (S·A + 1,)"
            )
        ops.check_csr_structure(indptr, indices, S, name="P")
        return indptr, indices, values, S, A
    if isinstance(P, torch.Tensor) and P.layout == torch.sparse_csr:
        if P.dim() == 2:
            num_rows, S = P.shape
            if S < 1 or num_rows < 1 or num_rows % S:
                raise ValueError(
                    f"a 2-D sparse CSR P must have shape (A·S, S), got {tuple(P.shape)}"
                )
            A = num_rows // S
            indptr, indices, values = P.crow_indices().long(), P.col_indices(), P.values()
        elif P.dim() == 3:  # batched CSR: one (S, S) matrix per action, equal nnz each
            A, S, _ = P.shape
            crow, col = P.crow_indices().long(), P.col_indices()
            nnz = col.shape[-1]
            offsets = torch.arange(A, device=crow.device).unsqueeze(1) * nnz
            indptr = torch.cat([(crow[:, :-1] + offsets).reshape(-1), crow.new_tensor([A * nnz])])
            indices, values = col.reshape(-1), P.values().reshape(-1)
        else:
            raise ValueError(f"a sparse CSR P must be 2-D or 3-D, got shape {tuple(P.shape)}")
        ops.check_csr_structure(indptr, indices, S, name="P")
        return (*_state_major(indptr, indices, values, S, A), S, A)
    if isinstance(P, torch.Tensor) and P.layout == torch.sparse_coo:
        if P.dim() != 3:
            raise ValueError(f"a sparse COO P must have shape (A, S, S), got {tuple(P.shape)}")
        A, S, _ = P.shape
        if A < 1 or S < 1:
            raise ValueError(f"P must have at least one state and one action, got {tuple(P.shape)}")
        # torch does not check COO indices against the size unless asked to: an index
        # out of range would reach the native backup. Check every axis before coalescing.
        raw = P._indices()
        for axis, (label, size) in enumerate((("a", A), ("s", S), ("s'", S))):
            bad = (raw[axis] < 0) | (raw[axis] >= size)
            if bool(bad.any()):
                j = int(bad.nonzero()[0])
                raise ValueError(
                    f"P (sparse COO) has {label} index {int(raw[axis, j])} outside [0, {size}) "
                    f"at entry {j}; the indices of P must lie within its shape {tuple(P.shape)}"
                )
        P = P.transpose(0, 1).coalesce()  # (S, A, S), sorted by (s, a, s'): rows in order
        idx = P.indices()
        return _indptr(idx[0] * A + idx[1], S * A), idx[2], P.values(), S, A
    if isinstance(P, torch.Tensor) and P.layout != torch.strided:
        raise TypeError(f"P has unsupported layout {P.layout}; use dense, sparse CSR or COO")
    dense = torch.as_tensor(P)
    if dense.dim() != 3 or dense.shape[1] != dense.shape[2]:
        raise ValueError(f"P must have shape (A, S, S), got {tuple(dense.shape)}")
    if dense.shape[0] < 1 or dense.shape[1] < 1:
        raise ValueError(
            f"P must have at least one state and one action, got shape {tuple(dense.shape)}"
        )
    if not dense.is_floating_point():
        raise TypeError(f"P must hold floating probabilities, got dtype {dense.dtype}")
    csr = CSRTransitions.from_dense(dense)
    return csr.indptr, csr.indices, csr.values, csr.num_states, csr.num_actions


def _as_mdp(P: object, R: object, episodic: bool, dtype: torch.dtype) -> _FiniteMDP:
    """Validate (P, R) once and convert them to the kernel's layout."""
    if dtype not in ops.BELLMAN_DTYPES:
        raise TypeError(f"Invalid dtype value: {dtype}; supported: float32, float64")
    indptr, indices, values, S, A = _csr_parts(P)
    if not values.is_floating_point():
        raise TypeError(f"P must hold floating probabilities, got dtype {values.dtype}")
    device = values.device
    ops.check_device("P", device)
    rows = torch.repeat_interleave(torch.arange(S * A, device=device), indptr.diff())

    def where(j: int) -> str:
        row = int(rows[j])
        return f"(a={row % A}, s={row // A}, s'={int(indices[j])})"

    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        j = int(bad.nonzero()[0])
        raise ValueError(f"P has a non-finite entry {float(values[j])} at {where(j)}")
    bad = values < 0
    if bool(bad.any()):
        j = int(bad.nonzero()[0])
        raise ValueError(
            f"P has a negative probability {float(values[j]):.6g} at {where(j)}; "
            "transition probabilities must be >= 0"
        )
    sums = torch.zeros(S * A, dtype=torch.float64, device=device)
    sums.index_add_(0, rows, values.double())
    slack = max(1e-9, 64 * torch.finfo(values.dtype).eps)
    over = sums > 1 + slack
    under = sums < 1 - slack
    if bool(over.any()) or (not episodic and bool(under.any())):
        i = int((over if bool(over.any()) else under).nonzero()[0])
        hint = (
            ""
            if episodic or bool(over.any())
            else " If the missing mass is the probability that the episode ends after (s, a)"
            " (as in from_gymnasium's output), pass episodic=True."
        )
        raise ValueError(
            f"P[a={i % A}, s={i // A}, :] sums to {float(sums[i]):.6g}; rows of P must sum to 1"
            f"{' or less (episodic=True)' if episodic else ''}.{hint}"
        )
    stochastic = not bool(under.any())

    reward = torch.as_tensor(R)
    if reward.layout != torch.strided:
        raise TypeError(f"R must be a dense tensor, got layout {reward.layout}")
    if not reward.is_floating_point():
        raise TypeError(f"R must be a floating tensor, got dtype {reward.dtype}")
    reward = reward.to(device)
    if reward.shape == (S, A):
        r = reward.double()
    elif reward.shape == (A, S, S):
        # Expected reward r(s, a) = Σ_{s'} P(s'|s, a) R(a, s, s') over stored entries.
        per_entry = reward[rows % A, rows // A, indices.long()].double() * values.double()
        r = torch.zeros(S * A, dtype=torch.float64, device=device).index_add_(0, rows, per_entry)
        r = r.reshape(S, A)
    else:
        raise ValueError(
            f"R has shape {tuple(reward.shape)}; expected (S, A) = ({S}, {A}) "
            f"or (A, S, S) = ({A}, {S}, {S}) for P of shape ({A}, {S}, {S})"
        )
    if not bool(torch.isfinite(r).all()):
        raise ValueError("R must be finite")

    index_dtype = torch.int32 if torch.iinfo(torch.int32).max >= S else torch.int64
    return _FiniteMDP(
        indptr=indptr.to(torch.int64).contiguous(),
        indices=indices.to(index_dtype).contiguous(),
        values=values.to(dtype).contiguous(),
        reward=r.to(dtype).contiguous(),
        stochastic=stochastic,
    )


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


# ---------------------------------------------------------------- gymnasium
def from_gymnasium(
    env: object, *, sparse: bool = False, dtype: torch.dtype = torch.float64, **make_kwargs: Any
) -> MDP:
    """The :class:`MDP` of a toy-text environment's transition table ``env.unwrapped.P``
    (FrozenLake, Taxi, CliffWalking, or any env with a table of the same form:
    ``P[s][a] = [(probability, next_state, reward, done), ...]``).

    A ``done`` outcome ends the episode: it contributes its reward to
    r(s, a) = Σ p·reward but no continuation, so its probability is left out of
    P. Rows of P therefore sum to at most 1, and the MDP says so
    (``episodic=True``): every solver takes it as it is,
    ``value_iteration(mdp, gamma)``. ``P, R = from_gymnasium(...)`` still
    unpacks the pair (then pass ``episodic=True`` to the solver yourself).

    Args:
        env: a gymnasium environment, or an environment id passed to
            ``gymnasium.make`` with ``make_kwargs``.
        sparse: return P as :class:`CSRTransitions` instead of a dense (A, S, S)
            tensor.
        dtype: floating dtype of P and R.

    Returns:
        An :class:`MDP`: ``transitions`` P (dense (A, S, S), or
        :class:`CSRTransitions` with ``sparse=True``), ``rewards`` R (S, A),
        ``episodic=True`` and the ``terminal`` mask (S,) of the states in which
        an episode ends (those a ``done`` outcome arrives at: FrozenLake's holes
        and goal, CliffWalking's goal). Their values never enter a
        continuation, since the outcomes that reach them are left out of P.

    Raises:
        ImportError: gymnasium is not installed (``pip install 'fisherprec[rl]'``).

    Example:
        >>> import gymnasium
        >>> from fisherprec.bellman import from_gymnasium, value_iteration
        >>> mdp = from_gymnasium(gymnasium.make("FrozenLake-v1", map_name="4x4"))
        >>> round(float(value_iteration(mdp, 0.9).V[0]), 4)
        0.0689
        >>> int(mdp.terminal.sum())   # 4 holes and the goal
        5
        >>> P, R = mdp                # the tuple form
        >>> round(float(value_iteration(P, R, 0.9, episodic=True).V[0]), 4)
        0.0689
    """
    try:
        import gymnasium
    except ImportError as err:
        raise ImportError(
            "fisherprec.bellman.from_gymnasium needs gymnasium, an optional extra: "
            "pip install 'fisherprec[rl]' (or pip install gymnasium)"
        ) from err
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"Invalid dtype value: {dtype}; expected a floating torch.dtype")
    if isinstance(env, str):
        env = gymnasium.make(env, **make_kwargs)
    elif make_kwargs:
        raise TypeError("keyword arguments for gymnasium.make need an environment id, not an env")
    unwrapped = getattr(env, "unwrapped", env)
    table = getattr(unwrapped, "P", None)
    if not isinstance(table, dict):
        raise TypeError(
            f"{type(unwrapped).__name__} has no transition table env.unwrapped.P; "
            "from_gymnasium supports toy-text environments (FrozenLake, Taxi, CliffWalking)"
        )
    spaces = []
    for name in ("observation_space", "action_space"):
        space = getattr(env, name, None)
        if not isinstance(space, gymnasium.spaces.Discrete) or int(space.start) != 0:
            raise TypeError(f"from_gymnasium needs a Discrete {name} starting at 0, got {space}")
        spaces.append(int(space.n))
    S, A = spaces

    rows: list[int] = []
    cols: list[int] = []
    probs: list[float] = []
    reward = torch.zeros(S, A, dtype=torch.float64)
    terminal = torch.zeros(S, dtype=torch.bool)  # where a `done` outcome arrives
    for s in range(S):
        actions = table.get(s)
        if not isinstance(actions, dict) or len(actions) != A:
            raise ValueError(f"env.unwrapped.P[{s}] must map each of the {A} actions to outcomes")
        for a in range(A):
            for outcome in actions[a]:
                p, s_next, r, done = outcome[:4]
                p, s_next = float(p), int(s_next)
                if not 0 <= s_next < S:
                    raise ValueError(
                        f"env.unwrapped.P[{s}][{a}] leads to state {s_next} outside [0, {S})"
                    )
                reward[s, a] += p * float(r)
                if done:
                    terminal[s_next] = True
                else:  # a finished episode has no continuation value
                    rows.append(s * A + a)
                    cols.append(s_next)
                    probs.append(p)
    # Merge repeated (row, column) outcomes and sort by row: CSR order.
    keys, where = torch.unique(
        torch.tensor(rows, dtype=torch.int64) * S + torch.tensor(cols, dtype=torch.int64),
        return_inverse=True,
    )
    merged = torch.zeros(keys.numel(), dtype=torch.float64)
    merged.index_add_(0, where, torch.tensor(probs, dtype=torch.float64))
    P: torch.Tensor | CSRTransitions = CSRTransitions(
        indptr=_indptr(keys // S, S * A),
        indices=keys % S,
        values=merged.to(dtype),
        num_states=S,
        num_actions=A,
    )
    if not sparse:
        P = P.to_dense()
    return MDP(transitions=P, rewards=reward.to(dtype), episodic=True, terminal=terminal)


# ------------------------------------------------------------------ helpers
def random_mdp(
    num_states: int,
    num_actions: int,
    successors: int | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    index_dtype: torch.dtype = torch.int32,
) -> tuple[torch.Tensor | CSRTransitions, torch.Tensor]:
    """A random MDP (P, R) for tests and benchmarks.

    With ``successors=None`` P is dense (A, S, S), every row a Dirichlet(1)
    draw; otherwise P is a :class:`CSRTransitions` in which every (s, a) has
    ``successors`` uniformly drawn next states (repeats allowed) with
    Dirichlet(1) weights. R is (S, A), standard normal.

    Example:
        >>> from fisherprec.bellman import random_mdp
        >>> P, R = random_mdp(5, 2)
        >>> tuple(P.shape), tuple(R.shape)
        ((2, 5, 5), (5, 2))
    """
    S, A = num_states, num_actions
    if S < 1 or A < 1:
        raise ValueError(f"Invalid MDP size: {S} states, {A} actions")
    reward = torch.randn(S, A, generator=generator, dtype=torch.float64).to(dtype)
    if successors is None:
        # Exponential(1) weights, normalised: a Dirichlet(1) row (1 − U > 0).
        weights = -torch.log1p(-torch.rand(A, S, S, generator=generator, dtype=torch.float64))
        return (weights / weights.sum(-1, keepdim=True)).to(dtype), reward
    if successors < 1:
        raise ValueError(f"Invalid successors value: {successors}")
    K = successors
    weights = -torch.log1p(-torch.rand(A * S, K, generator=generator, dtype=dtype))
    values = (weights / weights.sum(-1, keepdim=True)).reshape(-1)
    indices = torch.randint(0, S, (A * S * K,), generator=generator).to(index_dtype)
    indptr = torch.arange(0, A * S * K + 1, K, dtype=torch.int64)
    return CSRTransitions(indptr, indices, values, S, A), reward
