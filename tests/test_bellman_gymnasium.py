"""fisherprec.bellman.from_gymnasium: toy-text transition tables, against a
reference solver that reads the tables' outcome lists directly."""

import numpy as np
import pytest
import torch

from fisherprec import bellman
from tests import reference

SOLVERS = [bellman.value_iteration, bellman.policy_iteration, bellman.q_value_iteration]


gymnasium = pytest.importorskip("gymnasium")  # the tests below need the optional extra


@pytest.mark.parametrize(
    ("env_id", "make_kwargs", "gamma"),
    [
        ("FrozenLake-v1", {"map_name": "8x8", "is_slippery": True}, 0.99),
        ("Taxi-v4", {}, 0.95),
        ("CliffWalking-v1", {}, 0.99),
    ],
)
def test_toy_text_optimal_values_match_a_reference_solver(env_id, make_kwargs, gamma):
    env = gymnasium.make(env_id, **make_kwargs)
    table, S = env.unwrapped.P, env.observation_space.n
    want = reference.toy_text_optimal_values(table, S, gamma)
    P, R = bellman.from_gymnasium(env)
    P_sparse, R_sparse = bellman.from_gymnasium(env, sparse=True)
    assert torch.equal(P_sparse.to_dense(), P) and torch.equal(R_sparse, R)
    sums = P.sum(-1)
    assert bool((sums <= 1 + 1e-12).all()) and bool((sums >= 0).all())
    for solver in SOLVERS:
        for PP in (P, P_sparse):
            sol = solver(PP, R, gamma, tol=1e-10, episodic=True)
            assert sol.converged
            np.testing.assert_allclose(sol.V.numpy(), want, rtol=0, atol=1e-8)


def test_frozen_lake_done_transitions_have_no_continuation():
    env = gymnasium.make("FrozenLake-v1", map_name="4x4", is_slippery=False)
    P, R = bellman.from_gymnasium(env)
    desc = env.unwrapped.desc.flatten()
    terminal = [s for s, c in enumerate(desc) if c in (b"H", b"G")]
    assert terminal and bool((P[:, terminal, :] == 0).all())  # no way on from a hole or the goal
    goal = int(np.flatnonzero(desc == b"G")[0])
    assert float(R[goal - 1, 2]) == 1.0  # stepping right onto the goal pays 1 and ends
    assert float(P[2, goal - 1].sum()) == 0.0
    sol = bellman.value_iteration(P, R, 0.9, episodic=True)
    assert float(sol.V[goal]) == 0.0 and float(sol.V[goal - 1]) == pytest.approx(1.0)


def test_from_gymnasium_accepts_an_id():
    P, R = bellman.from_gymnasium("FrozenLake-v1", map_name="4x4", dtype=torch.float32)
    assert P.shape == (4, 16, 16) and R.shape == (16, 4) and P.dtype == R.dtype == torch.float32
    with pytest.raises(TypeError, match="Invalid dtype value"):
        bellman.from_gymnasium("FrozenLake-v1", dtype=torch.int64)
    with pytest.raises(TypeError, match="need an environment id"):
        bellman.from_gymnasium(gymnasium.make("FrozenLake-v1"), map_name="4x4")


def test_from_gymnasium_rejects_envs_without_a_table():
    class NoTable:
        observation_space = gymnasium.spaces.Discrete(3)
        action_space = gymnasium.spaces.Discrete(2)

    with pytest.raises(TypeError, match=r"has no transition table env\.unwrapped\.P"):
        bellman.from_gymnasium(NoTable())

    class BoxSpace(NoTable):
        P = {0: {0: [(1.0, 0, 0.0, False)]}}  # noqa: RUF012
        observation_space = gymnasium.spaces.Box(0, 1, (2,))

    with pytest.raises(TypeError, match="needs a Discrete observation_space"):
        bellman.from_gymnasium(BoxSpace())

    class Broken(NoTable):
        P = {s: {0: [(1.0, 5, 0.0, False)], 1: []} for s in range(3)}  # noqa: RUF012

    with pytest.raises(ValueError, match=r"leads to state 5 outside \[0, 3\)"):
        bellman.from_gymnasium(Broken())


def test_from_gymnasium_docstring_example():
    import doctest

    (test,) = doctest.DocTestFinder().find(bellman.from_gymnasium, "from_gymnasium", globs={})
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
