"""pytest-benchmark suite of the low-rank window, over the cases that
`fisherprec bench lowrank` runs (fisherprec/benchmarks/lowrank.py).

Workloads come from FISHERPREC_BENCH_LOWRANK (comma-separated labels, default
"small,1e6-r32"); each is built inside its test, so only one window is held
in memory at a time. Compare each fisherprec row with the torch rows of the
same workload (plain-torch low-rank step, AdamW): ratios, never absolute times.
"""

from __future__ import annotations

import os

import pytest
import torch

from fisherprec.benchmarks import lowrank

LABELS = os.environ.get("FISHERPREC_BENCH_LOWRANK", "small,1e6-r32").split(",")
IMPLS = [
    ("step", "fisherprec"),
    ("step", "torch-plain-lowrank"),
    ("step", "torch-adamw"),
    ("update", "fisherprec"),
    ("apply", "fisherprec"),
]


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize(("op", "impl"), IMPLS, ids=[f"{o}-{i}" for o, i in IMPLS])
def test_lowrank(benchmark, label, op, impl):
    cases = {(c.op, c.impl): c for c in lowrank.workload_cases(label, torch.device("cpu"))}
    case = cases[(op, impl)]
    benchmark.group = f"lowrank/{label}"
    benchmark.extra_info["bytes_per_call"] = case.bytes_per_call
    case.run()  # warm-up
    benchmark.pedantic(case.run, rounds=5, iterations=1)
