"""Microbenchmark cases shared by `fisherprec bench` and the pytest-benchmark
suites in bench/, so that the two never disagree.

Each Fisher variant has a module ``fisherprec/benchmarks/<variant>.py`` that
registers a factory with ``@register("<variant>")``. A factory takes the size
labels asked for (``None``: its defaults; an unknown label raises
``ValueError`` listing the known ones) and a device, and returns
``BenchCase`` objects: the fisherprec implementation and its torch baselines
for the same workload, with the bytes an ideal kernel would move.
Modules are discovered, so a new variant needs no edit here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fisherprec._discovery import import_submodules


@dataclass(frozen=True)
class BenchCase:
    variant: str  # "diag", "block", "lowrank", "kron"
    op: str  # "update" | "inv_root" | "apply" | "step"
    workload: str  # size label, e.g. "1e8-fp32"
    impl: str  # "fisherprec" or the baseline, e.g. "torch-adamw-fused"
    run: Callable[[], object]  # one timed call (inputs and state prepared in the factory)
    bytes_per_call: int | None = None  # ideal memory traffic, for achieved bandwidth

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.op}/{self.workload}/{self.impl}"


Factory = Callable[[Sequence[str] | None, torch.device], list[BenchCase]]
_FACTORIES: dict[str, Factory] = {}


def register(variant: str) -> Callable[[Factory], Factory]:
    def decorate(factory: Factory) -> Factory:
        _FACTORIES[variant] = factory
        return factory

    return decorate


def variants() -> list[str]:
    import_submodules(__name__, __path__)
    return sorted(_FACTORIES)


def collect(
    names: Sequence[str] | None, sizes: Sequence[str] | None, device: torch.device
) -> list[BenchCase]:
    known = variants()
    for name in names or ():
        if name not in known:
            raise ValueError(f"unknown benchmark variant {name!r}; available: {', '.join(known)}")
    return [case for name in (names or known) for case in _FACTORIES[name](sizes, device)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    run: Callable[[], object],
    device: torch.device,
    *,
    min_seconds: float = 0.5,
    min_repeats: int = 3,
    max_repeats: int = 100,
) -> list[float]:
    """Wall-clock seconds of each of several calls after one warm-up call."""
    run()
    synchronize(device)
    times: list[float] = []
    total = 0.0
    while len(times) < max_repeats and (len(times) < min_repeats or total < min_seconds):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
        total += times[-1]
    return times


def axpy_bandwidth(device: torch.device, numel: int = 1 << 25) -> float:
    """Bytes/s of an in-place a += s·b over float32 (12 bytes per element):
    the ceiling for read-modify-write kernels, measured now on this device."""
    a = torch.ones(numel, device=device)
    b = torch.ones(numel, device=device)
    seconds = statistics.median(time_call(lambda: a.add_(b, alpha=1e-3), device))
    return 12 * numel / seconds
