"""Benchmark cases of the diagonal step: ``DiagFisher.step`` against
``torch.optim.AdamW`` (fused=True and foreach=True) on the same workload.

Workloads (size labels):

- ``1e8-fp32``: one tensor of 10^8 float32 elements (issue case a);
- ``gpt2-124m``: the 148 parameter tensors of GPT-2 small, 124.4M elements (b);
- ``200x5k``: 200 tensors of 5000 elements (c);
- ``1e8-bf16``: (a) with bfloat16 parameters (d);
- quick ones: ``1e6-fp32``, ``1e7-fp32``, ``1e6-bf16``, ``gpt2-tiny`` (GPT-2's shapes with
  width 96: 5.5M elements).

Buffers are allocated on a workload's first timed call and shared by the
implementations (torch's optimizers get our float32 moments as their state;
for bfloat16 torch keeps its own bfloat16 moments, as it would in practice).
Ideal traffic per element: float32 28 B (read θ, g, m, v; write θ, m, v);
bfloat16 parameters with our float32 moments 22 B; torch's all-bf16 state 14 B.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fisherprec.benchmarks import BenchCase, register

QUICK = ("1e6-fp32", "1e6-bf16", "gpt2-tiny")
FULL = ("1e8-fp32", "gpt2-124m", "200x5k", "1e8-bf16")
DEFAULT = FULL


def gpt2_shapes(width: int = 768, layers: int = 12, vocab: int = 50257, context: int = 1024):
    """Parameter shapes of GPT-2 (small: 124.4M elements in 148 tensors)."""
    shapes: list[tuple[int, ...]] = [(vocab, width), (context, width)]
    for _ in range(layers):
        shapes += [(width,), (width,), (width, 3 * width), (3 * width,), (width, width), (width,)]
        shapes += [
            (width,),
            (width,),
            (width, 4 * width),
            (4 * width,),
            (4 * width, width),
            (width,),
        ]
    return [*shapes, (width,), (width,)]


def _workload(label: str) -> tuple[list[tuple[int, ...]], torch.dtype]:
    table: dict[str, Callable[[], tuple[list[tuple[int, ...]], torch.dtype]]] = {
        "1e8-fp32": lambda: ([(10**8,)], torch.float32),
        "1e8-bf16": lambda: ([(10**8,)], torch.bfloat16),
        "gpt2-124m": lambda: (gpt2_shapes(), torch.float32),
        "200x5k": lambda: ([(5000,)] * 200, torch.float32),
        "1e6-fp32": lambda: ([(10**6,)], torch.float32),
        "1e7-fp32": lambda: ([(10**7,)], torch.float32),
        "1e6-bf16": lambda: ([(10**6,)], torch.bfloat16),
        "gpt2-tiny": lambda: (gpt2_shapes(width=96), torch.float32),
    }
    if label not in table:
        raise ValueError(f"unknown diag benchmark size {label!r}; known: {', '.join(table)}")
    return table[label]()


class _Workload:
    """Parameters, gradients and optimizers of one size label, built on first use."""

    def __init__(self, label: str, device: torch.device) -> None:
        self.label, self.device = label, device
        self.shapes, self.dtype = _workload(label)
        self.numel = sum(torch.Size(s).numel() for s in self.shapes)
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None

    def _build(self) -> dict[str, torch.optim.Optimizer]:
        from fisherprec.optim import DiagFisher

        generator = torch.Generator(device=self.device).manual_seed(0)
        params = []
        for shape in self.shapes:
            p = torch.nn.Parameter(
                torch.randn(shape, generator=generator, device=self.device).to(self.dtype)
            )
            p.grad = torch.randn(shape, generator=generator, device=self.device).to(self.dtype)
            params.append(p)
        kw = {"lr": 1e-4, "weight_decay": 0.01}
        ours = DiagFisher(params, **kw)
        ours.step()  # creates the float32 moments
        fused = torch.optim.AdamW(params, fused=True, **kw)
        foreach = torch.optim.AdamW(params, foreach=True, **kw)
        for p in params:
            state = ours.state[p]
            if self.dtype == torch.float32:  # share our moments: no extra memory
                moments = {"exp_avg": state["exp_avg"], "exp_avg_sq": state["exp_avg_sq"]}
            else:  # torch keeps moments in the parameter dtype
                moments = {
                    "exp_avg": state["exp_avg"].to(self.dtype),
                    "exp_avg_sq": state["exp_avg_sq"].to(self.dtype),
                }
            step = torch.tensor(1.0, device=self.device)  # fused keeps "step" on the device
            fused.state[p] = {"step": step, **moments}
            foreach.state[p] = {"step": torch.tensor(1.0), **moments}
        return {"fisherprec": ours, "torch-adamw-fused": fused, "torch-adamw-foreach": foreach}

    def step(self, impl: str) -> None:
        if self._optimizers is None:
            self._optimizers = self._build()
        self._optimizers[impl].step()


def bytes_per_element(impl: str, dtype: torch.dtype) -> int:
    """Ideal memory traffic of one step per parameter element."""
    p = torch.empty((), dtype=dtype).element_size()
    state = 4 if impl == "fisherprec" or dtype == torch.float32 else p
    return 3 * p + 4 * state  # θ read+write, g read; m and v read+write


@register("diag")
def cases(sizes: Sequence[str] | None, device: torch.device) -> list[BenchCase]:
    out = []
    for label in sizes or DEFAULT:
        workload = _Workload(label, device)
        impls = ["fisherprec", "torch-adamw-fused", "torch-adamw-foreach"]
        for impl in impls:
            out.append(
                BenchCase(
                    variant="diag",
                    op="step",
                    workload=label,
                    impl=impl,
                    run=lambda w=workload, i=impl: w.step(i),
                    bytes_per_call=bytes_per_element(impl, workload.dtype) * workload.numel,
                )
            )
    return out
