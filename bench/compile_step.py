"""Eager against torch.compile'd optimizer steps on the gpt task's parameters
(random gradients), every registered Fisher optimizer beside torch's AdamW
(foreach):

    python bench/compile_step.py [--steps 40] [--optimizers diag kron ...] [--no-trace]

Prints the median milliseconds per step and the compiled/eager ratio. (Every
Fisher optimizer runs eagerly inside the compiled call, behind one graph break,
except DiagFisher for CUDA parameters, whose step is traced: see
FisherOptimizer.traces_step. `--no-trace` sets DiagFisher.traces_step = False
for every device.)"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fisherprec as fp
from fisherprec.tasks.registry import get as get_task

OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, foreach=True),
    **{
        name: (lambda params, name=name: fp.optim.registry.build(name, params, lr=1e-3))
        for name, entry in fp.optim.registry.REGISTRY.items()
        if entry.fisher is not None
    },
}


def median_ms(name: str, compiled: bool, steps: int) -> float:
    params = list(get_task("gpt").make(0, torch.device("cpu")).model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    opt = OPTIMIZERS[name](params)
    opt.step()  # state first, as a training loop that compiles after warm-up
    step = torch.compile(opt.step) if compiled else opt.step
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS), default=None)
    parser.add_argument(
        "--no-trace",
        action="store_true",
        help="DiagFisher.traces_step = False: its step runs eagerly inside the compiled call on every device",
    )
    args = parser.parse_args()
    if args.no_trace:
        fp.optim.DiagFisher.traces_step = False
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.optimizers or OPTIMIZERS:
        eager, compiled = median_ms(name, False, args.steps), median_ms(name, True, args.steps)
        print(
            f"{name}: eager {eager:.2f} ms, compiled {compiled:.2f} ms, ratio {compiled / eager:.2f}"
        )


if __name__ == "__main__":
    main()
