"""The registry of optimizers: what `fisherprec compare` and `fisherprec bench`
iterate over and what the optimizer conformance tests run on. A variant
registers itself in its own module; adding one needs no edit elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch


@dataclass(frozen=True)
class OptimizerEntry:
    name: str  # CLI name, e.g. "diag"
    factory: Callable[..., torch.optim.Optimizer]  # factory(params, **kwargs)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # sensible untuned kwargs
    fisher: str | None = None  # Fisher structure it preconditions with; None for baselines
    description: str = ""


_REGISTRY: dict[str, OptimizerEntry] = {}
REGISTRY: Mapping[str, OptimizerEntry] = MappingProxyType(_REGISTRY)


def register(entry: OptimizerEntry) -> OptimizerEntry:
    if entry.name in _REGISTRY and _REGISTRY[entry.name] != entry:
        raise ValueError(f"optimizer {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def get(name: str) -> OptimizerEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(_REGISTRY)}") from None


def build(name: str, params: Any, **overrides: Any) -> torch.optim.Optimizer:
    entry = get(name)
    return entry.factory(params, **{**entry.defaults, **overrides})


# The torch baselines every comparison starts from.
register(
    OptimizerEntry(
        "sgd",
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9},
        description="torch.optim.SGD with momentum (F = I)",
    )
)
register(
    OptimizerEntry(
        "adamw",
        torch.optim.AdamW,
        {"lr": 1e-3},
        description="torch.optim.AdamW (diagonal EMA Fisher, torch's kernel)",
    )
)
