"""pytest-benchmark suite for one Bellman sweep (cases from fisherprec.benchmarks.bellman):
native kernel vs numpy and torch sparse CSR on a 10^6-state, 4-action, 8-successor MDP."""

import pytest
import torch

from fisherprec import benchmarks

IMPLS = ["fisherprec", "numpy-reduceat", "torch-sparse-csr"]


@pytest.fixture(scope="module")
def cases():
    return {case.impl: case for case in benchmarks.collect(["bellman"], None, torch.device("cpu"))}


@pytest.mark.parametrize("impl", IMPLS)
def test_bellman_sweep(benchmark, cases, impl):
    case = cases[impl]
    benchmark.group = f"bellman/sweep/{case.workload} ({torch.get_num_threads()} threads)"
    benchmark.extra_info["bytes_per_call"] = case.bytes_per_call
    benchmark.pedantic(case.run, rounds=5, warmup_rounds=1)
