"""The full training step of the ``gpt`` task (4 pre-norm layers, width 128,
context 128, 16 × 128 tokens per step) per optimizer: forward + backward, then
``optimizer.step()``, with the registry's defaults for each optimizer.

    python bench/kron_gpt_step.py [adamw kron ...] [--steps 45] [--warmup 5]
    python bench/kron_gpt_step.py adamw kron kron --kwargs '{}' '{}' '{"update_every": 20}'

Per optimizer: the median forward + backward time, the median and the mean
``step()`` time over the steps after the warm-up (KronFisher's mean includes
its refreshes, one step in ``update_every``), and the full step (forward +
backward + mean step) over that of the first optimizer named. Run it several
times with ``uptime`` beside it: on a shared machine the load moves every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from fisherprec import compare
from fisherprec.tasks.registry import get as get_task


def measure(name: str, steps: int, warmup: int, kwargs: dict | None = None) -> dict[str, float]:
    entry = compare.resolve_optimizer(name, kwargs)
    problem = get_task("gpt").make(10000, torch.device("cpu"))
    opt = entry.factory(problem.model.parameters(), **entry.defaults)
    forward_backward, step = [], []
    for i in range(steps):
        x, y = problem.batch()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        problem.loss(problem.model(x), y).backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if i >= warmup:
            forward_backward.append(t1 - t0)
            step.append(t2 - t1)
    return {
        "fwd_bwd_ms": 1e3 * statistics.median(forward_backward),
        "step_median_ms": 1e3 * statistics.median(step),
        "step_mean_ms": 1e3 * statistics.fmean(step),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("optimizers", nargs="*", default=["adamw", "kron"])
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--kwargs", nargs="*", default=[], help="one JSON dict of options per optimizer named"
    )
    args = parser.parse_args(argv)
    options = [json.loads(k) for k in args.kwargs] or [{}] * len(args.optimizers)
    if len(options) != len(args.optimizers):
        parser.error("--kwargs needs one JSON dict per optimizer named")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    first = None
    for name, kwargs in zip(args.optimizers, options, strict=True):
        r = measure(name, args.steps, args.warmup, kwargs)
        full = r["fwd_bwd_ms"] + r["step_mean_ms"]
        first = first or full
        print(
            f"{name}{' ' + json.dumps(kwargs) if kwargs else ''}: fwd+bwd {r['fwd_bwd_ms']:.1f} ms  step median {r['step_median_ms']:.1f} "
            f"mean {r['step_mean_ms']:.1f} ms  full step x{full / first:.2f} of {args.optimizers[0]}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
