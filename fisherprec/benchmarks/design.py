"""Benchmark cases for sequential A-optimal design (fisherprec.design.greedy).

Workloads are pools of N candidates in p dimensions ("1e6x64" is the target:
10^6 candidates, p = 64, float32). Cases:

- ``step``: one scoring step over the whole pool — the native fused
  Sherman–Morrison kernel (``fisherprec``) against the same O(N·p) update
  written with vectorised torch ops (``torch-incremental``: two (N×p)·p
  matrix-vector products and in-place elementwise passes) and against recomputing the quadratic forms
  from B each step (``torch-quadform``: X·B, O(N·p²), what one writes without
  the incremental trick).
- ``greedy``: ``fisherprec.design.greedy`` selecting n = 2p points (the
  samples the optimal path needs for ε = 1.5σ²: p ridge steps, the exact
  O(N·p²) refresh, p exact steps) with the native step against the identical
  algorithm with the ``torch-incremental`` step (init and refresh are shared code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fisherprec import design, ops
from fisherprec.benchmarks import BenchCase, register

_SIZES = {"1e6x64": (1_000_000, 64), "1e5x64": (100_000, 64), "1e4x16": (10_000, 16)}
_DEFAULT = ("1e6x64",)


def torch_score_step(
    pool: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    beta: float,
    gamma: float,
    eta: float,
    s: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """The scoring step of ops.design_score_step in vectorised torch (the baseline).

    Two matrix-vector products (faster here than one (N×p)·(p×2) matmul) and
    in-place elementwise updates in float64, like the native kernel."""
    if beta != 0.0:
        u = torch.mv(pool, b.to(pool.dtype)).to(torch.float64)
        v = torch.mv(pool, c.to(pool.dtype)).to(torch.float64)
        s.addcmul_(u, u, value=-beta)
        v.mul_(-2.0).add_(u, alpha=beta * gamma).mul_(u)  # u (βγu − 2v)
        t.add_(v, alpha=beta)
    score = torch.div(t, s * eta + 1.0).masked_fill_(mask, -torch.inf)
    best = torch.argmax(score)
    out[0] = score[best]
    out[1] = best
    return out


def _torch_quadform_step(pool: torch.Tensor, b_mat: torch.Tensor, mask: torch.Tensor) -> int:
    """Score every candidate from B directly: s = diag(X B Xᵀ), t = ‖X B‖²/p."""
    y = pool @ b_mat
    s = (y * pool).sum(1, dtype=torch.float64)
    t = y.square().sum(1, dtype=torch.float64) / pool.shape[1]
    return int(torch.argmax((t / (1.0 + s)).masked_fill_(mask, -torch.inf)))


def _cases(label: str, device: torch.device) -> list[BenchCase]:
    num, p = _SIZES[label]
    g = torch.Generator().manual_seed(0)
    pool = torch.nn.functional.normalize(torch.randn(num, p, generator=g), dim=1).to(device)
    f64 = {"dtype": torch.float64, "device": device}
    b = torch.randn(p, generator=g, dtype=torch.float64).to(device)
    c = torch.randn(p, generator=g, dtype=torch.float64).to(device)
    mask = torch.zeros(num, dtype=torch.bool, device=device)
    mask[:: max(1, num // 100)] = True
    states = {
        impl: (torch.full((num,), 10.0, **f64), torch.ones(num, **f64), torch.empty(2, **f64))
        for impl in ("fisherprec", "torch-incremental")
    }
    beta = 1e-12  # keeps s, t finite over many timed repeats
    root = torch.randn(p, p, generator=g).to(device)
    b_mat = (root @ root.T / p + torch.eye(p, device=device)).contiguous()
    pool_bytes = pool.numel() * pool.element_size()
    # Ideal traffic of one step: read the pool once, read and write s and t.
    step_bytes = pool_bytes + 4 * num * 8 + num
    n = 2 * p

    def native_step() -> object:
        s, t, out = states["fisherprec"]
        return ops.design_score_step(pool, b, c, beta, 0.5, 1.0, s, t, mask, out)

    def torch_step() -> object:
        s, t, out = states["torch-incremental"]
        return torch_score_step(pool, b, c, beta, 0.5, 1.0, s, t, mask, out)

    def greedy_native() -> object:
        return design.greedy(pool, n)

    def greedy_torch() -> object:
        return design._greedy(pool, n, 1.0, None, 1e-6, 1e-10, torch_score_step)

    return [
        BenchCase("design", "step", label, "fisherprec", native_step, step_bytes),
        BenchCase("design", "step", label, "torch-incremental", torch_step, step_bytes),
        BenchCase(
            "design",
            "step",
            label,
            "torch-quadform",
            lambda: _torch_quadform_step(pool, b_mat, mask),
            pool_bytes,
        ),
        BenchCase("design", "greedy", label, "fisherprec", greedy_native, n * step_bytes),
        BenchCase("design", "greedy", label, "torch-incremental", greedy_torch, n * step_bytes),
    ]


@register("design")
def design_cases(sizes: Sequence[str] | None, device: torch.device) -> list[BenchCase]:
    labels = list(sizes) if sizes else list(_DEFAULT)
    for label in labels:
        if label not in _SIZES:
            raise ValueError(
                f"unknown design workload {label!r}; known: {', '.join(sorted(_SIZES))}"
            )
    return [case for label in labels for case in _cases(label, device)]
