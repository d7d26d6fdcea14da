"""pytest-benchmark suite of the diagonal step (cases: fisherprec/benchmarks/diag.py).

    make bench                                        # everything in bench/
    pytest bench/bench_diag.py --benchmark-only       # the issue's four workloads
    FISHERPREC_BENCH_SIZES=1e6-fp32,gpt2-tiny pytest bench/bench_diag.py --benchmark-only

or, for a table of ratios against torch's fused AdamW and achieved bandwidth
against an in-place axpy measured in the same run::

    python bench/bench_diag.py [--sizes 1e6-fp32,200x5k] [--threads 2] [--clock cpu]

``--clock cpu`` times with the process's CPU time instead of the wall clock:
on a machine shared with other jobs it leaves out the time this process sat
descheduled (memory contention still counts), which makes ratios stable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import pytest
import torch

from fisherprec.benchmarks import axpy_bandwidth, collect
from fisherprec.benchmarks.diag import DEFAULT

SIZES = [s for s in os.environ.get("FISHERPREC_BENCH_SIZES", ",".join(DEFAULT)).split(",") if s]
DEVICE = torch.device("cpu")


IMPLS = ["fisherprec", "torch-adamw-fused", "torch-adamw-foreach"]
_current: dict[str, list] = {}  # the cases of one size at a time (up to 1.6 GB)


def _cases(size: str) -> list:
    if size not in _current:
        _current.clear()
        _current[size] = collect(["diag"], [size], DEVICE)
    return _current[size]


@pytest.fixture(scope="module")
def axpy() -> float:
    return axpy_bandwidth(DEVICE)


@pytest.mark.parametrize(("size", "impl"), [(s, i) for s in SIZES for i in IMPLS])
def test_diag_step(benchmark, size, impl, axpy):
    case = next(c for c in _cases(size) if c.impl == impl)
    benchmark.group = f"diag/step/{size}"
    benchmark.extra_info["axpy_GBps"] = axpy / 1e9
    benchmark.pedantic(case.run, setup=None, rounds=5, iterations=1, warmup_rounds=1)
    best = benchmark.stats.stats.min if benchmark.stats else None
    if best:
        benchmark.extra_info["achieved_GBps"] = case.bytes_per_call / best / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(DEFAULT))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(
        f"threads={torch.get_num_threads()} clock={args.clock} "
        "(medians and minima of interleaved rounds)"
    )

    def seconds(run) -> float:
        start = clock()
        run()
        return clock() - start

    a, b = torch.ones(1 << 24), torch.ones(1 << 24)
    for size in args.sizes.split(","):
        cases = collect(["diag"], [size], DEVICE)
        for case in cases:
            case.run()
        times: dict[str, list[float]] = {c.impl: [] for c in cases}
        axpy: list[float] = []
        for _ in range(args.rounds):  # interleave, so machine load hits all alike
            for case in cases:
                times[case.impl].append(seconds(case.run))
            axpy.append(12 * a.numel() / seconds(lambda: a.add_(b, alpha=1e-3)))
        fused = statistics.median(times["torch-adamw-fused"])
        fused_min = min(times["torch-adamw-fused"])
        ceiling = max(axpy)
        for case in cases:
            med, best = statistics.median(times[case.impl]), min(times[case.impl])
            gbps = case.bytes_per_call / best / 1e9
            print(
                f"{size:>10} {case.impl:>20}: median {med * 1e3:8.2f} ms  min {best * 1e3:8.2f} ms  "
                f"ratio vs fused {med / fused:5.3f} (min/min {best / fused_min:5.3f})  "
                f"{gbps:6.1f} GB/s = {gbps * 1e9 / ceiling:4.0%} of axpy {ceiling / 1e9:.1f} GB/s"
            )
        del cases
    return 0


if __name__ == "__main__":
    sys.exit(main())
