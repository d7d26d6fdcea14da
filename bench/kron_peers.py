"""KronFisher's optimizer step beside the Kronecker-factored peers users would
pick instead, at the same refresh interval and the same largest factor size,
on 4 × (width × width weight + width bias) (default width 1024):

    python bench/kron_peers.py [--width 1024] [--steps 30] [--warmup 10] [--every 10]

Peers (the `peers` extra): pytorch-optimizer's SOAP (precondition_frequency,
max_precondition_dim) and Shampoo (preconditioning_compute_steps; its factors
are whole matrices, 1024 × 1024 here) and heavyball's SOAP
(precondition_frequency with its schedule off, max_precond_dim; compiled steps
off, as in `fisherprec compare`). Every other setting is the library's
default. Each optimizer steps its own copy of the same parameters with the
same fixed random gradients (set again before every step); the mean over
`--steps` steps after `--warmup` includes the refreshes (one every `--every`
steps), so it is the amortised step. Prints milliseconds per step and each
optimizer's time over KronFisher's."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

import fisherprec as fp
from fisherprec.benchmarks.kron import mlp_params


def builders(
    every: int, max_dim: int, refresh: str = "eigh"
) -> dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]]:
    out: dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]] = {
        "fisherprec KronFisher": lambda p: fp.optim.KronFisher(
            p, lr=1e-4, update_every=every, max_dim=max_dim, refresh=refresh
        ),
        "torch AdamW (fused)": lambda p: torch.optim.AdamW(p, lr=1e-4, fused=True),
    }
    try:
        import pytorch_optimizer as po

        out["pytorch_optimizer SOAP"] = lambda p: po.SOAP(
            p, lr=1e-4, precondition_frequency=every, max_precondition_dim=max_dim
        )
        out["pytorch_optimizer Shampoo"] = lambda p: po.Shampoo(
            p, lr=1e-4, preconditioning_compute_steps=every
        )
    except ImportError:
        print(
            "pytorch-optimizer not installed (pip install 'fisherprec[peers]'): its SOAP and Shampoo are skipped"
        )
    try:
        import heavyball
        import heavyball.utils

        heavyball.utils.compile_mode = None  # eager, as fisherprec compare runs it

        out["heavyball SOAP"] = lambda p: heavyball.SOAP(
            p,
            lr=1e-4,
            precondition_frequency=every,
            use_precond_schedule=False,
            max_precond_dim=max_dim,
        )
    except ImportError:
        print("heavyball not installed (pip install 'fisherprec[peers]'): its SOAP is skipped")
    return out


def time_steps(build, width: int, steps: int, warmup: int) -> list[float]:
    params = mlp_params(width, torch.device("cpu"))
    grads = [p.grad for p in params]
    opt = build(params)
    times = []
    for i in range(warmup + steps):
        for p, g in zip(params, grads, strict=True):  # heavyball sets .grad to None after a step
            p.grad = g
        start = time.perf_counter()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--every", type=int, default=10, help="refresh interval of every optimizer")
    parser.add_argument(
        "--kron-refresh",
        choices=("eigh", "qr"),
        default="eigh",
        help="KronFisher's refresh after the first (qr: one power-iteration step, as the SOAPs do)",
    )
    args = parser.parse_args()
    print(
        f"4 × ({args.width}² + {args.width}) parameters, refresh every {args.every} steps, factors ≤ "
        f"{args.width}; KronFisher refresh {args.kron_refresh!r}; {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    results = {}
    for name, build in builders(args.every, args.width, args.kron_refresh).items():
        times = time_steps(build, args.width, args.steps, args.warmup)
        results[name] = (statistics.fmean(times), statistics.median(times))
        print(
            f"  {name}: mean {1e3 * results[name][0]:.1f} ms/step (median {1e3 * results[name][1]:.1f})",
            flush=True,
        )
    ours = results["fisherprec KronFisher"][0]
    print(
        "\n| optimizer | mean ms/step (amortised) | median ms/step | / KronFisher |\n|---|---|---|---|"
    )
    for name, (mean, median) in results.items():
        print(f"| {name} | {1e3 * mean:.1f} | {1e3 * median:.1f} | {mean / ours:.2f} |")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
