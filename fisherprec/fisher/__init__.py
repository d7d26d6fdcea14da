"""Fisher estimators: Fisher approximations as objects over a flat vector of
size P, all obeying the contract of :class:`FisherEstimator`.

Each structure registers its class in ``registry`` where it is defined;
importing this package imports every module in it and exports each registered
class under its own name (``fisherprec.fisher.Kron``), so a new structure
needs no edit here."""

from fisherprec._discovery import export, import_submodules
from fisherprec.fisher import registry
from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.empirical import empirical
from fisherprec.fisher.per_sample import per_sample_grads

import_submodules(__name__, __path__)

__all__ = [
    "FisherEstimator",
    "empirical",
    "per_sample_grads",
    "registry",
    *export(globals(), dict.fromkeys(registry.REGISTRY.values())),
]
