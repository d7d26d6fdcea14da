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
steps), so it is the amortised step. With ``--rounds N`` the optimizers step
in turn, `--steps` each, N times (drifts of a shared machine then hit all of
them alike): prints milliseconds per step and each optimizer's time over
KronFisher's in every round."""

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


class Stepper:
    """One optimizer on its own copy of the parameters, with fixed gradients."""

    def __init__(self, build, width: int) -> None:
        self.params = mlp_params(width, torch.device("cpu"))
        self.grads = [p.grad for p in self.params]
        self.opt = build(self.params)

    def run(self, steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            for p, g in zip(self.params, self.grads, strict=True):  # heavyball sets .grad to None
                p.grad = g
            start = time.perf_counter()
            self.opt.step()
            times.append(time.perf_counter() - start)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per optimizer per round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, the optimizers interleaved")
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
        f"{args.width}; KronFisher refresh {args.kron_refresh!r}; {args.rounds} round(s) of "
        f"{args.steps} steps; {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    steppers = {
        name: Stepper(build, args.width)
        for name, build in builders(args.every, args.width, args.kron_refresh).items()
    }
    for stepper in steppers.values():
        stepper.run(args.warmup)
    means: dict[str, list[float]] = {name: [] for name in steppers}
    medians: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(args.rounds):  # each round steps every optimizer in turn: drifts hit all alike
        for name, stepper in steppers.items():
            times = stepper.run(args.steps)
            means[name].append(statistics.fmean(times))
            medians[name].append(statistics.median(times))
        print(
            f"  round {r + 1}: " + ", ".join(f"{n} {1e3 * means[n][-1]:.1f}" for n in steppers),
            flush=True,
        )
    ours = "fisherprec KronFisher"
    print(
        "\n| optimizer | mean ms/step (amortised), median over rounds | median ms/step | "
        "/ KronFisher, per round |\n|---|---|---|---|"
    )
    for name in steppers:
        ratios = [a / b for a, b in zip(means[name], means[ours], strict=True)]
        print(
            f"| {name} | {1e3 * statistics.median(means[name]):.1f} | "
            f"{1e3 * statistics.median(medians[name]):.1f} | "
            f"{min(ratios):.2f}–{max(ratios):.2f} |"
        )
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
