"""pytest-benchmark suite for sequential A-optimal design: the same cases as
`fisherprec bench design` (fisherprec/benchmarks/design.py). The workload is
FISHERPREC_BENCH_DESIGN (default "1e6x64": 10^6 candidates, p = 64)."""

import os

import pytest
import torch

from fisherprec.benchmarks import collect

SIZE = os.environ.get("FISHERPREC_BENCH_DESIGN", "1e6x64")
CASES = [
    ("step", "fisherprec"),
    ("step", "torch-incremental"),
    ("step", "torch-quadform"),
    ("greedy", "fisherprec"),
    ("greedy", "torch-incremental"),
]


@pytest.fixture(scope="module")
def cases():
    # Built lazily: the 1e6×64 pool is 256 MB.
    return {(c.op, c.impl): c for c in collect(["design"], [SIZE], torch.device("cpu"))}


@pytest.mark.parametrize(("op", "impl"), CASES, ids=[f"{op}-{impl}" for op, impl in CASES])
def test_design(benchmark, cases, op, impl):
    case = cases[(op, impl)]
    benchmark.group = f"design/{op}/{SIZE}"
    benchmark.extra_info["bytes_per_call"] = case.bytes_per_call
    # A greedy run is many steps already: one round each keeps `make bench` short.
    rounds = 1 if op == "greedy" else 5
    benchmark.pedantic(
        case.run, rounds=rounds, iterations=1, warmup_rounds=0 if op == "greedy" else 1
    )
