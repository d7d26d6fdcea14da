"""Low-rank window benchmarks: a LowRankFisher step against the same math in
plain torch (matmuls + torch.linalg.eigh, incremental Gram: three passes over
the window) and against torch.optim.AdamW, plus the two native passes alone
(for their achieved bandwidth against ``axpy_bandwidth``).

Workload labels: ``small`` (P = 10^5, r = 8, for quick runs) and
``1e6-r8`` … ``1e7-r128`` (P ∈ {10^6, 10^7}, r ∈ {8, 32, 128}). The default
set stops at ``1e7-r32``; ``1e7-r128`` (a 5 GB window) runs only when asked.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from fisherprec import ops
from fisherprec.benchmarks import BenchCase, axpy_bandwidth, register, synchronize, time_call
from fisherprec.fisher.lowrank import small_eigh
from fisherprec.optim.lowrank import (
    EIGVALS,
    EIGVECS,
    GRAM,
    INSERTED,
    WEIGHTS,
    WINDOW,
    LowRankFisher,
    _direction_coefficients,
)

WORKLOADS: dict[str, tuple[int, int]] = {
    "small": (10**5, 8),
    **{f"1e{e}-r{r}": (10**e, r) for e in (6, 7) for r in (8, 32, 128)},
}
DEFAULT_WORKLOADS = ("small", "1e6-r8", "1e6-r32", "1e6-r128", "1e7-r8", "1e7-r32")
HYPER = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "damping": 1e-8,
    "eps": 1e-8,
    "rcond": 1e-3,
    "weight_decay": 0.0,
}


def _full_window(opt: LowRankFisher, param: torch.Tensor, generator: torch.Generator) -> None:
    """Put the optimizer in its steady state: a full window of random gradients."""
    state = opt.state[param]
    window = state[WINDOW]
    r = window.shape[0]
    for j in range(r):  # row by row: no (r, P) float32 temporary
        window[j].copy_(torch.randn(window.shape[1], generator=generator).to(window.device))
    gram = torch.zeros(r, r, dtype=torch.float64, device=window.device)
    for j in range(r):
        gram[j] = ops.lowrank_dots(window, r, [window[j].float()])
    state[GRAM] = (gram + gram.T) / 2
    state[WEIGHTS] = torch.ones(r, dtype=torch.float64, device=window.device)
    eigvals, eigvecs = small_eigh(state[GRAM])
    state[EIGVALS], state[EIGVECS] = eigvals, eigvecs
    state[INSERTED] = r


class PlainTorchLowRank:
    """The LowRankFisher step in plain torch: the same math (shared r×r
    coefficients), with the window passes as torch matmuls — Gᵀg for the new
    Gram row, Gᵀm, then G c — three reads of the window."""

    def __init__(self, param: torch.Tensor, rank: int, buffer_dtype: torch.dtype) -> None:
        self.param = param
        p = param.numel()
        self.window = torch.zeros(rank, p, dtype=buffer_dtype, device=param.device)
        self.gram = torch.zeros(rank, rank, dtype=torch.float64, device=param.device)
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.rank, self.step_count, self.inserted = rank, 0, 0

    def fill(self, generator: torch.Generator) -> None:
        for j in range(self.rank):
            self.window[j].copy_(torch.randn(self.window.shape[1], generator=generator))
        self.gram = (self.window.to(torch.float32) @ self.window.to(torch.float32).T).double()
        self.inserted = self.rank

    def step(self, grad: torch.Tensor) -> None:
        beta1, beta2 = HYPER["betas"]
        self.step_count += 1
        t = self.step_count
        self.m.lerp_(grad, 1 - beta1)
        self.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        slot = self.inserted % self.rank
        self.inserted += 1
        k = min(self.inserted, self.rank)
        self.window[slot].copy_(grad)
        g = self.window[:k]
        row = (g @ self.window[slot]).double()  # pass 1: new Gram row
        self.gram[slot, :k] = row
        self.gram[:k, slot] = row
        gram = self.gram[:k, :k]
        eigvals, eigvecs = small_eigh(gram)  # as fisherprec: the comparison is of the passes
        gm = (g @ self.m.to(g.dtype)).double()  # pass 2: Gᵀm
        c1, c2 = 1 - beta1**t, 1 - beta2**t
        adam = self.m / ((self.v / c2).sqrt() + HYPER["eps"])
        sigma = torch.ones(k, dtype=torch.float64, device=gram.device)
        coef = _direction_coefficients(
            weighted_gram=gram,
            sigma=sigma,
            eigvals=eigvals,
            eigvecs=eigvecs,
            gm=gm,
            mm=self.m.double().square().sum(),
            adam_norm2=adam.double().square().sum(),
            c1=c1,
            damping=HYPER["damping"],
            rcond=HYPER["rcond"],
        )
        lr = HYPER["lr"]
        update = coef[1:].to(g.dtype) @ g  # pass 3: G c
        self.param.add_(self.m, alpha=-lr * float(coef[0])).add_(
            update.to(self.param.dtype), alpha=-lr
        )


def _bytes(p: int, r: int, window_bytes: int) -> dict[str, int]:
    """Ideal traffic: pass 1 reads G and g, updates m and v, writes one row;
    pass 2 reads G and m, updates θ."""
    update = r * p * window_bytes + p * (4 + 8 + 8)
    apply = r * p * window_bytes + p * (4 + 8)
    return {"update": update, "apply": apply, "step": update + apply}


@register("lowrank")
def cases(sizes: Sequence[str] | None, device: torch.device) -> list[BenchCase]:
    labels = list(sizes) if sizes else list(DEFAULT_WORKLOADS)
    for label in labels:
        if label not in WORKLOADS:
            raise ValueError(f"unknown lowrank workload {label!r}; known: {', '.join(WORKLOADS)}")
    out: list[BenchCase] = []
    for label in labels:
        out.extend(workload_cases(label, device))
    return out


def workload_cases(
    label: str, device: torch.device, buffer_dtype: torch.dtype = torch.float32
) -> list[BenchCase]:
    p, r = WORKLOADS[label]
    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(p, generator=generator).to(device)
    traffic = _bytes(p, r, torch.empty((), dtype=buffer_dtype).element_size())

    param = torch.zeros(p, device=device, requires_grad=True)
    param.grad = grad
    opt = LowRankFisher([param], rank=r, buffer_dtype=buffer_dtype, **HYPER)
    opt.step()
    _full_window(opt, param, generator)
    state = opt.state[param]
    window, exp_avg, exp_avg_sq = state[WINDOW], state["exp_avg"], state["exp_avg_sq"]
    coef = torch.randn(r + 1, generator=generator, dtype=torch.float64).to(device) * 1e-6

    baseline_param = torch.zeros(p, device=device)
    plain = PlainTorchLowRank(baseline_param, r, buffer_dtype)
    plain.fill(generator)

    adam_param = torch.zeros(p, device=device, requires_grad=True)
    adam_param.grad = grad
    adamw = torch.optim.AdamW([adam_param], lr=1e-3)
    adamw.step()

    tag = label if buffer_dtype == torch.float32 else f"{label}-bf16"
    return [
        BenchCase("lowrank", "step", tag, "fisherprec", opt.step, traffic["step"]),
        BenchCase("lowrank", "step", tag, "torch-plain-lowrank", lambda: plain.step(grad)),
        BenchCase("lowrank", "step", tag, "torch-adamw", adamw.step),
        BenchCase(
            "lowrank",
            "update",
            tag,
            "fisherprec",
            lambda: ops.lowrank_stats(
                [grad], [exp_avg], [exp_avg_sq], window, r, 0, beta1=0.9, beta2=0.999
            ),
            traffic["update"],
        ),
        BenchCase(
            "lowrank",
            "apply",
            tag,
            "fisherprec",
            lambda: ops.lowrank_combine([param.detach()], [exp_avg], window, r, coef, 1.0),
            traffic["apply"],
        ),
    ]


def report(
    labels: Sequence[str],
    device: torch.device | str = "cpu",
    buffer_dtype: torch.dtype = torch.float32,
    **timing: Any,
) -> list[dict]:
    """Median times, ratios (plain torch / fisherprec, AdamW / fisherprec) and
    achieved bandwidth of the passes against ``axpy_bandwidth`` measured in the
    same run; one workload's state is freed before the next is built."""
    device = torch.device(device)
    timing = {"min_seconds": 0.3, "min_repeats": 3, "max_repeats": 20} | timing
    rows = []
    for label in labels:
        cases_ = workload_cases(label, device, buffer_dtype)
        axpy = axpy_bandwidth(device)
        times = {
            (c.op, c.impl): statistics.median(time_call(c.run, device, **timing)) for c in cases_
        }
        nbytes = {(c.op, c.impl): c.bytes_per_call for c in cases_}
        row = {"workload": cases_[0].workload, "axpy_GBps": axpy / 1e9}
        for (op, impl), seconds in times.items():
            row[f"{op}/{impl}_ms"] = seconds * 1e3
            if nbytes[(op, impl)]:
                row[f"{op}/{impl}_bw_frac"] = nbytes[(op, impl)] / seconds / axpy
        step = times[("step", "fisherprec")]
        row["speedup_vs_plain_torch"] = times[("step", "torch-plain-lowrank")] / step
        row["time_vs_adamw"] = step / times[("step", "torch-adamw")]
        rows.append(row)
        del cases_
    return rows


