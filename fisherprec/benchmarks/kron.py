"""KronFisher microbenchmarks: one optimizer step against torch's AdamW on the
same parameters, and one refresh of the bases by the QR power-iteration step
(``refresh="qr"``) against torch.linalg.eigh (the default) on the same factors.

Workloads are MLPs of 4 × (d × d weight + d bias): ``"mlp4x1024"`` (4.2M
parameters, the issue's workload), ``"mlp4x256"`` (the default) and
``"mlp4x64"`` (quick). Cases:

- ``step``, ``<size>``: ``KronFisher.step`` with defaults (mode "eigen",
  graft "diag") and no refresh in the timed calls, against
  AdamW(fused=True, else foreach);
- ``inv_root``, ``<size>``: a refresh of every factor with ``refresh="qr"``
  (float32 QR step from the current basis) against the default
  ``refresh="eigh"``'s torch.linalg.eigh of the same factors;
- ``memory``: not timed; ``state_floats_per_param`` gives the state size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fisherprec.benchmarks import BenchCase, register

SIZES = {"mlp4x1024": 1024, "mlp4x256": 256, "mlp4x64": 64}
DEFAULT_SIZES = ("mlp4x256",)
LAYERS = 4


def _labels(sizes: Sequence[str] | None) -> list[str]:
    labels = list(sizes) if sizes else list(DEFAULT_SIZES)
    for label in labels:
        if label not in SIZES:
            raise ValueError(f"unknown kron benchmark size {label!r}; known: {', '.join(SIZES)}")
    return labels


def mlp_params(width: int, device: torch.device, *, seed: int = 0) -> list[torch.nn.Parameter]:
    """4 × (width × width weight, width bias) with random gradients attached."""
    g = torch.Generator().manual_seed(seed)
    params = []
    for _ in range(LAYERS):
        for shape in ((width, width), (width,)):
            p = torch.nn.Parameter((torch.randn(shape, generator=g) / width**0.5).to(device))
            p.grad = torch.randn(shape, generator=g).to(device)
            params.append(p)
    return params


def _step_cases(label: str, device: torch.device) -> list[BenchCase]:
    from fisherprec.optim import KronFisher

    width = SIZES[label]
    ours = mlp_params(width, device)
    base = mlp_params(width, device)
    # The warm-up call does the first refresh (t = 1); the timed ones none.
    opt = KronFisher(ours, lr=1e-4, update_every=1 << 30)
    try:
        adamw = torch.optim.AdamW(base, lr=1e-4, fused=True)
        adamw.step()
        name = "torch-adamw-fused"
    except (RuntimeError, TypeError):
        adamw = torch.optim.AdamW(base, lr=1e-4, foreach=True)
        name = "torch-adamw-foreach"
    return [
        BenchCase("kron", "step", label, "fisherprec", opt.step),
        BenchCase("kron", "step", label, name, adamw.step),
    ]


def _refresh_cases(label: str, device: torch.device) -> list[BenchCase]:
    from fisherprec.fisher.kron import safe_eigh
    from fisherprec.optim.kron import _decompose

    width = SIZES[label]
    g = torch.Generator().manual_seed(1)
    # Factors of a few steps' gradients and the eigenbasis of slightly older ones.
    grads = torch.randn(LAYERS, 4 * width, width, generator=g)
    factors = (grads.mT @ grads / (4 * width)).to(device)
    older = factors + 0.05 * torch.eye(width, device=device)
    _, basis, _ = safe_eigh(older)
    valid = torch.ones(LAYERS, dtype=torch.bool, device=device)
    # Each layer has two factors (L and R) of this size: two calls' worth per refresh.
    return [
        BenchCase(
            "kron",
            "inv_root",
            label,
            "fisherprec",
            lambda: [_decompose(factors, basis, valid, "qr", eigenvalues=False) for _ in range(2)],
        ),
        BenchCase(
            "kron",
            "inv_root",
            label,
            "torch-eigh",
            lambda: [torch.linalg.eigh(factors) for _ in range(2)],
        ),
    ]


def state_floats_per_param(shapes: Sequence[Sequence[int]], **options) -> float:
    """KronFisher's state (``state_bytes``) in 4-byte numbers per parameter."""
    import math

    from fisherprec.optim.kron import state_bytes

    numel = sum(math.prod(s) for s in shapes)
    return sum(state_bytes(s, **options) for s in shapes) / 4 / numel


@register("kron")
def cases(sizes: Sequence[str] | None, device: torch.device) -> list[BenchCase]:
    out: list[BenchCase] = []
    for label in _labels(sizes):
        out += _step_cases(label, device)
        out += _refresh_cases(label, device)
    return out
