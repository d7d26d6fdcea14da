"""The one table of Fisher structures: name → estimator class.

Each estimator class registers itself where it is defined (``@register("diag")``),
and every place that takes a structure by name — ``fisher.empirical(kind=...)``,
``lagrangian`` and ``design`` (``fisher=...``) — resolves it here, with one error
for an unknown name. Every registered class takes the number of parameters P
(or, for Kron, a shape) as its first argument.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from fisherprec.fisher._base import FisherEstimator

__all__ = ["REGISTRY", "get", "names", "register", "resolve"]

_REGISTRY: dict[str, type[FisherEstimator]] = {}
REGISTRY = MappingProxyType(_REGISTRY)  # name (and alias) → estimator class

E = TypeVar("E", bound="type[FisherEstimator]")


def register(name: str, *aliases: str) -> Callable[[E], E]:
    """Class decorator: make the estimator available as `name` (and `aliases`)."""

    def add(cls: E) -> E:
        for key in (name, *aliases):
            if key in _REGISTRY and _REGISTRY[key] is not cls:
                raise RuntimeError(f"Fisher structure {key!r} is registered twice")
            _REGISTRY[key] = cls
        return cls

    return add


def names() -> list[str]:
    """Every accepted structure name, sorted."""
    return sorted(_REGISTRY)


def get(name: object, *, argument: str = "fisher") -> type[FisherEstimator]:
    """The estimator class registered as `name` (case-insensitive)."""
    key = name.lower() if isinstance(name, str) else name
    if not isinstance(key, str) or key not in _REGISTRY:
        raise ValueError(
            f"Invalid {argument} value: {name!r}; available: {', '.join(names())} "
            "(or a FisherEstimator subclass)"
        )
    return _REGISTRY[key]


def resolve(fisher: object, *, argument: str = "fisher") -> type[FisherEstimator]:
    """A structure name or a FisherEstimator subclass, as the class."""
    from fisherprec.fisher._base import FisherEstimator

    if isinstance(fisher, type):
        if issubclass(fisher, FisherEstimator):
            return fisher
        raise TypeError(f"{argument} must be a FisherEstimator subclass, got {fisher.__name__}")
    if isinstance(fisher, str):
        return get(fisher, argument=argument)
    raise TypeError(
        f"{argument} must be a structure name or a FisherEstimator subclass, "
        f"got {type(fisher).__name__}"
    )
