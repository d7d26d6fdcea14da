"""One prepared script for a lent GPU: build with CUDA, check the CUDA kernels
against the CPU kernels, time them against torch, print one JSON summary.

    python bench/gpu_check.py                # build into build/gpu-check, check, time
    python bench/gpu_check.py --no-build     # use the fisherprec already importable
    python bench/gpu_check.py --quick        # small timing shapes only

Needs a Python with a CUDA build of torch (and scikit-build-core + pybind11
for the build: it runs ``pip install --no-build-isolation``, so no network is
needed). Without a CUDA device it runs its CPU-side parts (the same checks
with the CPU kernel standing in for the GPU) and exits with status 2 and a
clear message. The JSON goes to stdout and, when $OUT is set, to
$OUT/gpu_check.json.

Kernel families add their checks with ``@check`` (correctness, run first,
cheap) and ``@timing`` (speed); each takes a context dict and returns a
JSON-able dict. One failing check does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
Check = Callable[[dict[str, Any]], dict[str, Any]]
CHECKS: list[Check] = []
TIMINGS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def timing(fn: Check) -> Check:
    TIMINGS.append(fn)
    return fn


# ------------------------------------------------------------------ build
def build(target: Path) -> dict[str, Any]:
    """pip-install the package with FISHERPREC_CUDA=ON into `target` (a plain
    directory put first on sys.path: the checkout stays untouched)."""
    cmd = [
        sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
        "--target", str(target), "--upgrade",
        f"-Cbuild-dir={target.parent / 'build'}", "-Ccmake.define.FISHERPREC_CUDA=ON",
        str(ROOT),
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    result = {"seconds": round(time.perf_counter() - start, 1), "returncode": proc.returncode}
    if proc.returncode:
        result["log_tail"] = (proc.stdout + proc.stderr)[-4000:]
    return result


# ------------------------------------------------------------- helpers
def _device(ctx: dict[str, Any]):
    import torch

    return torch.device("cuda", 0) if ctx["cuda"] else torch.device("cpu")


def _max_rel(a, b) -> float:
    import torch

    a, b = a.double(), b.double()
    finite = torch.isfinite(b)
    scale = b[finite].abs().max().clamp_min(1e-30) if finite.any() else 1.0
    return float(((a - b)[finite]).abs().max() / scale) if finite.any() else 0.0


def _cuda_time(run: Callable[[], object], ctx: dict[str, Any], repeats: int = 20) -> float:
    """Median seconds per call (CUDA events on the GPU, wall clock on the CPU)."""
    import torch

    run()
    if not ctx["cuda"]:
        times = []
        for _ in range(max(3, repeats // 4)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        run()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
    return statistics.median(times)


# -------------------------------------------------------------- diag
DIAG_SIZES = [1, 7, 4097, 65535, 65537, 1_000_003]


def _diag_bucket(dtype, device, generator, offset: int = 0):
    import torch

    out: list[list[torch.Tensor]] = [[], [], [], []]
    # Without a GPU (CPU standing in) the largest size only costs time.
    sizes = DIAG_SIZES if device.type == "cuda" else DIAG_SIZES[:-1]
    for n in sizes:
        # `offset` elements in front: misaligned starts exercise the scalar path.
        p = torch.randn(n + offset, generator=generator).to(dtype)[offset:]
        g = torch.randn(n + offset, generator=generator).to(dtype)[offset:]
        m = (0.1 * torch.randn(n + offset, generator=generator))[offset:]
        v = (0.01 * torch.rand(n + offset, generator=generator))[offset:]
        for lst, t in zip(out, (p, g, m, v), strict=True):
            lst.append(t.to(device))
    return out


@check
def diag_step_matches_cpu(ctx: dict[str, Any]) -> dict[str, Any]:
    """The CUDA step against the CPU kernel on the same inputs: fp32/bf16/fp16,
    odd sizes, aligned and misaligned starts, several hyper-parameter sets."""
    import torch

    from fisherprec import ops

    device = _device(ctx)
    results: dict[str, Any] = {}
    worst = 0.0
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for offset in (0, 1):
            for hyper in (
                {"lr": 1e-2, "weight_decay": 0.1, "step": 3.0},
                {"lr": 1e-2, "power": 1.0, "eps": 1e-3, "maximize": True, "step": 1.0},
                {"lr": 1e-2, "beta1": 0.0, "beta2": 0.99, "bias_correction": False, "step": 5.0},
            ):
                gen = torch.Generator().manual_seed(0)
                gpu = _diag_bucket(dtype, device, gen, offset)
                cpu = [[t.cpu().clone() for t in lst] for lst in gpu]
                ops.diag_step_(*gpu, **hyper)
                ops.diag_step_(*cpu, **hyper)
                if ctx["cuda"]:
                    torch.cuda.synchronize()
                # GPUs contract a*b+c into FMAs: allow float32 rounding on the
                # moments and one final rounding (plus that) on the parameters.
                m_err = max(_max_rel(a.cpu(), b) for a, b in zip(gpu[2], cpu[2], strict=True))
                v_err = max(_max_rel(a.cpu(), b) for a, b in zip(gpu[3], cpu[3], strict=True))
                p_err = max(_max_rel(a.cpu(), b) for a, b in zip(gpu[0], cpu[0], strict=True))
                key = f"{str(dtype).removeprefix('torch.')}/offset{offset}/{'+'.join(hyper)}"
                results[key] = {"p": p_err, "m": m_err, "v": v_err}
                unit = {torch.float32: 2**-23, torch.bfloat16: 2**-7, torch.float16: 2**-10}[dtype]
                worst = max(worst, m_err / 1e-5, v_err / 1e-5, p_err / max(unit, 1e-5))
    return {"ok": worst <= 1.0, "worst_over_tolerance": worst, "cases": results}


@check
def diag_fisher_update_matches_cpu(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    from fisherprec import ops

    device = _device(ctx)
    gen = torch.Generator().manual_seed(1)
    errors = {}
    for gdtype in (torch.float32, torch.bfloat16, torch.float64):
        for sdtype in (torch.float32, torch.float64):
            n = 100_003 if ctx["cuda"] else 1_003
            grads = torch.randn(33, n, generator=gen).to(gdtype)
            state = torch.rand(n, generator=gen).to(sdtype)
            a, b = state.to(device), state.clone()
            ops.diag_fisher_update_(a, grads.to(device), old_weight=0.9, new_weight=0.1 / 33)
            ops.diag_fisher_update_(b, grads, old_weight=0.9, new_weight=0.1 / 33)
            errors[f"{gdtype}->{sdtype}".replace("torch.", "")] = _max_rel(a.cpu(), b)
    worst = max(errors.values())
    return {"ok": worst <= 1e-6, "max_rel": errors}


@check
def diag_step_follows_torch_stream(ctx: dict[str, Any]) -> dict[str, Any]:
    """BUILD-NOTES' open question: the module links the CUDA runtime
    statically; do its launches on torch's current-stream handle order
    correctly after torch's own work on a side stream?"""
    import torch

    from fisherprec import ops

    if not ctx["cuda"]:
        return {"ok": True, "skipped": "needs a CUDA device"}
    device = _device(ctx)
    n = 1 << 26
    side = torch.cuda.Stream(device)
    p, m, v = (torch.zeros(n, device=device) for _ in range(3))
    g = torch.zeros(n, device=device)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # keep the stream busy so a race would show
        g.fill_(1.0)  # queued behind the sleep on the same stream
        ops.diag_step_(
            [p], [g], [m], [v], lr=0.5, beta1=0.0, eps=0.0, bias_correction=False, step=1
        )
    side.synchronize()
    # With g = 1: m = 1, v = 1e-3, θ = −0.5 / sqrt(1e-3).
    want = -0.5 / (1e-3) ** 0.5
    ok = bool(torch.allclose(p, torch.full_like(p, want), rtol=1e-5))
    return {"ok": ok, "value": float(p[0]), "expected": want}


