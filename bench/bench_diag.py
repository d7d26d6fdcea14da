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

from fisherprec.benchmarks import axpy_bandwidth, collect, time_call
from fisherprec.benchmarks.diag import DEFAULT

SIZES = [s for s in os.environ.get("FISHERPREC_BENCH_SIZES", ",".join(DEFAULT)).split(",") if s]
DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def axpy() -> float:
    return axpy_bandwidth(DEVICE)


@pytest.mark.parametrize("size", SIZES)
def test_diag_step(benchmark, size, axpy):
    # One workload per test: its buffers (up to 1.6 GB) are freed afterwards.
    cases = collect(["diag"], [size], DEVICE)
    for case in cases:
        case.run()  # warm-up, allocation
    benchmark.group = f"diag/step/{size}"
    ours = next(c for c in cases if c.impl == "fisherprec")
    seconds = {c.impl: statistics.median(time_call(c.run, DEVICE, min_seconds=0.2)) for c in cases}
    benchmark.extra_info.update(
        {
            "axpy_GBps": axpy / 1e9,
            "achieved_GBps": ours.bytes_per_call / seconds["fisherprec"] / 1e9,
            **{f"ratio_vs_{k}": seconds["fisherprec"] / v for k, v in seconds.items()},
        }
    )
    benchmark(ours.run)


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
