"""One Bellman sweep (V' = max_a r + γ P V, and the argmax) over a random
sparse MDP: the native kernel against vectorised numpy and torch sparse CSR
implementations of the same sweep, on the same data.

Beside it, op ``gather``: the sweep's random reads alone, V[indices] for every
stored transition (``torch.take``, no arithmetic), the rate that bounds any
sweep whose successors are random; ``1e7`` (10⁷ states × 4 actions × 8
successors: 3.2·10⁸ transitions, about 4 GB with the baselines' copies) is not
among the defaults."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from fisherprec import ops
from fisherprec.bellman import CSRTransitions, random_mdp
from fisherprec.benchmarks import BenchCase, register

NUM_ACTIONS = 4
SUCCESSORS = 8
GAMMA = 0.99
SIZES = {"1e7": 10_000_000, "1e6": 1_000_000, "1e5": 100_000, "1e4": 10_000}
DEFAULT_SIZES = ("1e6",)


Sweep = Callable[[], tuple[object, object]]


def _numpy_sweep(P: CSRTransitions, reward: np.ndarray, v: np.ndarray) -> Sweep:
    """Generic CSR in numpy: gather, multiply, segment-sum (rows must be non-empty)."""
    indptr = P.indptr.numpy()
    values = P.values.numpy()
    indices = P.indices.numpy()

    def sweep() -> tuple[np.ndarray, np.ndarray]:
        pv = np.add.reduceat(values * v[indices], indptr[:-1])  # (S·A,), rows s·A + a
        q = reward + GAMMA * pv.reshape(P.num_states, P.num_actions)
        return q.max(axis=1), q.argmax(axis=1)

    return sweep


def _torch_sparse_sweep(P: CSRTransitions, reward: torch.Tensor, v: torch.Tensor) -> Sweep:
    """torch sparse CSR (S·A, S) times V, then the max over actions."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(
            P.indptr.to(torch.int32),  # torch wants one index dtype for both arrays
            P.indices.to(torch.int32),
            P.values,
            (P.num_actions * P.num_states, P.num_states),
        )

    def sweep() -> tuple[torch.Tensor, torch.Tensor]:
        pv = torch.mv(matrix, v)
        q = reward + GAMMA * pv.reshape(P.num_states, P.num_actions)
        best = q.max(dim=1)
        return best.values, best.indices

    return sweep


@register("bellman")
def cases(sizes: Sequence[str] | None, device: torch.device) -> list[BenchCase]:
    labels = list(sizes or DEFAULT_SIZES)
    for label in labels:
        if label not in SIZES:
            raise ValueError(f"unknown bellman size {label!r}; available: {', '.join(SIZES)}")
    if device.type != "cpu":  # the baselines here are CPU code
        return []
    out: list[BenchCase] = []
    for label in labels:
        S = SIZES[label]
        generator = torch.Generator().manual_seed(S)
        P, reward = random_mdp(S, NUM_ACTIONS, SUCCESSORS, generator=generator)
        assert isinstance(P, CSRTransitions)
        v = torch.randn(S, generator=generator, dtype=torch.float64)
        ops.bellman.check_csr_structure(P.indptr, P.indices, S)

        def native(P=P, reward=reward, v=v):
            v_new, policy, _, _ = ops.bellman._bellman_backup_checked(
                P.indptr, P.indices, P.values, reward, v, GAMMA, None, False, check_structure=False
            )
            return v_new, policy

        nnz = P.values.numel()
        indices64 = P.indices.to(torch.int64)  # torch.take's index dtype
        ideal_bytes = (
            P.indptr.numel() * 8  # row offsets
            + nnz * (P.values.element_size() + P.indices.element_size())  # P, once
            + reward.numel() * 8  # r
            + S * (8 + 8 + 8)  # V read once (gathers hit cache), V' and π written
        )
        workload = f"{label}x{NUM_ACTIONS}x{SUCCESSORS}"
        out += [
            BenchCase("bellman", "sweep", workload, "fisherprec", native, ideal_bytes),
            BenchCase(
                "bellman",
                "sweep",
                workload,
                "numpy-reduceat",
                _numpy_sweep(P, reward.numpy(), v.numpy()),
                ideal_bytes,
            ),
            BenchCase(
                "bellman",
                "sweep",
                workload,
                "torch-sparse-csr",
                _torch_sparse_sweep(P, reward, v),
                ideal_bytes,
            ),
            # The random reads alone: one 8-byte V entry per transition, plus the indices.
            BenchCase(
                "bellman",
                "gather",
                workload,
                "torch-take",
                lambda v=v, idx=indices64: torch.take(v, idx),
                nnz * (8 + 8),
            ),
        ]
    return out
