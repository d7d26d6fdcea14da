"""Eager against torch.compile'd optimizer steps on the gpt task's parameters
(random gradients), DiagFisher beside torch's AdamW (foreach):

    python bench/compile_step.py [--steps 40]

Prints the median milliseconds per step and the compiled/eager ratio."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fisherprec as fp
from fisherprec.tasks.registry import get as get_task

OPTIMIZERS = {
    "diag": lambda params: fp.optim.DiagFisher(params, lr=1e-3),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, foreach=True),
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
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in OPTIMIZERS:
        eager, compiled = median_ms(name, False, args.steps), median_ms(name, True, args.steps)
        print(
            f"{name}: eager {eager:.2f} ms, compiled {compiled:.2f} ms, ratio {compiled / eager:.2f}"
        )


if __name__ == "__main__":
    main()
