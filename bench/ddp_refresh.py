"""A refresh's time per rank under DDP, split across the ranks
(``process_group=WORLD``) against every rank doing all of it:

    python bench/ddp_refresh.py [--ranks 2] [--repeats 5] [--optimizers kron block]

Spawns gloo CPU processes with one torch thread each (so that two ranks on two
cores do not share a core) holding the gpt task's parameters (875k) with random
gradients; after one step, times ``_refresh_all()`` (every block of every
parameter, as a step due to refresh) and prints the median seconds on the
slowest rank, split and unsplit, and their ratio."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist

import fisherprec as fp
from fisherprec.tasks.registry import get as get_task


def _rank(rank: int, world: int, store: str, names: list[str], repeats: int, queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        for name in names:
            for split in (False, True):
                params = list(get_task("gpt").make(0, torch.device("cpu")).model.parameters())
                generator = torch.Generator().manual_seed(0)  # the same gradients on every rank
                for p in params:
                    p.grad = torch.randn(p.shape, generator=generator)
                group = dist.group.WORLD if split else None
                opt = fp.optim.registry.build(name, params, process_group=group)
                opt.step()
                times = []
                for _ in range(repeats):
                    dist.barrier()
                    start = time.perf_counter()
                    opt._refresh_all()
                    times.append(time.perf_counter() - start)
                slowest = torch.tensor([statistics.median(times)])
                dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
                if rank == 0:
                    queue.put((name, split, float(slowest)))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--optimizers", nargs="+", default=["kron", "block"])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {args.ranks} gloo ranks × 1 thread, load {os.getloadavg()[0]:.2f}"
    )
    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.start_processes(
            _rank,
            args=(args.ranks, os.path.join(tmp, "store"), args.optimizers, args.repeats, queue),
            nprocs=args.ranks,
            start_method="spawn",
        )
    results = {}
    while not queue.empty():
        name, split, seconds = queue.get()
        results[(name, split)] = seconds
    for name in args.optimizers:
        whole, split = results[(name, False)], results[(name, True)]
        print(
            f"{name}: unsplit {whole * 1e3:.0f} ms, split {split * 1e3:.0f} ms per rank, ratio {split / whole:.2f}"
        )


if __name__ == "__main__":
    main()
