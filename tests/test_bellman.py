"""fisherprec.bellman: Pontryagin costates against Riccati, and the finite-MDP
solvers against each other, a plain numpy reference and gymnasium's tables."""

import dataclasses
import sys
import warnings

import numpy as np
import pytest
import torch

from fisherprec import bellman
from fisherprec.bellman import CSRTransitions
from tests import reference

SOLVERS = [bellman.value_iteration, bellman.policy_iteration, bellman.q_value_iteration]
F64 = torch.float64


# ----------------------------------------------------------------- LQR / Pontryagin
def random_lqr(generator, d=4, m=2, spectral_radius=1.1):
    """A random controllable (hence stabilisable) pair (A, B), open-loop unstable,
    with Q, R positive definite and Qf positive semi-definite."""
    while True:
        A = torch.randn(d, d, generator=generator, dtype=F64)
        A = spectral_radius * A / torch.linalg.eigvals(A).abs().max()
        B = torch.randn(d, m, generator=generator, dtype=F64)
        blocks = [B]
        for _ in range(d - 1):
            blocks.append(A @ blocks[-1])
        if int(torch.linalg.matrix_rank(torch.cat(blocks, dim=1))) == d:
            break
    M = torch.randn(d, d, generator=generator, dtype=F64)
    Q = M @ M.T / d + 0.1 * torch.eye(d, dtype=F64)
    N = torch.randn(m, m, generator=generator, dtype=F64)
    R = N @ N.T / m + 0.5 * torch.eye(m, dtype=F64)
    M = torch.randn(d, 2, generator=generator, dtype=F64)
    Qf = M @ M.T  # rank 2: semi-definite
    return A, B, Q, R, Qf


def lqr_callables(A, B, Q, R, Qf):
    def f(s, a):
        return A @ s + B @ a

    def r(s, a, k):
        return -0.5 * (s @ Q @ s + a @ R @ a)

    def h(s):
        return -0.5 * s @ Qf @ s

    return f, r, h


