r"""Finite MDPs as data: transition tables (:class:`CSRTransitions`, dense and
torch sparse forms), :class:`MDP`, :class:`MDPSolution`, and the one-time
validation that turns any accepted form of (P, R) into the native kernel's
state-major CSR layout (``_as_mdp``); :func:`random_mdp` builds test problems.

Separate from the solvers (:mod:`fisherprec.bellman._solvers`) so that the
input contract, which every solver and :func:`from_gymnasium` share, is
checked in one place and the solvers see only validated kernel inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from fisherprec import ops


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
        v_new, greedy, q, delta = ops.bellman._bellman_backup_checked(
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
        ops.bellman.check_csr_structure(indptr, indices, S, name="P")
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
        ops.bellman.check_csr_structure(indptr, indices, S, name="P")
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