@timing
def diag_step_vs_torch_fused(ctx: dict[str, Any]) -> dict[str, Any]:
    """Step time of DiagFisher vs torch AdamW fused=True / foreach=True, and
    achieved bandwidth vs a device-to-device copy measured now."""
    import torch

    from fisherprec.benchmarks import collect

    device = _device(ctx)
    n = 1 << 26
    buffers = [torch.empty(n, device=device), torch.empty(n, device=device)]
    copy_bw = 8 * n / _cuda_time(lambda: buffers[0].copy_(buffers[1]), ctx)
    buffers.clear()
    labels = ["1e6-fp32", "1e6-bf16", "gpt2-tiny"] if ctx["quick"] or not ctx["cuda"] else None
    labels = labels or ["1e8-fp32", "gpt2-124m", "200x5k", "1e8-bf16"]
    out: dict[str, Any] = {"copy_GBps": copy_bw / 1e9, "workloads": {}}
    for label in labels:
        cases = collect(["diag"], [label], device)
        secs = {c.impl: _cuda_time(c.run, ctx) for c in cases}
        ours = next(c for c in cases if c.impl == "fisherprec")
        out["workloads"][label] = {
            "ms": {k: round(v * 1e3, 4) for k, v in secs.items()},
            "ratio_vs_fused": secs["fisherprec"] / secs["torch-adamw-fused"],
            "ratio_vs_foreach": secs["fisherprec"] / secs["torch-adamw-foreach"],
            "GBps": ours.bytes_per_call / secs["fisherprec"] / 1e9,
            "of_copy_bandwidth": ours.bytes_per_call / secs["fisherprec"] / copy_bw,
        }
        del cases
        if ctx["cuda"]:
            torch.cuda.empty_cache()
    return out


