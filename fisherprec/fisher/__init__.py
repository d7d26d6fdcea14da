"""Fisher estimators: Fisher approximations as objects over a flat vector of
size P, all obeying the contract of :class:`FisherEstimator`."""

from fisherprec.fisher import registry
from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.block import Block
from fisherprec.fisher.dense import Dense
from fisherprec.fisher.diag import Diag
from fisherprec.fisher.empirical import empirical
from fisherprec.fisher.kron import Kron
from fisherprec.fisher.lowrank import LowRank
from fisherprec.fisher.per_sample import per_sample_grads

__all__ = [
    "Block",
    "Dense",
    "Diag",
    "FisherEstimator",
    "Kron",
    "LowRank",
    "empirical",
    "per_sample_grads",
    "registry",
]
