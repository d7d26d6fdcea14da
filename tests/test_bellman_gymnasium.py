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


@pytest.mark.parametrize("sparse", [False, True])
def test_solvers_take_the_mdp_as_it_is(sparse):
    # The issue: `P, R = from_gymnasium(...); value_iteration(P, R, 0.99)` refused the
    # episodic rows; the MDP object carries episodic=True, so no flag is repeated.
    env = gymnasium.make("FrozenLake-v1", map_name="8x8", is_slippery=True)
    mdp = bellman.from_gymnasium(env, sparse=sparse)
    assert isinstance(mdp, bellman.MDP) and mdp.episodic
    assert (mdp.num_states, mdp.num_actions) == (64, 4)
    P, R = mdp  # the tuple form still unpacks
    assert P is mdp.transitions and R is mdp.rewards
    want = reference.toy_text_optimal_values(env.unwrapped.P, 64, 0.99)
    for solver in SOLVERS:
        explicit = solver(P, R, 0.99, tol=1e-10, episodic=True)
        for sol in (solver(mdp, 0.99, tol=1e-10), solver(mdp, gamma=0.99, tol=1e-10)):
            assert sol.converged
            assert torch.equal(sol.V, explicit.V) and torch.equal(sol.policy, explicit.policy)
            np.testing.assert_allclose(sol.V.numpy(), want, rtol=0, atol=1e-8)
    # The default call too, with the solvers' default tol.
    default = bellman.value_iteration(mdp, 0.99)
    assert torch.equal(default.V, bellman.value_iteration(P, R, 0.99, episodic=True).V)


def test_the_mdp_terminal_mask_marks_holes_and_the_goal():
    env = gymnasium.make("FrozenLake-v1", map_name="8x8", is_slippery=True)
    mdp = bellman.from_gymnasium(env)
    desc = env.unwrapped.desc.flatten()
    expected = torch.tensor([c in (b"H", b"G") for c in desc])
    assert mdp.terminal.dtype == torch.bool and torch.equal(mdp.terminal, expected)
    assert bool((mdp.transitions[:, mdp.terminal, :] == 0).all())  # no way on from them
    assert bool((mdp.transitions[:, :, mdp.terminal] == 0).all())  # arrivals end the episode
    assert bool((mdp.transitions[:, ~mdp.terminal, :].sum(-1) > 0).all())
    # CliffWalking: only the goal ends episodes (the cliff sends back to the start).
    cliff = bellman.from_gymnasium("CliffWalking-v1")
    assert cliff.terminal.nonzero().flatten().tolist() == [47]


def test_mdp_call_forms_are_checked():
    mdp = bellman.from_gymnasium("FrozenLake-v1", map_name="4x4")
    for solver in SOLVERS:
        with pytest.raises(TypeError, match="R is part of the MDP"):
            solver(mdp, mdp.rewards, 0.9)
        with pytest.raises(TypeError, match=r"pass.* tol and max_iter by keyword"):
            solver(mdp, 0.9, 1e-6)
        with pytest.raises(TypeError, match="missing gamma"):
            solver(mdp)
        with pytest.raises(ValueError, match=r"Invalid gamma value: 1\.5"):
            solver(mdp, 1.5)
        # episodic=False overrides the MDP's own flag, and is then refused by the data.
        with pytest.raises(ValueError, match="pass episodic=True"):
            solver(mdp, 0.9, episodic=False)
        with pytest.raises(TypeError, match="missing R"):
            solver(mdp.transitions, gamma=0.9)
    with pytest.raises(ValueError, match=r"MDP.terminal has shape \(3,\), expected \(16,\)"):
        bellman.MDP(mdp.transitions, mdp.rewards, True, torch.zeros(3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"MDP\.episodic must be a bool"):
        bellman.MDP(mdp.transitions, mdp.rewards, 1)
