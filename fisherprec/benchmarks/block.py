"""Block-diagonal Fisher microbenchmarks: the batched inverse root against
torch.linalg.eigh, the fused apply against torch.bmm, and the whole
BlockFisher step against torch's AdamW.

Sizes are parameter counts: ``"4M"`` (4,194,304, the issue's workload),
``"256K"`` (the default) and ``"32K"`` (quick). Workloads per block size b:

- ``inv_root``, ``<size>-b<b>``: the native root over all ceil(P/b) blocks;
- ``inv_root``, ``<size>-b<b>-subset<N>``: the native root *and*
  torch.linalg.eigh on the same N blocks. torch's CPU eigh is a serial loop
  (~100 µs per 32×32 block here, i.e. seconds per refresh at 4M), so it is
  timed on a subset; both scale linearly in the number of blocks, and the
  subset ratio is the speed-up (``root_speedups`` extrapolates to the full size);
- ``apply``, ``<size>-b<b>``: the fused step kernel (R_b m_b, graft norms,
  weight decay, θ update) against torch.bmm(R, m) alone;
- ``step``, ``<size>-b64``: one BlockFisher step without a root refresh
  (outer-product EMA + fused apply) against AdamW(fused=True, else foreach).

``gpu_check_block(device)`` compares the CUDA kernels with the CPU ones and
times the root against torch.linalg.eigh on the GPU.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from fisherprec import ops
from fisherprec.benchmarks import BenchCase, register, time_call

SIZES = {"4M": 1 << 22, "256K": 1 << 18, "32K": 1 << 15}
DEFAULT_SIZES = ("256K",)
BLOCK_SIZES = (16, 32, 64, 128)


def eigh_subset(block_size: int, num_blocks: int) -> int:
    """Blocks torch.linalg.eigh is timed on: ~0.1 s of its serial loop."""
    return min(num_blocks, max(16, 4096 * 16 * 16 // (block_size * block_size)))


def fisher_like_blocks(
    count: int, block_size: int, device: torch.device, *, seed: int = 0
) -> torch.Tensor:
    """(count, b, b) float32 Fisher-like blocks: rank b/4 Gram matrices + 1e-4·I
    (condition ~1e4), as the EMA of a few gradients produces."""
    g = torch.Generator().manual_seed(seed)
    rank = max(1, block_size // 4)
    out = torch.empty(count, block_size, block_size)
    for start in range(0, count, 4096):  # bounded temporaries
        x = torch.randn(min(4096, count - start), block_size, rank, generator=g)
        out[start : start + x.shape[0]] = x @ x.transpose(1, 2) / rank
    out += 1e-4 * torch.eye(block_size)
    return out.to(device)


def _labels(sizes: Sequence[str] | None) -> list[str]:
    labels = list(sizes) if sizes else list(DEFAULT_SIZES)
    for label in labels:
        if label not in SIZES:
            raise ValueError(f"unknown block benchmark size {label!r}; known: {', '.join(SIZES)}")
    return labels


def _root_runner(states: torch.Tensor, block_size: int):
    roots = torch.empty_like(states)
    status = torch.empty(states.shape[0], dtype=torch.int32, device=states.device)
    numel = states.shape[0] * block_size

    def run() -> None:
        ops.block_inv_root_([states], [roots], [status], [numel], block_size, damping=1e-8)

    return run


def _root_cases(label: str, device: torch.device) -> list[BenchCase]:
    cases = []
    for b in BLOCK_SIZES:
        n = SIZES[label] // b
        states = fisher_like_blocks(n, b, device)
        cases.append(
            BenchCase("block", "inv_root", f"{label}-b{b}", "fisherprec", _root_runner(states, b))
        )
        k = eigh_subset(b, n)
        subset = states[:k].contiguous()
        workload = f"{label}-b{b}-subset{k}"
        cases.append(
            BenchCase("block", "inv_root", workload, "fisherprec", _root_runner(subset, b))
        )
        cases.append(
            BenchCase(
                "block", "inv_root", workload, "torch-eigh", lambda s=subset: torch.linalg.eigh(s)
            )
        )
    return cases


def _step_inputs(numel: int, b: int, device: torch.device, *, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    nb = ops.block_shape(numel, b)[0]
    param = torch.randn(numel, generator=g).to(device, dtype)
    grad = torch.randn(numel, generator=g).to(device, dtype)
    m = torch.zeros(numel, device=device)
    v = torch.zeros(numel, device=device)
    roots = torch.randn(nb, b, b, generator=g).to(device) * 0.01
    status = torch.zeros(nb, dtype=torch.int32, device=device)
    return param, grad, m, v, roots, status


def _apply_cases(label: str, device: torch.device) -> list[BenchCase]:
    cases = []
    numel = SIZES[label]
    for b in BLOCK_SIZES:
        param, grad, m, v, roots, status = _step_inputs(numel, b, device)
        scalars = {
            "beta1": 0.9,
            "beta2": 0.999,
            "step_size": 1e-3,
            "inv_c2_root": 1.0,
            "eps": 1e-8,
            "decay": 1.0,
        }

        def fused(p=param, g=grad, m=m, v=v, r=roots, s=status, b=b, kw=scalars) -> None:
            ops.block_fisher_step_([p], [g], [m], [v], [r], [s], block_size=b, **kw)

        m3 = m.reshape(-1, b, 1)
        out = torch.empty_like(m3)
        # R (b² floats per block) dominates the traffic: 4·numel·b bytes plus θ, g, m, v.
        traffic = 4 * numel * b + 4 * numel * 4 + 2 * 4 * numel
        workload = f"{label}-b{b}"
        cases.append(BenchCase("block", "apply", workload, "fisherprec", fused, traffic))
        cases.append(
            BenchCase(
                "block",
                "apply",
                workload,
                "torch-bmm",
                lambda r=roots, m3=m3, out=out: torch.bmm(r, m3, out=out),
                4 * numel * b + 8 * numel,
            )
        )
    return cases


def _step_cases(label: str, device: torch.device) -> list[BenchCase]:
    from fisherprec.optim import BlockFisher  # the optimizer imports the benchmark-free core

    numel, b = SIZES[label], 64
    g = torch.Generator().manual_seed(2)
    ours = torch.nn.Parameter(torch.randn(numel, generator=g).to(device))
    ours.grad = torch.randn(numel, generator=g).to(device)
    base = torch.nn.Parameter(ours.detach().clone())
    base.grad = ours.grad.clone()
    # update_every huge: the timed steps never refresh roots (inv_root is timed apart).
    opt = BlockFisher([ours], lr=1e-4, block_size=b, update_every=1 << 30)
    try:
        adamw = torch.optim.AdamW([base], lr=1e-4, fused=True)
        adamw.step()
        name = "torch-adamw-fused"
    except (RuntimeError, TypeError):
        adamw = torch.optim.AdamW([base], lr=1e-4, foreach=True)
        name = "torch-adamw-foreach"
    workload = f"{label}-b{b}"
    return [
        BenchCase("block", "step", workload, "fisherprec", opt.step, (2 * 4 * b + 5 * 4) * numel),
        BenchCase("block", "step", workload, name, adamw.step, 5 * 4 * numel),
    ]


@register("block")
def cases(sizes: Sequence[str] | None, device: torch.device) -> list[BenchCase]:
    out: list[BenchCase] = []
    for label in _labels(sizes):
        out += _root_cases(label, device)
        out += _apply_cases(label, device)
        out += _step_cases(label, device)
    return out


def root_speedups(
    sizes: Sequence[str] | None = None, device: torch.device | str = "cpu", *, min_seconds=0.2
) -> list[dict[str, Any]]:
    """Per block size: µs per block of the native root and of torch.linalg.eigh
    (timed on the same subset), the ratio, and both extrapolated to the full size."""
    device = torch.device(device)
    rows = []
    for label in _labels(sizes):
        for b in BLOCK_SIZES:
            n = SIZES[label] // b
            k = eigh_subset(b, n)
            subset = fisher_like_blocks(k, b, device)
            ours = statistics.median(
                time_call(_root_runner(subset, b), device, min_seconds=min_seconds)
            )
            eigh = statistics.median(
                time_call(lambda s=subset: torch.linalg.eigh(s), device, min_seconds=min_seconds)
            )
            rows.append(
                {
                    "size": label,
                    "block_size": b,
                    "blocks": n,
                    "subset": k,
                    "fisherprec_us_per_block": ours / k * 1e6,
                    "eigh_us_per_block": eigh / k * 1e6,
                    "speedup": eigh / ours,
                    "fisherprec_full_s": ours / k * n,
                    "eigh_full_s_extrapolated": eigh / k * n,
                }
            )
    return rows


# ----------------------------------------------------------------- GPU check
def gpu_check_block(
    device: torch.device | str = "cuda",
    *,
    num_params: int = SIZES["256K"],
    min_seconds: float = 0.2,
) -> dict[str, Any]:
    """CUDA block kernels against the CPU ones, and the root's speed against
    torch.linalg.eigh on the GPU (on ``num_params // b`` Fisher-like blocks per
    block size b). Returns a dict of errors and timings; raises AssertionError
    when a kernel disagrees with the CPU beyond its tolerance. ``device="cpu"``
    runs the same code against itself (a smoke test of this function)."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    report: dict[str, Any] = {"device": name}
    g = torch.Generator().manual_seed(0)

    # outer-product EMA, rank 3, tail block
    numel, b = 1000, 64
    rows = torch.randn(3, numel, generator=g)
    state_cpu = torch.zeros(ops.block_shape(numel, b))
    ops.block_outer_update_([state_cpu], [rows], b, 0.0, 1.0)
    state_gpu = torch.zeros_like(state_cpu, device=device)
    ops.block_outer_update_([state_gpu], [rows.to(device)], b, 0.0, 1.0)
    err = float((state_gpu.cpu() - state_cpu).abs().max() / state_cpu.abs().max())
    report["outer_update_rel_err"] = err
    assert err < 1e-5, f"block_outer_update: CUDA vs CPU relative error {err:.3g}"

    # inverse root, every block size, plus a timing against eigh on the GPU
    for bs in BLOCK_SIZES:
        n = num_params // bs  # many blocks: the GPU needs them to fill up
        states = fisher_like_blocks(n, bs, torch.device("cpu"))
        gpu_states = states.to(device)
        r_cpu = torch.empty_like(states)
        s_cpu = torch.empty(n, dtype=torch.int32)
        ops.block_inv_root_([states], [r_cpu], [s_cpu], [n * bs], bs, damping=1e-8)
        r_gpu = torch.empty_like(gpu_states)
        s_gpu = torch.empty(n, dtype=torch.int32, device=device)
        ops.block_inv_root_([gpu_states], [r_gpu], [s_gpu], [n * bs], bs, damping=1e-8)
        err = float(
            ((r_gpu.cpu() - r_cpu).abs().amax(dim=(1, 2)) / r_cpu.abs().amax(dim=(1, 2))).max()
        )
        assert torch.equal(s_gpu.cpu(), s_cpu), f"inv_root b={bs}: status differs"
        assert err < 1e-5, f"inv_root b={bs}: CUDA vs CPU relative error {err:.3g}"
        ours = statistics.median(
            time_call(_root_runner(gpu_states, bs), device, min_seconds=min_seconds)
        )
        eigh = statistics.median(
            time_call(lambda s=gpu_states: torch.linalg.eigh(s), device, min_seconds=min_seconds)
        )
        report[f"inv_root_b{bs}"] = {
            "blocks": n,
            "rel_err_vs_cpu": err,
            "fisherprec_us_per_block": ours / n * 1e6,
            "eigh_us_per_block": eigh / n * 1e6,
            "speedup": eigh / ours,
        }

    # fused step, graft on, mixed statuses, tail block
    numel, b = 3000, 64
    param, grad, m, v, roots, status = _step_inputs(numel, b, torch.device("cpu"))
    roots = roots + roots.transpose(1, 2)
    status[::3] = ops.ROOT_NONE
    gpu = [t.to(device) for t in (param, grad, m, v, roots, status)]
    scalars = {
        "block_size": b,
        "beta1": 0.9,
        "beta2": 0.999,
        "step_size": 1e-2,
        "inv_c2_root": 10.0,
        "eps": 1e-8,
        "decay": 0.999,
    }
    ops.block_fisher_step_([param], [grad], [m], [v], [roots], [status], **scalars)
    ops.block_fisher_step_([gpu[0]], [gpu[1]], [gpu[2]], [gpu[3]], [gpu[4]], [gpu[5]], **scalars)
    err = float((gpu[0].cpu() - param).abs().max() / param.abs().max())
    report["fused_step_rel_err"] = err
    assert err < 1e-5 and math.isfinite(err), f"block_fisher_step: CUDA vs CPU error {err:.3g}"
    return report
