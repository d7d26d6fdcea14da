r"""Finite-horizon discrete LQR by the Riccati recursion (:func:`lqr`).

The one control problem whose value function is known in closed form,
V_k(s) = −½ sᵀP_k s: it makes the Pontryagin costates of
:mod:`fisherprec.bellman._pontryagin` checkable (λ_k = ∇V_k(s_k) = −P_k s_k),
which is why it lives next to them and follows the same reward convention
(r = −½(sᵀQs + aᵀRa), maximised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fisherprec import ops


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
