"""torch.optim optimizers that precondition with a Fisher approximation:
θ ← θ − α F^{-1/2} g (docs/theory.md, "The learning Lagrangian and F^(-p) updates").

Each variant module registers its optimizer in ``registry`` where it is
defined; importing this package imports every module in it and exports each
registered Fisher optimizer under its class name (``fisherprec.optim.KronFisher``),
so a new variant needs no edit here."""

from fisherprec._discovery import export, import_submodules
from fisherprec.optim import registry
from fisherprec.optim._base import FisherOptimizer

import_submodules(__name__, __path__)

__all__ = [
    "FisherOptimizer",
    "registry",
    *export(
        globals(),
        (
            entry.factory
            for entry in registry.REGISTRY.values()
            if isinstance(entry.factory, type) and issubclass(entry.factory, FisherOptimizer)
        ),
    ),
]
