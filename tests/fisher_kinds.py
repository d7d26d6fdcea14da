"""The registry that drives the estimator contract suite (test_fisher_contract.py).

A Fisher variant joins the suite by adding one `EstimatorKind` entry: how to
build it and what dense float64 matrix it must equal after a sequence of
updates (see fisherprec/fisher/_base.py for the contract).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

import fisherprec as fp
from tests import reference


@dataclass(frozen=True)
class EstimatorKind:
    name: str
    # make(P, beta, damping) -> estimator
    make: Callable[[int, float | None, float], fp.fisher.FisherEstimator]
    # expected(updates, beta) -> dense (P, P) float64 F, `updates` being the
    # list of tensors passed to update() in order ((P,) or (B, P) each).
    expected: Callable[[Sequence[torch.Tensor], float | None], torch.Tensor]
    supports_beta: bool = True
    rtol: float = 1e-5  # for float32 vectors; float64 vectors get rtol**2 or 1e-10
    extra: dict = field(default_factory=dict)


def kron_shape(p: int) -> tuple[int, ...]:
    """(d, p // d) for the smallest divisor d > 1 of p; (p,) when p is 1 or prime."""
    divisor = next((d for d in range(2, p) if p % d == 0), None)
    return (p,) if divisor is None else (divisor, p // divisor)


KINDS: list[EstimatorKind] = [
    EstimatorKind(
        name="dense",
        make=lambda p, beta, damping: fp.fisher.Dense(p, beta=beta, damping=damping),
        expected=lambda updates, beta: reference.empirical_fisher(updates, beta),
    ),
    EstimatorKind(
        name="diag",
        make=lambda p, beta, damping: fp.fisher.Diag(p, beta=beta, damping=damping),
        expected=lambda updates, beta: reference.diag_of(reference.empirical_fisher(updates, beta)),
    ),
    EstimatorKind(
        # block 16 leaves a tail for P = 7, 70 and 129 (and b > P for P = 1, 7)
        name="block",
        make=lambda p, beta, damping: fp.fisher.Block(p, 16, beta=beta, damping=damping),
        expected=lambda updates, beta: reference.block_diagonal(
            reference.empirical_fisher(updates, beta),
            reference.block_sizes(updates[0].shape[-1], 16),
        ),
    ),
    # Kron on a (d, P/d) matrix, d the smallest divisor of P (P prime: the 1-D
    # (1, P) view), in tiles of at most 8: P = 70 → (2, 35), cols 8+8+8+8+3;
    # P = 129 → (3, 43); P = 7 → (1, 7) in one tile.
    EstimatorKind(
        name="kron",
        make=lambda p, beta, damping: fp.fisher.Kron(
            kron_shape(p), beta=beta, damping=damping, max_dim=8
        ),
        expected=lambda updates, beta: reference.kron_fisher(
            updates, kron_shape(updates[0].shape[-1]), 8, beta
        ),
    ),
    # A window of the last 8 of the suite's 11 observations: wraps around.
    EstimatorKind(
        name="lowrank",
        make=lambda p, beta, damping: fp.fisher.LowRank(p, rank=8, damping=damping),
        expected=lambda updates, beta: reference.window_fisher(updates, rank=8),
        supports_beta=False,
    ),
]