def rel_err(got, want):
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pontryagin_matches_riccati_policy_and_costates_are_value_gradients(seed):
    generator = torch.Generator().manual_seed(seed)
    A, B, Q, R, Qf = random_lqr(generator)
    n = 15
    s0 = torch.randn(4, generator=generator, dtype=F64)
    res = bellman.pontryagin(
        *lqr_callables(A, B, Q, R, Qf), s0, n, torch.zeros(n, 2, dtype=F64), tol=1e-10
    )
    assert res.converged and res.residuals[-1] < 1e-10
    sol = bellman.lqr(A, B, Q, R, Qf, n)
    states, actions = sol.rollout(A, B, s0)
    grads = torch.stack([sol.value_grad(states[k], k) for k in range(n + 1)])  # ∇V_k(s_k)
    assert res.states.shape == (n + 1, 4) and res.actions.shape == (n, 2)
    assert res.costates.shape == (n + 1, 4)
    assert rel_err(res.actions, actions) <= 1e-6
    assert rel_err(res.states, states) <= 1e-6
    assert rel_err(res.costates, grads) <= 1e-6
    # Step by step too, relative to the trajectory's scale.
    scale = float(grads.norm(dim=1).max())
    assert float((res.costates - grads).norm(dim=1).max()) <= 1e-6 * scale
    assert res.objective == pytest.approx(float(sol.value(s0, 0)), rel=1e-9)
    # Stationarity: ∂H^(k)/∂a = 0 at the Riccati actions with λ_{k+1} = ∇V_{k+1}.
    f, r, _ = lqr_callables(A, B, Q, R, Qf)
    for k in (0, n // 2, n - 1):
        a = actions[k].clone().requires_grad_(True)
        (grad_a,) = torch.autograd.grad(bellman.hamiltonian(r, f, states[k], a, grads[k + 1], k), a)
        assert float(grad_a.abs().max()) <= 1e-9 * scale


def test_pontryagin_lbfgs_reaches_the_riccati_solution(generator):
    A, B, Q, R, Qf = random_lqr(generator, d=3, m=1, spectral_radius=0.9)
    n = 8
    s0 = torch.randn(3, generator=generator, dtype=F64)
    res = bellman.pontryagin(
        *lqr_callables(A, B, Q, R, Qf),
        s0,
        n,
        torch.zeros(n, 1, dtype=F64),
        tol=1e-9,
        method="lbfgs",
    )
    sol = bellman.lqr(A, B, Q, R, Qf, n)
    states, actions = sol.rollout(A, B, s0)
    grads = torch.stack([sol.value_grad(states[k], k) for k in range(n + 1)])
    assert res.residuals[-1] < 1e-7
    assert rel_err(res.actions, actions) <= 1e-6
    assert rel_err(res.costates, grads) <= 1e-6


def test_pontryagin_gradient_method_and_the_docstring_problem():
    f = lambda s, a: s + a  # noqa: E731
    r = lambda s, a, k: -0.5 * (a * a).sum()  # noqa: E731
    h = lambda s: -0.5 * ((s - 3.0) ** 2).sum()  # noqa: E731
    s0, a0 = torch.zeros(1, dtype=F64), torch.zeros(2, 1, dtype=F64)
    res = bellman.pontryagin(f, r, h, s0, 2, a0, tol=1e-9, method="gradient", lr=0.5)
    assert res.converged and res.iterations > 1
    torch.testing.assert_close(res.actions, torch.ones(2, 1, dtype=F64), rtol=0, atol=1e-8)
    # λ_n = ∇h(s_n) = −(s_n − 3) = 1, constant back to λ_0 (f_s = 1, r_s = 0).
    torch.testing.assert_close(res.costates, torch.ones(3, 1, dtype=F64), rtol=0, atol=1e-8)
    # The residual history decreases to below tol.
    assert res.residuals[0] > res.residuals[-1] and res.residuals[-1] < 1e-9


def pendulum():
    dt = 0.1

    def f(s, a):
        theta, omega = s[0], s[1]
        return torch.stack([theta + dt * omega, omega + dt * (-torch.sin(theta) + a[0])])

    def r(s, a, k):
        return -(1.0 + 0.1 * k) * (s[0] ** 2 + 0.1 * s[1] ** 2) - 0.05 * a[0] ** 2

    def h(s):
        return -10.0 * (s[0] ** 2 + s[1] ** 2)

    return f, r, h


def test_costates_are_the_adjoint_of_a_nonlinear_rollout(generator):
    f, r, h = pendulum()
    n = 12
    s0 = torch.tensor([2.0, -0.5], dtype=F64)
    actions = torch.randn(n, 1, generator=generator, dtype=F64)
    res = bellman.pontryagin(f, r, h, s0, n, actions, max_iter=0)  # evaluate only
    assert res.iterations == 0 and torch.equal(res.actions, actions)

    def objective(s0, actions):
        s, total = s0, 0.0
        for k in range(n):
            total = total + r(s, actions[k], k)
            s = f(s, actions[k])
        return total + h(s)

    x0, a = s0.clone().requires_grad_(True), actions.clone().requires_grad_(True)
    J = objective(x0, a)
    grad_s0, grad_a = torch.autograd.grad(J, (x0, a))
    assert res.objective == pytest.approx(float(J.detach()), rel=1e-12)
    torch.testing.assert_close(res.costates[0], grad_s0, rtol=1e-10, atol=1e-12)  # λ_0 = ∇_{s0} J
    torch.testing.assert_close(
        torch.tensor(res.residuals[0], dtype=F64), grad_a.abs().max(), rtol=1e-10, atol=0
    )


def test_pontryagin_solves_a_nonlinear_problem():
    f, r, h = pendulum()
    n = 12
    s0 = torch.tensor([2.0, -0.5], dtype=F64)
    start = bellman.pontryagin(f, r, h, s0, n, torch.zeros(n, 1, dtype=F64), max_iter=0)
    res = bellman.pontryagin(f, r, h, s0, n, torch.zeros(n, 1, dtype=F64), tol=1e-9)
    assert res.converged and res.objective > start.objective


def test_hamiltonian_is_reward_plus_costate_times_dynamics(generator):
    A, B, Q, R, Qf = random_lqr(generator)
    f, r, _ = lqr_callables(A, B, Q, R, Qf)
    s, a, lam = (torch.randn(n, generator=generator, dtype=F64) for n in (4, 2, 4))
    want = -0.5 * (s @ Q @ s + a @ R @ a) + (A @ s + B @ a) @ lam
    assert float(bellman.hamiltonian(r, f, s, a, lam, k=3)) == pytest.approx(float(want))
    with pytest.raises(ValueError, match="lam has shape"):
        bellman.hamiltonian(r, f, s, a, torch.zeros(3, dtype=F64))


def test_lqr_scalar_closed_form():
    one = torch.ones(1, 1, dtype=F64)
    sol = bellman.lqr(2 * one, one, one, one, 0 * one, horizon=2)
    # P_2 = 0 → K_1 = 0, P_1 = 1; K_0 = (1 + 1)^-1 · 1 · 2 = 1, P_0 = 1 + 2·1·(2 − 1) = 3.
    assert sol.gains.flatten().tolist() == [1.0, 0.0]
    assert sol.value_matrices.flatten().tolist() == [3.0, 1.0, 0.0]
    s = torch.tensor([2.0], dtype=F64)
    assert float(sol.value(s, 0)) == -6.0 and sol.value_grad(s, 0).tolist() == [-6.0]
    assert sol.action(s, 0).tolist() == [-2.0] and sol.horizon == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"horizon": 0}, ValueError, "Invalid horizon value: 0"),
        ({"actions0": torch.zeros(4, 1, dtype=F64)}, ValueError, r"actions0 has shape \(4, 1\)"),
        ({"actions0": torch.zeros(3, dtype=F64)}, ValueError, "actions0 must have 2 dimensions"),
        ({"actions0": torch.zeros(3, 1)}, TypeError, "actions0 has dtype torch.float32"),
        ({"s0": torch.zeros(1, dtype=torch.int64)}, TypeError, "s0 must be a floating tensor"),
        ({"tol": 0.0}, ValueError, "Invalid tol value: 0.0"),
        ({"max_iter": -1}, ValueError, "Invalid max_iter value: -1"),
        ({"method": "adam"}, ValueError, "Invalid method value: 'adam'"),
        ({"lr": 0.0}, ValueError, "Invalid lr value"),
        ({"f": lambda s, a: torch.zeros(2, dtype=F64)}, ValueError, "f\\(s, a\\) must return"),
        (
            {"r": lambda s, a, k: torch.zeros(2, dtype=F64)},
            ValueError,
            "r\\(s, a, k\\) must return a scalar",
        ),
        ({"h": lambda s: 1.0}, ValueError, "h\\(s\\) must return a scalar"),
    ],
)
def test_pontryagin_rejects_bad_input(kwargs, error, message):
    args = {
        "f": lambda s, a: s + a,
        "r": lambda s, a, k: -(a * a).sum(),
        "h": lambda s: -(s * s).sum(),
        "s0": torch.zeros(1, dtype=F64),
        "horizon": 3,
        "actions0": torch.zeros(3, 1, dtype=F64),
    } | kwargs
    with pytest.raises(error, match=message):
        bellman.pontryagin(**args)


