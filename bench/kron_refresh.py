"""KronFisher's basis refresh: eigh against one QR power-iteration step, on time
and on quality, plus the step-time ratio against AdamW and the state size.

    nice -n 10 python bench/kron_refresh.py [--width 1024] [--rounds 5] [--seeds 3]

1. Step: one ``KronFisher.step`` (defaults, no refresh) against
   ``torch.optim.AdamW`` on 4 × (width × width + bias), interleaved rounds.
2. Refresh cost: ``_refresh_all`` (every weight of that model) after a few steps,
   ``refresh="qr"`` against ``refresh="eigh"`` (median of rounds).
3. Quality: a 64→256→256→10 GELU MLP on a classification task with inputs
   scaled over three decades, 300 steps of batch 256, update_every=10, per
   seed: final full-batch loss and training time for each refresh, and AdamW.
4. Memory: float32 numbers per parameter at GPT-2-small shapes (analytic).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from fisherprec.benchmarks.kron import mlp_params
from fisherprec.optim import KronFisher
from fisherprec.optim.kron import state_bytes

GPT2_SMALL = {
    (50257, 768): 1,
    (1024, 768): 1,
    (768, 2304): 12,
    (768, 768): 12,
    (768, 3072): 12,
    (3072, 768): 12,
    (2304,): 12,
    (3072,): 12,
    (768,): 74,
}


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def step_ratio(width: int, rounds: int) -> dict[str, float]:
    ours, base = mlp_params(width, torch.device("cpu")), mlp_params(width, torch.device("cpu"))
    opt = KronFisher(ours, lr=1e-4, update_every=1 << 30)
    kron = KronFisher(mlp_params(width, torch.device("cpu")), lr=1e-4, mode="kron",
                      update_every=1 << 30)  # fmt: skip
    adamw = torch.optim.AdamW(base, lr=1e-4, fused=True)
    for o in (opt, kron, adamw):
        o.step()  # first refresh and warm-up
    times: dict[str, list[float]] = {"eigen": [], "kron": [], "adamw": []}
    for _ in range(rounds):
        times["eigen"].append(_timed(opt.step))
        times["kron"].append(_timed(kron.step))
        times["adamw"].append(min(_timed(adamw.step) for _ in range(5)))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "eigen_ms": med["eigen"] * 1e3,
        "kron_ms": med["kron"] * 1e3,
        "adamw_ms": med["adamw"] * 1e3,
        "eigen_over_adamw": med["eigen"] / med["adamw"],
        "kron_over_adamw": med["kron"] / med["adamw"],
    }


def refresh_cost(width: int, rounds: int) -> dict[str, float]:
    out = {}
    for refresh in ("qr", "eigh"):
        params = mlp_params(width, torch.device("cpu"))
        opt = KronFisher(params, lr=1e-4, update_every=1 << 30, refresh=refresh)
        g = torch.Generator().manual_seed(3)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        # Every weight's bases, as a step due to refresh does (decompositions
        # side by side on one-threaded LAPACK, then the reprojections).
        out[f"{refresh}_s"] = statistics.median(_timed(opt._refresh_all) for _ in range(rounds))
    out["qr_over_eigh"] = out["qr_s"] / out["eigh_s"]
    return out


def _task(seed: int):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -3, 64)
    x = torch.randn(2048, 64, generator=g) * scales
    w = torch.randn(64, 10, generator=g) / scales.sqrt()[:, None]
    y = (torch.tanh(x @ w) @ torch.randn(10, 10, generator=g)).argmax(1)
    return x, y


def quality(seeds: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"eigh": [], "qr": [], "adamw": []}
    for seed in range(seeds):
        for name in results:
            x, y = _task(seed)
            torch.manual_seed(seed)
            model = torch.nn.Sequential(
                torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 256),
                torch.nn.GELU(), torch.nn.Linear(256, 10),
            )  # fmt: skip
            if name == "adamw":
                opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
            else:
                opt = KronFisher(model.parameters(), lr=3e-3, refresh=name, update_every=10)
            batches = torch.Generator().manual_seed(100 + seed)
            start = time.perf_counter()
            for _ in range(300):
                idx = torch.randint(0, 2048, (256,), generator=batches)
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            elapsed = time.perf_counter() - start
            with torch.no_grad():
                loss = float(torch.nn.functional.cross_entropy(model(x), y))
            results[name].append((loss, elapsed))
            print(
                f"  quality seed {seed} {name:5s} loss {loss:.4f} time {elapsed:.2f} s", flush=True
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} width={args.width} rounds={args.rounds}", flush=True)
    print("step:", {k: round(v, 3) for k, v in step_ratio(args.width, args.rounds).items()})
    print("refresh:", {k: round(v, 3) for k, v in refresh_cost(args.width, args.rounds).items()})
    for name, rows in quality(args.seeds).items():
        loss = statistics.mean(r[0] for r in rows)
        seconds = statistics.mean(r[1] for r in rows)
        print(f"quality {name:5s}: mean final loss {loss:.4f}, mean time {seconds:.2f} s")
    numel = sum(math.prod(s) * k for s, k in GPT2_SMALL.items())
    total = sum(state_bytes(s) * k for s, k in GPT2_SMALL.items())
    print(f"memory: GPT-2 small {numel} parameters, {total / 4 / numel:.3f} floats/param")
    return 0


if __name__ == "__main__":
    sys.exit(main())
