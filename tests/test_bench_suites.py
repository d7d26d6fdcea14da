"""`make bench` must find the pytest-benchmark suites in bench/ (files named
bench_*.py, which pytest does not collect by default)."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_make_bench_collects_every_suite():
    makefile = (ROOT / "Makefile").read_text()
    assert '-o python_files="bench_*.py"' in makefile
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "bench",
            "-o",
            "python_files=bench_*.py",
            "--collect-only",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    collected = {m.group(1) for m in re.finditer(r"^bench/(bench_\w+)\.py::", result.stdout, re.M)}
    suites = {p.stem for p in (ROOT / "bench").glob("bench_*.py")}
    assert suites and collected == suites
