"""The Bellman backup of a finite MDP in one native pass (per-state math in
csrc/include/fisherprec/bellman.h; the solvers around it in fisherprec.bellman)."""

from __future__ import annotations

import torch

from fisherprec.ops._native import dtype_code, native_op, run
from fisherprec.ops.checks import check_tensor

__all__ = ["BELLMAN_DTYPES", "bellman_backup"]

BELLMAN_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
_INDEX_CODES: dict[torch.dtype, int] = {torch.int32: 0, torch.int64: 1}


def _bellman_backup_fake(indptr, indices, values, reward, v, gamma, policy, with_q):
    num_states, num_actions = reward.shape
    return (
        torch.empty_like(v),
        v.new_empty(num_states, dtype=torch.int64),
        reward.new_empty((num_states if with_q else 0, num_actions)),
        v.new_empty(2, dtype=torch.float64),
    )


@native_op("bellman_backup", fake=_bellman_backup_fake)
def _bellman_backup(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    reward: torch.Tensor,
    v: torch.Tensor,
    gamma: float,
    policy: torch.Tensor | None,
    with_q: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    num_states, num_actions = reward.shape
    device = v.device
    v_out = torch.empty_like(v)
    policy_out = torch.empty(num_states, dtype=torch.int64, device=device)
    q = reward.new_empty((num_states if with_q else 0, num_actions))
    bounds = run(
        "bellman_backup",
        device,
        indptr.data_ptr(),
        indices.data_ptr(),
        _INDEX_CODES[indices.dtype],
        values.data_ptr(),
        reward.data_ptr(),
        v.data_ptr(),
        gamma,
        0 if policy is None else policy.data_ptr(),
        num_states,
        num_actions,
        dtype_code(v.dtype),
        v_out.data_ptr(),
        policy_out.data_ptr(),
        q.data_ptr() if with_q else 0,
    )
    if device.type != "cuda":  # the CPU kernel returns min/max of V' − V on the host
        return v_out, policy_out, q, torch.tensor(bounds, dtype=torch.float64)
    if num_states == 0:
        return v_out, policy_out, q, torch.zeros(2, dtype=torch.float64, device=device)
    lo, hi = torch.aminmax(v_out.double() - v.double())
    return v_out, policy_out, q, torch.stack([lo, hi])


def check_csr_structure(
    indptr: torch.Tensor, indices: torch.Tensor, num_columns: int, *, name: str = "P"
) -> None:
    """Raise unless (indptr, indices) is a valid CSR structure with column
    indices in [0, num_columns): O(nnz), so solvers run it once per problem."""
    if indptr.device.type == "meta":
        return
    if indptr.numel() and int(indptr[0]) != 0:
        raise ValueError(f"{name}.indptr must start at 0, got {int(indptr[0])}")
    if indptr.numel() and int(indptr[-1]) != indices.numel():
        raise ValueError(
            f"{name}.indptr must end at the number of stored entries {indices.numel()}, "
            f"got {int(indptr[-1])}"
        )
    if indptr.numel() > 1 and bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError(f"{name}.indptr must be non-decreasing")
    if indices.numel():
        lo, hi = torch.aminmax(indices)
        if int(lo) < 0 or int(hi) >= num_columns:
            raise ValueError(
                f"{name}.indices must lie in [0, {num_columns}), got values in [{int(lo)}, {int(hi)}]"
            )


def bellman_backup(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    reward: torch.Tensor,
    v: torch.Tensor,
    gamma: float,
    *,
    policy: torch.Tensor | None = None,
    with_q: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One synchronous Bellman backup of a finite MDP in one native pass.

    The transitions are compressed sparse rows of the (S·A) × S matrix whose
    row ``s·A + a`` is P(·|s, a) (state-major: an (S, A, S) tensor with its
    first two axes merged). For every state s:

    .. math::
        Q(s, a) = r(s, a) + γ \\sum_{s'} P(s'|s, a) V(s'), \\qquad
        V'(s) = \\max_a Q(s, a), \\qquad π(s) = \\operatorname{argmax}_a Q(s, a)

    (the first maximising action on ties). A row summing to less than 1 ends
    the episode with the missing probability (no continuation value). With
    ``policy`` the backup evaluates that policy instead: V'(s) = Q(s, π(s)).
    Sums are accumulated in float64.

    Args:
        indptr: (S·A + 1,) int64 row offsets.
        indices: (nnz,) int32 or int64 successor states.
        values: (nnz,) probabilities, float32 or float64.
        reward: (S, A) expected rewards r(s, a), the dtype of ``values``.
        v: (S,) current values, the dtype of ``values``.
        gamma: discount factor in [0, 1].
        policy: optional (S,) int64 actions in [0, A) to evaluate.
        with_q: also return Q as (S, A) (not with ``policy``).

    Returns:
        ``(v_new, policy, q, delta_range)``: V' (S,), the greedy actions (S,)
        int64, Q (S, A) (or (0, A) without ``with_q``) and the float64 tensor
        ``[min_s, max_s] (V'(s) − V(s))`` ([0, 0] when S = 0). On the CPU the
        result does not depend on the thread count.

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> # two states, one action: 0 → 1 → 1, reward 1 in state 0
        >>> indptr = torch.tensor([0, 1, 2]); indices = torch.tensor([1, 1])
        >>> values = torch.ones(2, dtype=torch.float64)
        >>> reward = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
        >>> v_new, pi, q, delta = ops.bellman_backup(indptr, indices, values, reward,
        ...                                          torch.tensor([0.0, 2.0], dtype=torch.float64), 0.5)
        >>> v_new
        tensor([2., 1.], dtype=torch.float64)

    The CSR structure is validated on every call (O(nnz): row offsets
    non-decreasing from 0 to nnz, successors in [0, S)); the solvers of
    :mod:`fisherprec.bellman` validate it once per problem instead.
    """
    return _bellman_backup_checked(
        indptr, indices, values, reward, v, gamma, policy, with_q, check_structure=True
    )


def _bellman_backup_checked(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    reward: torch.Tensor,
    v: torch.Tensor,
    gamma: float,
    policy: torch.Tensor | None,
    with_q: bool,
    *,
    check_structure: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """bellman_backup; ``check_structure=False`` is for callers that ran
    check_csr_structure on these very tensors: private to fisherprec (the
    bellman solvers and their benchmark call it as ``ops.bellman._bellman_backup_checked``),
    because out-of-range indices would reach the native kernel."""
    reward = check_tensor("reward", reward, dtypes=BELLMAN_DTYPES, ndim=2)
    num_states, num_actions = reward.shape
    if num_actions == 0:
        raise ValueError("reward must have at least one action column, got shape (S, 0)")
    device = reward.device
    v = check_tensor("v", v, dtypes=(reward.dtype,), device=device, shape=(num_states,))
    values = check_tensor("values", values, dtypes=(reward.dtype,), device=device, ndim=1)
    indices = check_tensor(
        "indices", indices, dtypes=tuple(_INDEX_CODES), device=device, shape=values.shape
    )
    indptr = check_tensor(
        "indptr",
        indptr,
        dtypes=(torch.int64,),
        device=device,
        shape=(num_actions * num_states + 1,),
    )
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"Invalid gamma value: {gamma}")
    if policy is not None:
        policy = check_tensor(
            "policy", policy, dtypes=(torch.int64,), device=device, shape=(num_states,)
        )
        if with_q:
            raise ValueError("with_q=True is not supported together with a fixed policy")
        if device.type != "meta" and num_states:
            lo, hi = torch.aminmax(policy)
            if int(lo) < 0 or int(hi) >= num_actions:
                raise ValueError(
                    f"policy must hold actions in [0, {num_actions}), got values in [{int(lo)}, {int(hi)}]"
                )
    if check_structure:
        check_csr_structure(indptr, indices, num_states, name="transitions")
    return torch.ops.fisherprec.bellman_backup(
        indptr, indices, values, reward, v, float(gamma), policy, bool(with_q)
    )