# ------------------------------------------------- block and low-rank variants
# Each variant keeps its GPU check beside its benchmark cases
# (fisherprec/benchmarks/<variant>.py): CUDA kernels against the CPU ones
# (AssertionError on disagreement) and timings against torch on the GPU.
def _variant_check(variant: str, ctx: dict[str, Any]) -> dict[str, Any]:
    import importlib

    if not ctx["cuda"]:
        return {"ok": True, "skipped": "no CUDA device"}
    module = importlib.import_module(f"fisherprec.benchmarks.{variant}")
    return {"ok": True, **getattr(module, f"gpu_check_{variant}")("cuda")}


@check
def block_kernels_on_gpu(ctx: dict[str, Any]) -> dict[str, Any]:
    return _variant_check("block", ctx)


@check
def lowrank_kernels_on_gpu(ctx: dict[str, Any]) -> dict[str, Any]:
    return _variant_check("lowrank", ctx)


@check
def eigh_kernel_on_gpu(ctx: dict[str, Any]) -> dict[str, Any]:
    return _variant_check("eigh", ctx)


# ----------------------------------------------------------------- main
def run_all(fns: list[Check], ctx: dict[str, Any]) -> dict[str, Any]:
    results = {}
    for fn in fns:
        start = time.perf_counter()
        try:
            results[fn.__name__] = fn(ctx)
        except Exception as err:  # report, keep going
            results[fn.__name__] = {
                "ok": False,
                "error": repr(err),
                "trace": traceback.format_exc()[-2000:],
            }
        results[fn.__name__]["seconds"] = round(time.perf_counter() - start, 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fisherprec GPU check")
    parser.add_argument("--no-build", action="store_true", help="use the importable fisherprec")
    parser.add_argument("--build-root", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--quick", action="store_true", help="small timing shapes")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args(argv)

    summary: dict[str, Any] = {"python": sys.version.split()[0]}
    if not args.no_build:
        root = args.build_root or Path(tempfile.mkdtemp(prefix="fisherprec-gpu-"))
        target = root / "site"
        summary["build"] = build(target)
        if summary["build"]["returncode"]:
            return _finish(summary, 1, "the CUDA build failed (see build.log_tail)")
        sys.path.insert(0, str(target))

    import torch

    import fisherprec

    info = fisherprec.build_info()
    summary["fisherprec_path"] = str(Path(fisherprec.__file__).parent)
    if not args.no_build and not summary["fisherprec_path"].startswith(str(target)):
        # An editable install's import hook wins over sys.path (BUILD-NOTES).
        return _finish(
            summary,
            1,
            "imported a fisherprec other than the fresh build: use a venv without an editable install",
        )
    summary["fisherprec"] = {k: info[k] for k in ("version", "cuda_built", "cuda_archs", "threads")}
    summary["torch"] = torch.__version__
    cuda = bool(info["cuda_available"])
    if cuda:
        props = torch.cuda.get_device_properties(0)
        summary["device"] = {"name": props.name, "memory_GiB": round(props.total_memory / 2**30, 1)}
    ctx = {"cuda": cuda, "quick": args.quick}
    summary["checks"] = run_all(CHECKS, ctx)
    if not args.skip_timing:
        summary["timings"] = run_all(TIMINGS, ctx)
    ok = all(r.get("ok", True) for r in summary["checks"].values())
    if not cuda:
        reason = info["cuda_unavailable_reason"] or f"torch {torch.__version__} sees no CUDA device"
        return _finish(summary, 2, f"no CUDA device ({reason}): ran the CPU-side parts only")
    return _finish(summary, 0 if ok else 1, "all checks passed" if ok else "some checks FAILED")


def _finish(summary: dict[str, Any], status: int, message: str) -> int:
    summary["status"], summary["message"] = status, message
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text)
    print(f"gpu_check: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
