"""pytest-benchmark suite of KronFisher (cases: fisherprec/benchmarks/kron.py):
one optimizer step vs torch's AdamW on 4 × (d × d + bias), and one refresh of
the bases (QR power step) vs torch.linalg.eigh of the same factors.

    make bench                                         # everything in bench/
    pytest bench/bench_kron.py --benchmark-only        # default size (d = 256)
    FISHERPREC_BENCH_SIZES=mlp4x1024 pytest bench/bench_kron.py --benchmark-only

or, for a table of ratios measured in interleaved rounds (robust on a busy machine)::

    python bench/bench_kron.py [--sizes mlp4x256,mlp4x1024] [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict

import pytest
import torch

from fisherprec.benchmarks import collect, time_call
from fisherprec.benchmarks.kron import DEFAULT_SIZES

SIZES = [
    s for s in os.environ.get("FISHERPREC_BENCH_SIZES", ",".join(DEFAULT_SIZES)).split(",") if s
]
DEVICE = torch.device("cpu")


def _groups(size: str):
    groups = defaultdict(dict)
    for case in collect(["kron"], [size], DEVICE):
        groups[(case.op, case.workload)][case.impl] = case
    return groups


@pytest.fixture(scope="module", params=SIZES)
def groups(request):
    return _groups(request.param)


@pytest.mark.parametrize("op", ["inv_root", "step"])
def test_kron(benchmark, groups, op):
    for (case_op, workload), impls in groups.items():
        if case_op != op or len(impls) < 2:
            continue
        seconds = {
            impl: statistics.median(time_call(c.run, DEVICE, min_seconds=0.2, max_repeats=20))
            for impl, c in impls.items()
        }
        ours = seconds.pop("fisherprec")
        benchmark.extra_info.update(
            {f"{workload}/speedup_vs_{k}": v / ours for k, v in seconds.items()}
        )
    benchmark.group = f"kron/{op}"
    first = next(impls for (o, _), impls in groups.items() if o == op)
    benchmark(first["fisherprec"].run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} rounds={args.rounds} (median of rounds; min in brackets)")
    for size in args.sizes.split(","):
        for (op, workload), impls in _groups(size).items():
            times = defaultdict(list)
            for _ in range(args.rounds):  # interleave so that load spikes hit every impl
                for impl, case in impls.items():
                    times[impl].append(
                        min(time_call(case.run, DEVICE, min_seconds=0.05, max_repeats=5))
                    )
            ours = statistics.median(times["fisherprec"])
            line = f"{op:9s} {workload:24s} fisherprec {ours * 1e3:9.2f} ms"
            case = impls["fisherprec"]
            if case.bytes_per_call:
                line += f" ({case.bytes_per_call / ours / 1e9:5.1f} GB/s)"
            for impl, ts in times.items():
                if impl != "fisherprec":
                    ratio, best = statistics.median(ts) / ours, min(ts) / min(times["fisherprec"])
                    line += f" | {impl} {statistics.median(ts) * 1e3:9.2f} ms: x{ratio:.1f} [x{best:.1f}]"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
