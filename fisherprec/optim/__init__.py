"""torch.optim optimizers that precondition with a Fisher approximation:
θ ← θ − α F^{-1/2} g (docs/theory.md, "The learning Lagrangian and F^(-p) updates"). Each variant module registers itself in
``registry``; importing this package imports every variant."""

from fisherprec.optim import registry
from fisherprec.optim._base import FisherOptimizer
from fisherprec.optim.block import BlockFisher
from fisherprec.optim.diag import DiagFisher
from fisherprec.optim.kron import KronFisher
from fisherprec.optim.lowrank import LowRankFisher

__all__ = [
    "BlockFisher",
    "DiagFisher",
    "FisherOptimizer",
    "KronFisher",
    "LowRankFisher",
    "registry",
]