def gpu_check_lowrank(
    device: torch.device | str = "cuda", workloads: Sequence[str] = ("1e6-r32", "1e7-r32")
) -> dict[str, Any]:
    """CUDA kernels against the CPU kernels on the same inputs (every window
    dtype, multi-tensor, odd sizes, more tensors than one launch holds), then
    the step timing and bandwidth on the device for `workloads` (see
    ``report``). Returns a dict of maximum relative errors and timings; raises
    AssertionError when a kernel disagrees with the CPU."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(1)
    sizes = [1, 8191, 8193, 70_001, 0, 3] + [5, 17] * 25  # > 40 tensors: two launches
    p = sum(sizes)
    result: dict[str, Any] = {}

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.double().cpu(), b.double().cpu()
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

    def split(flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.clone() for t in torch.split(flat, sizes)]

    for wdtype in ops.LOWRANK_WINDOW_DTYPES:
        name = str(wdtype).removeprefix("torch.")
        cpu_window = torch.randn(9, p, generator=generator).to(wdtype)
        gpu_window = cpu_window.to(device, copy=True)
        x = torch.randn(p, generator=generator)
        errs = [
            rel(
                ops.lowrank_dots(gpu_window, 9, split(x.to(device))),
                ops.lowrank_dots(cpu_window, 9, split(x)),
            )
        ]
        errs.append(
            rel(
                ops.lowrank_insert(gpu_window, 4, 7, split(x.to(device))),
                ops.lowrank_insert(cpu_window, 4, 7, split(x)),
            )
        )
        assert torch.equal(gpu_window.cpu(), cpu_window), f"insert differs ({name})"
        m_cpu, v_cpu = (
            split(torch.randn(p, generator=generator)),
            split(torch.rand(p, generator=generator)),
        )
        m_gpu = [t.to(device, copy=True) for t in m_cpu]
        v_gpu = [t.to(device, copy=True) for t in v_cpu]
        kw = {"beta1": 0.9, "beta2": 0.99, "bias_correction2": 0.5, "eps": 1e-8, "maximize": True}
        s_gpu = ops.lowrank_stats(split(x.to(device)), m_gpu, v_gpu, gpu_window, 9, 2, **kw)
        s_cpu = ops.lowrank_stats(split(x), m_cpu, v_cpu, cpu_window, 9, 2, **kw)
        errs.append(rel(s_gpu, s_cpu))
        errs.append(rel(torch.cat(m_gpu), torch.cat(m_cpu)))
        errs.append(rel(torch.cat(v_gpu), torch.cat(v_cpu)))
        assert torch.equal(gpu_window.cpu(), cpu_window), f"stats insert differs ({name})"
        coef = torch.randn(10, generator=generator, dtype=torch.float64)
        y_cpu = split(torch.randn(p, generator=generator))
        y_gpu = [t.to(device, copy=True) for t in y_cpu]
        ops.lowrank_combine(y_gpu, m_gpu, gpu_window, 9, coef.to(device), 0.9)
        ops.lowrank_combine(y_cpu, m_cpu, cpu_window, 9, coef, 0.9)
        errs.append(rel(torch.cat(y_gpu), torch.cat(y_cpu)))
        result[f"max_rel_err_{name}"] = max(errs)
        assert max(errs) < 1e-5, f"CUDA lowrank kernels disagree with the CPU ({name}): {errs}"
    synchronize(device)
    for label in workloads:
        row = report([label], device)[0]
        result.update({f"{label}/{k}": v for k, v in row.items() if k != "workload"})
    return result


__all__ = [
    "WORKLOADS",
    "PlainTorchLowRank",
    "cases",
    "gpu_check_lowrank",
    "report",
    "workload_cases",
]
