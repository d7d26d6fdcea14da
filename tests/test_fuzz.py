"""The fuzz suite (tests/fuzz.py) in subprocesses, so that a crash fails a
test instead of killing the run. ``FISHERPREC_FUZZ=long`` (``make fuzz``)
runs the long profile: 5,000 cases per area instead of a few hundred."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fisherprec import ops
from tests import fuzz

ROOT = Path(__file__).resolve().parents[1]
LONG = os.environ.get("FISHERPREC_FUZZ") == "long"
CASES = {"ops": 500, "optimizers": 200, "estimators": 300}


def test_every_public_op_has_a_fuzz_sample():
    public = {
        name
        for name in ops.__all__
        if inspect.isfunction(getattr(ops, name)) and name != "block_shape"
    }
    assert public == set(fuzz.OP_SAMPLES)


@pytest.mark.parametrize("area", sorted(fuzz.AREAS))
def test_fuzz_area_runs_without_findings(area, tmp_path):
    cases = 5000 if LONG else CASES[area]
    seed = int(os.environ.get("FISHERPREC_FUZZ_SEED", "0"))
    log = tmp_path / f"{area}.log"
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", area, str(cases), str(seed), str(log)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000 if LONG else 300,
    )
    last = log.read_text().splitlines()[-1:] if log.exists() else []
    assert result.returncode == 0, (
        f"fuzz {area} failed (exit {result.returncode}) at {last}:\n{result.stderr[-3000:]}"
    )
    assert result.stdout.strip().endswith(f"cases={cases}")
    print(f"fuzz {area}: {cases} cases, no finding")