def test_pontryagin_reports_divergence():
    f = lambda s, a: 10 * s + a  # noqa: E731
    r = lambda s, a, k: (a * a).sum() * 1e300  # noqa: E731 (unbounded: J → ∞)
    with pytest.raises(FloatingPointError, match="diverged"):
        bellman.pontryagin(
            f,
            r,
            lambda s: s.sum(),
            torch.ones(1, dtype=F64),
            3,
            torch.ones(3, 1, dtype=F64),
            method="gradient",
            lr=1e300,
        )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"Q": torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=F64)},
            ValueError,
            "Q must be symmetric",
        ),
        ({"Qf": -torch.eye(2, dtype=F64)}, ValueError, "Qf must be positive semi-definite"),
        ({"R": torch.zeros(1, 1, dtype=F64)}, ValueError, "R must be positive definite"),
        ({"R": torch.eye(2, dtype=F64)}, ValueError, r"R has shape \(2, 2\), expected \(1, 1\)"),
        ({"B": torch.ones(3, 1, dtype=F64)}, ValueError, r"B has shape \(3, 1\)"),
        ({"B": torch.ones(2, 1)}, TypeError, "B has dtype torch.float32"),
        ({"A": torch.ones(2, 3, dtype=F64)}, ValueError, "A must be square"),
        ({"horizon": 0}, ValueError, "Invalid horizon value"),
    ],
)
def test_lqr_rejects_bad_input(change, error, message):
    args = {
        "A": torch.eye(2, dtype=F64),
        "B": torch.ones(2, 1, dtype=F64),
        "Q": torch.eye(2, dtype=F64),
        "R": torch.eye(1, dtype=F64),
        "Qf": torch.eye(2, dtype=F64),
        "horizon": 3,
    } | change
    with pytest.raises(error, match=message):
        bellman.lqr(**args)


