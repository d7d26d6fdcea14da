"""Fisher estimators: Fisher approximations as objects over a flat vector of
size P, all obeying the contract of :class:`FisherEstimator`."""

from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.dense import Dense

__all__ = ["Dense", "FisherEstimator"]
