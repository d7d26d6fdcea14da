"""pytest-benchmark suite for the batched symmetric eigensolver: the same cases
as `fisherprec bench eigh` (fisherprec/benchmarks/eigh.py), native against
torch.linalg.eigh on the same batch."""

import pytest
import torch

from fisherprec.benchmarks import collect
from fisherprec.benchmarks.eigh import DEFAULT_SIZES

IMPLS = ("fisherprec", "torch-linalg-eigh")


@pytest.fixture(scope="module")
def cases():
    return {(c.workload, c.impl): c for c in collect(["eigh"], DEFAULT_SIZES, torch.device("cpu"))}


@pytest.mark.parametrize("size", DEFAULT_SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_eigh(benchmark, cases, size, impl):
    case = cases[(size, impl)]
    benchmark.group = f"eigh/{size}"
    benchmark.extra_info["bytes_per_call"] = case.bytes_per_call
    benchmark.pedantic(case.run, rounds=10, iterations=1, warmup_rounds=1)