# ------------------------------------------------------------------- finite MDPs
def quiet(build):
    """torch warns that sparse CSR is beta and about invariant checks when a
    sparse tensor is built; the solvers only read the tensors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build()


def p_forms(P):
    """The same dense (A, S, S) P in every accepted form."""
    A, S, _ = P.shape
    csr2 = quiet(lambda: P.reshape(A * S, S).to_sparse_csr())
    forms = {
        "dense": P,
        "numpy": P.numpy(),
        "CSRTransitions": dataclasses.replace(
            CSRTransitions.from_dense(P), indices=CSRTransitions.from_dense(P).indices.int()
        ),
        "torch-csr-2d": csr2,
        "torch-coo": quiet(lambda: P.to_sparse()),
    }
    if len(set((P != 0).sum(dim=(1, 2)).tolist())) == 1:  # torch needs equal nnz per batch
        forms["torch-csr-batched"] = quiet(lambda: P.to_sparse_csr())
    return forms


def sparse_random_mdp(S, A, generator, density=0.3):
    """Dense storage of a sparse random MDP (every row keeps at least one successor)."""
    weights = torch.rand(A, S, S, generator=generator, dtype=F64)
    keep = torch.rand(A, S, S, generator=generator) < density
    keep[:, torch.arange(S), torch.randint(0, S, (S,), generator=generator)] = True
    weights = weights * keep
    return weights / weights.sum(-1, keepdim=True), torch.randn(
        S, A, generator=generator, dtype=F64
    )


@pytest.mark.parametrize("gamma", [0.5, 0.95])
@pytest.mark.parametrize("sparse", [False, True])
def test_solvers_agree_with_numpy_reference_and_each_other(gamma, sparse, generator):
    S, A = 40, 3
    if sparse:
        P, R = sparse_random_mdp(S, A, generator)
    else:
        P, R = bellman.random_mdp(S, A, generator=generator)
    v_star, policy_star, q_star = reference.mdp_optimal_values(P.numpy(), R.numpy(), gamma)
    forms = p_forms(P)
    for form, PP in forms.items():
        for solver in SOLVERS:
            sol = solver(PP, R, gamma, tol=1e-10)
            assert sol.converged, (form, solver.__name__)
            assert sol.error_bound <= 1e-10
            np.testing.assert_allclose(sol.V.numpy(), v_star, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(sol.policy.numpy(), policy_star)
            assert sol.V.dtype == F64 and sol.policy.dtype == torch.int64
            assert len(sol.residuals) == sol.iterations >= 1
            if solver is bellman.q_value_iteration:
                np.testing.assert_allclose(sol.Q.numpy(), q_star, rtol=0, atol=1e-9)
            else:
                assert sol.Q is None


def test_random_sparse_mdp_in_csr_form(generator):
    P, R = bellman.random_mdp(300, 4, successors=5, generator=generator)
    assert isinstance(P, CSRTransitions) and P.indices.dtype == torch.int32
    v_star, policy_star, _ = reference.mdp_optimal_values(P.to_dense().numpy(), R.numpy(), 0.9)
    results = [solver(P, R, 0.9, tol=1e-9) for solver in SOLVERS]
    for sol in results:
        np.testing.assert_allclose(sol.V.numpy(), v_star, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(sol.policy.numpy(), policy_star)


def test_policy_iteration_with_iterative_evaluation(monkeypatch, generator):
    # Above _DENSE_EVALUATION_MAX_STATES, π is evaluated with the native backup
    # (policy fixed) instead of a dense solve: force that path on a small MDP.
    monkeypatch.setattr(bellman._solvers, "_DENSE_EVALUATION_MAX_STATES", 0)
    P, R = bellman.random_mdp(200, 3, successors=4, generator=generator)
    v_star, policy_star, _ = reference.mdp_optimal_values(P.to_dense().numpy(), R.numpy(), 0.95)
    for tol in (1e-3, 1e-9):
        sol = bellman.policy_iteration(P, R, 0.95, tol=tol)
        assert sol.converged and sol.error_bound <= tol
        assert float(np.max(np.abs(sol.V.numpy() - v_star))) <= tol
    np.testing.assert_array_equal(sol.policy.numpy(), policy_star)


def test_rewards_per_transition_equal_their_expectation(generator):
    S, A = 25, 3
    P, _ = sparse_random_mdp(S, A, generator)
    R3 = torch.randn(A, S, S, generator=generator, dtype=F64)
    R2 = torch.einsum("ast,ast->sa", P, R3)
    for form in ("dense", "CSRTransitions"):
        PP = p_forms(P)[form]
        for solver in SOLVERS:
            a, b = solver(PP, R3, 0.9, tol=1e-10), solver(PP, R2, 0.9, tol=1e-10)
            torch.testing.assert_close(a.V, b.V, rtol=0, atol=1e-9)


@pytest.mark.parametrize("gamma", [0.9, 0.99])
@pytest.mark.parametrize("tol", [1e-1, 1e-3, 1e-6])
@pytest.mark.parametrize("episodic", [False, True])
def test_tol_bounds_the_distance_to_the_optimal_values(gamma, tol, episodic, generator):
    S, A = 30, 4
    P, R = bellman.random_mdp(S, A, generator=generator)
    R = 10 * R
    if episodic:  # every row loses 0–5 % of its mass to episode ends; one terminal state
        P = P * (1 - 0.05 * torch.rand(A, S, 1, generator=generator, dtype=F64))
        P[:, 0, :] = 0.0
    v_star, _, _ = reference.mdp_optimal_values(P.numpy(), R.numpy(), gamma)
    for solver in SOLVERS:
        sol = solver(P, R, gamma, tol=tol, episodic=episodic)
        error = float(np.max(np.abs(sol.V.numpy() - v_star)))
        assert sol.converged and sol.error_bound <= tol
        assert error <= tol, (solver.__name__, error)
        assert error <= sol.error_bound + 1e-12
    # Stopping at the MacQueen bound is never later than the sup-norm rule
    # ‖Δ‖∞ ≤ tol(1 − γ)/γ, and returns one sweep's worth of extra accuracy.
    sol = bellman.value_iteration(P, R, gamma, tol=tol, episodic=episodic)
    limit = tol * (1 - gamma) / gamma
    assert all(res > limit for res in sol.residuals[:-1])


def test_terminal_states_have_no_continuation_value():
    # State 2 is terminal (no successors); state 1 moves to 2 for reward 5;
    # state 0 chooses between 1 (reward 0) and itself (reward 1).
    S, A = 3, 2
    P = torch.zeros(A, S, S, dtype=F64)
    P[0, 0, 1] = 1.0
    P[1, 0, 0] = 1.0
    P[:, 1, 2] = 1.0
    R = torch.tensor([[0.0, 1.0], [5.0, 5.0], [3.0, -1.0]], dtype=F64)
    gamma = 0.9
    for solver in SOLVERS:
        sol = solver(P, R, gamma, tol=1e-12, episodic=True)
        # V(2) = max r = 3; V(1) = 5 + γ·3; V(0) = max(γ V(1), 1/(1 − γ)) = 10.
        want = torch.tensor([max(gamma * (5 + gamma * 3), 10.0), 5 + gamma * 3, 3.0], dtype=F64)
        torch.testing.assert_close(sol.V, want, rtol=0, atol=1e-10)
        assert sol.policy.tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match=r"P\[a=0, s=2, :\] sums to 0; .*pass episodic=True"):
        bellman.value_iteration(P, R, gamma)


def test_gamma_zero_is_the_best_immediate_reward(generator):
    P, R = bellman.random_mdp(10, 3, generator=generator)
    for solver in SOLVERS:
        sol = solver(P, R, 0.0)
        torch.testing.assert_close(sol.V, R.max(dim=1).values)
        assert sol.iterations == 1


def test_float32_compute(generator):
    P, R = bellman.random_mdp(30, 3, generator=generator)
    v_star, _, _ = reference.mdp_optimal_values(P.numpy(), R.numpy(), 0.9)
    for solver in SOLVERS:
        sol = solver(P, R, 0.9, tol=1e-4, dtype=torch.float32)
        assert sol.V.dtype == torch.float32 and sol.converged
        np.testing.assert_allclose(sol.V.numpy(), v_star, rtol=0, atol=1e-4)


def test_max_iter_ends_unconverged(generator):
    P, R = bellman.random_mdp(10, 2, generator=generator)
    sol = bellman.value_iteration(P, R, 0.99, tol=1e-12, max_iter=5)
    assert not sol.converged and sol.iterations == 5 and sol.error_bound > 1e-12


@pytest.mark.parametrize(
    ("P", "R", "kwargs", "error", "message"),
    [
        (
            torch.tensor([[[0.5, 0.5], [1.5, -0.5]]], dtype=F64),
            None,
            {},
            ValueError,
            r"negative probability -0.5 at \(a=0, s=1, s'=1\)",
        ),
        (
            torch.tensor([[[0.5, 0.4], [0.0, 1.0]]], dtype=F64),
            None,
            {},
            ValueError,
            r"P\[a=0, s=0, :\] sums to 0.9; rows of P must sum to 1\. If the missing mass",
        ),
        (
            torch.tensor([[[0.5, 0.6], [0.0, 1.0]]], dtype=F64),
            None,
            {"episodic": True},
            ValueError,
            r"sums to 1.1; rows of P must sum to 1 or less",
        ),
        (
            torch.tensor([[[float("nan"), 1.0], [0.0, 1.0]]], dtype=F64),
            None,
            {},
            ValueError,
            "non-finite entry nan",
        ),
        (
            None,
            torch.tensor([[0.0], [float("inf")]], dtype=F64),
            {},
            ValueError,
            "R must be finite",
        ),
        (
            torch.eye(2, dtype=F64),
            None,
            {},
            ValueError,
            r"P must have shape \(A, S, S\), got \(2, 2\)",
        ),
        (torch.ones(1, 2, 3, dtype=F64), None, {}, ValueError, "P must have shape"),
        (torch.ones(1, 1, 1, dtype=torch.int64), None, {}, TypeError, "floating probabilities"),
        (
            None,
            torch.zeros(3, 1, dtype=F64),
            {},
            ValueError,
            r"R has shape \(3, 1\); expected \(S, A\) = \(2, 1\) or \(A, S, S\) = \(1, 2, 2\)",
        ),
        (None, torch.zeros(2, 1, dtype=torch.int64), {}, TypeError, "R must be a floating tensor"),
        (
            None,
            None,
            {"gamma": 1.0},
            ValueError,
            r"Invalid gamma value: 1.0 \(need 0 <= gamma < 1\)",
        ),
        (None, None, {"gamma": -0.5}, ValueError, "Invalid gamma value: -0.5"),
        (None, None, {"gamma": "0.9"}, ValueError, "Invalid gamma value"),
        (None, None, {"tol": 0.0}, ValueError, "Invalid tol value: 0.0"),
        (None, None, {"max_iter": 0}, ValueError, "Invalid max_iter value: 0"),
        (None, None, {"dtype": torch.float16}, TypeError, "Invalid dtype value"),
        (
            CSRTransitions(
                torch.tensor([0, 1, 2]), torch.tensor([0, 2]), torch.ones(2, dtype=F64), 2, 1
            ),
            None,
            {},
            ValueError,
            r"P.indices must lie in \[0, 2\)",
        ),
        (
            CSRTransitions(
                torch.tensor([0, 2]), torch.tensor([0, 1]), torch.ones(2, dtype=F64), 2, 1
            ),
            None,
            {},
            ValueError,
            r"P.indptr has shape \(2,\), expected \(3,\)",
        ),
        (
            CSRTransitions(
                torch.tensor([0, 2, 1]), torch.tensor([0, 1]), torch.ones(2, dtype=F64), 2, 1
            ),
            None,
            {},
            ValueError,
            "P.indptr must end at",
        ),
    ],
)
@pytest.mark.parametrize("solver", SOLVERS)
def test_solvers_reject_bad_input(solver, P, R, kwargs, error, message):
    P = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]], dtype=F64) if P is None else P
    R = torch.zeros(2, 1, dtype=F64) if R is None else R
    args = {"gamma": 0.9} | kwargs
    with pytest.raises(error, match=message):
        solver(P, R, **args)


def test_docstring_examples_run():
    import doctest

    from fisherprec import ops

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    tests = [t for t in finder.find(bellman) if "from_gymnasium" not in t.name]
    tests += finder.find(ops.bellman_backup, "bellman_backup", globs={})
    assert sum(len(t.examples) for t in tests) > 20
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_from_gymnasium_without_gymnasium_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # makes `import gymnasium` fail
    with pytest.raises(
        ImportError, match=r"needs gymnasium, an optional extra: pip install 'fisherprec\[rl\]'"
    ):
        bellman.from_gymnasium(object())


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([[0, 0], [0, 1], [1, 5]], r"s' index 5 outside \[0, 2\) at entry 1"),
        ([[0, 0], [0, 1], [1, -1]], r"s' index -1 outside \[0, 2\)"),
        ([[0, 0], [0, 7], [1, 0]], r"s index 7 outside \[0, 2\)"),
        ([[0, 3], [0, 1], [1, 0]], r"a index 3 outside \[0, 1\)"),
        ([[0, 0], [0, 1], [1, 10**9]], r"s' index 1000000000 outside"),
    ],
)
@pytest.mark.parametrize("solver", SOLVERS)
def test_coo_successors_are_bounds_checked(solver, indices, message):
    # issue 15, item 11: torch builds a COO tensor with indices beyond its size without
    # complaint (invariant checks are off by default); those indices went to native code.
    P = quiet(
        lambda: torch.sparse_coo_tensor(
            torch.tensor(indices), torch.ones(2, dtype=F64), (1, 2, 2), check_invariants=False
        )
    )
    with pytest.raises(ValueError, match=r"P \(sparse COO\) has " + message):
        solver(P, torch.zeros(2, 1, dtype=F64), 0.9)
