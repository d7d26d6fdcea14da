r"""gymnasium input: :func:`from_gymnasium` reads a toy-text environment's
transition table (``env.unwrapped.P``) into an episodic :class:`MDP`.

On its own because gymnasium is an optional extra (``fisherprec[rl]``): it is
imported only when :func:`from_gymnasium` is called, so the rest of
:mod:`fisherprec.bellman` never needs it.
"""

from __future__ import annotations

from typing import Any

import torch

from fisherprec.bellman._mdp import MDP, CSRTransitions, _indptr


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
