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
        # Read the matrices, write the float64 eigenvectors and eigenvalues.
        moved = matrices.element_size() * count * n * n + 8 * count * (n * n + n)

        def native(m: torch.Tensor = matrices) -> object:
            return ops.symmetric_eigh(m)

        def lapack(m: torch.Tensor = matrices) -> object:
            return torch.linalg.eigh(m)

        out += [
            BenchCase("eigh", "eigh", label, "fisherprec", native, moved),
            BenchCase("eigh", "eigh", label, "torch-linalg-eigh", lapack, moved),
        ]
    return out


def gpu_check_eigh(device: torch.device | str = "cuda") -> dict[str, float]:
    """The eigensolver on `device` against the CPU one on the same batches:
    float32 and float64, n = 1, odd and block-sized n, a NaN-holding matrix,
    more matrices than one launch block (64). Returns the largest relative
    differences of eigenvalues and of the reconstructions Q diag(w) Qᵀ
    (eigenvectors are compared through them: their signs are arbitrary);
    raises AssertionError when the device disagrees with the CPU."""
    from fisherprec import ops

    device = torch.device(device)
    result: dict[str, float] = {}
    for dtype in ops.EIGH_DTYPES:
        for count, n in [(3, 1), (70, 7), (5, 33), (2, 128)]:
            cpu = spd_batch(count, n, seed=n).to(dtype)
            cpu[count // 2, 0, -1] = float("nan")
            w_cpu, q_cpu, s_cpu = ops.symmetric_eigh(cpu)
            w_dev, q_dev, s_dev = (t.cpu() for t in ops.symmetric_eigh(cpu.to(device)))
            assert torch.equal(s_dev, s_cpu), (dtype, n, s_dev, s_cpu)
            ok = s_cpu == ops.ROOT_OK
            scale = w_cpu[ok].abs().max().clamp_min(1e-300)
            rebuilt = [
                q[ok] @ torch.diag_embed(w[ok]) @ q[ok].mT
                for w, q in ((w_cpu, q_cpu), (w_dev, q_dev))
            ]
            key = f"{str(dtype).removeprefix('torch.')}/{count}x{n}"
            result[f"{key}/eigenvalues"] = float((w_dev[ok] - w_cpu[ok]).abs().max() / scale)
            result[f"{key}/reconstruction"] = float((rebuilt[1] - rebuilt[0]).abs().max() / scale)
            assert (
                result[f"{key}/eigenvalues"] < 1e-12 and result[f"{key}/reconstruction"] < 1e-12
            ), key
            assert w_dev[~ok].isnan().all() and q_dev[~ok].isnan().all(), key
    return result
