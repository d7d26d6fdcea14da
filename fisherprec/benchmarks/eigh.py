"""The batched symmetric eigensolver (``ops.symmetric_eigh``) against
``torch.linalg.eigh`` (LAPACK) on the same batch of symmetric positive
definite float64 matrices: the measurement behind Kron's dispatch size
(``fisherprec.fisher.kron.NATIVE_EIGH_MAX_DIM``).

Workloads ``"<K>x<n>"``: K float64 matrices of size n × n; ``"<K>x<n>-fp32"``
the same in float32 (LAPACK then runs in float32; the native solver always
in float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fisherprec.benchmarks import BenchCase, register

_SHAPES = [
    (256, 8),
    (128, 16),
    (64, 24),
    (64, 32),
    (64, 48),
    (64, 64),
    (32, 96),
    (16, 128),
    (8, 256),
]
SIZES = {
    f"{k}x{n}{suffix}": (k, n, dtype)
    for k, n in _SHAPES
    for suffix, dtype in (("", torch.float64), ("-fp32", torch.float32))
}
DEFAULT_SIZES = ("128x16", "64x32", "64x64", "16x128")


def spd_batch(count: int, n: int, *, seed: int = 0) -> torch.Tensor:
    """K symmetric positive definite n × n float64 matrices (Gram matrices of 2n samples)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(count, n, 2 * n, generator=g, dtype=torch.float64)
    return x @ x.mT / (2 * n)


@register("eigh")
def cases(sizes: Sequence[str] | None, device: torch.device) -> list[BenchCase]:
    from fisherprec import ops

    labels = list(sizes) if sizes else list(DEFAULT_SIZES)
    out: list[BenchCase] = []
    for label in labels:
        if label not in SIZES:
            raise ValueError(f"unknown eigh benchmark size {label!r}; known: {', '.join(SIZES)}")
        count, n, dtype = SIZES[label]
        matrices = spd_batch(count, n).to(device=device, dtype=dtype)
        moved = matrices.element_size() * count * n * n + 8 * count * (
            n * n + n
        )  # read the matrices, write vectors and values
        out += [
            BenchCase(
                "eigh", "eigh", label, "fisherprec", lambda m=matrices: ops.symmetric_eigh(m), moved
            ),
            BenchCase(
                "eigh",
                "eigh",
                label,
                "torch-linalg-eigh",
                lambda m=matrices: torch.linalg.eigh(m),
                moved,
            ),
        ]
    return out
