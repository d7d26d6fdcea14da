"""`fisherprec bench`, in-process through main(argv), on a fake registered variant."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from fisherprec import benchmarks
from fisherprec.bench import copy_bandwidth, run_bench
from fisherprec.benchmarks import BenchCase
from fisherprec.cli import main

FAST = ["bench", "--quiet", "--min-seconds", "0", "--bandwidth-numel", "4096"]


@pytest.fixture
def fake_variant(monkeypatch):
    """Registers "fakevar": per workload, a fisherprec axpy and two torch baselines
    (one that does the same work twice, one that does it once)."""
    seen: list = []

    def factory(sizes, device):
        seen.append((sizes, device))
        known = {"small": 1000, "odd": 1037}
        for label in sizes or ():
            if label not in known:
                raise ValueError(f"unknown size {label!r}; known: {', '.join(known)}")
        cases = []
        for label in sizes or ["small"]:
            n = known[label]
            a, b = torch.ones(n, device=device), torch.ones(n, device=device)

            def twice(a=a, b=b):
                a.add_(b, alpha=1e-3)
                a.add_(b, alpha=1e-3)

            for impl, run in (
                ("torch-twice", twice),
                ("fisherprec", lambda a=a, b=b: a.add_(b, alpha=1e-3)),
                ("torch-once", lambda a=a, b=b: a.add_(b, alpha=1e-3)),
            ):
                cases.append(BenchCase("fakevar", "update", label, impl, run, 12 * n))
        cases.append(BenchCase("fakevar", "apply", "small", "fisherprec", lambda: None, None))
        return cases

    monkeypatch.setitem(benchmarks._FACTORIES, "fakevar", factory)
    return seen


def test_bench_end_to_end_json(tmp_path, capsys, fake_variant):
    path = tmp_path / "sub" / "bench.json"
    argv = [*FAST, "--variants", "fakevar", "--sizes", "small", "odd", "--json", str(path)]
    assert main(argv) == 0
    assert fake_variant[-1] == (["small", "odd"], torch.device("cpu"))
    stdout = capsys.readouterr().out
    assert "fakevar" in stdout and "speedup vs baseline" in stdout and f"wrote {path}" in stdout
    result = json.loads(path.read_text())
    bw = result["bandwidth"]
    assert bw["numel"] == 4096 and bw["copy_bytes_per_s"] > 0 and bw["axpy_bytes_per_s"] > 0
    assert result["errors"] == [] and result["device"] == "cpu"
    cases = {c["key"]: c for c in result["cases"]}
    assert len(cases) == 7
    for label in ("small", "odd"):
        mine = cases[f"fakevar/update/{label}/fisherprec"]
        ref = cases[f"fakevar/update/{label}/torch-twice"]
        other = cases[f"fakevar/update/{label}/torch-once"]
        for case in (mine, ref, other):
            assert case["repeats"] == len(case["times_s"]) >= 3
            assert case["median_s"] == statistics.median(case["times_s"])
            assert case["min_s"] == min(case["times_s"])
            assert case["bytes_per_s"] == pytest.approx(case["bytes_per_call"] / case["median_s"])
            assert case["fraction_of_copy"] == pytest.approx(
                case["bytes_per_s"] / bw["copy_bytes_per_s"]
            )
            assert case["fraction_of_axpy"] == pytest.approx(
                case["bytes_per_s"] / bw["axpy_bytes_per_s"]
            )
            # The baseline is the group's first non-fisherprec case, whatever the order.
            assert case["baseline"] == "torch-twice"
        assert ref["speedup"] == 1.0
        assert mine["speedup"] == pytest.approx(ref["median_s"] / mine["median_s"])
        assert mine["speedups"] == pytest.approx(
            {
                "torch-twice": ref["median_s"] / mine["median_s"],
                "torch-once": other["median_s"] / mine["median_s"],
            }
        )
        assert "speedups" not in ref
    lone = cases["fakevar/apply/small/fisherprec"]
    assert lone["baseline"] is None and lone["speedup"] is None and "bytes_per_s" not in lone
    assert "1.00 (baseline)" in stdout


def test_run_bench_default_sizes(fake_variant):
    result = run_bench(["fakevar"], None, "cpu", bandwidth_numel=1024, min_seconds=0.0)
    assert fake_variant[-1][0] is None
    assert {c["workload"] for c in result["cases"]} == {"small"}


def test_failing_case_exits_1_and_the_rest_is_timed(tmp_path, capsys, monkeypatch, fake_variant):
    def broken(sizes, device):
        def boom():
            raise RuntimeError("kernel exploded")

        return [
            BenchCase("broken", "step", "tiny", "fisherprec", boom, 4),
            BenchCase("broken", "step", "tiny", "torch", lambda: None, 4),
        ]

    monkeypatch.setitem(benchmarks._FACTORIES, "broken", broken)
    path = tmp_path / "b.json"
    assert main([*FAST, "--variants", "broken,fakevar", "--json", str(path)]) == 1
    captured = capsys.readouterr()
    assert "broken/step/tiny/fisherprec failed: RuntimeError: kernel exploded" in captured.err
    assert "failed" in captured.out
    result = json.loads(path.read_text())
    cases = {c["key"]: c for c in result["cases"]}
    assert cases["broken/step/tiny/fisherprec"]["error"] == "RuntimeError: kernel exploded"
    assert cases["broken/step/tiny/torch"]["error"] is None
    assert cases["fakevar/update/small/fisherprec"]["speedup"] > 0
    assert len(result["errors"]) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variants", "nope"], "unknown benchmark variant 'nope'; available: "),
        (["--variants", "fakevar", "--sizes", "huge"], "unknown size 'huge'; known: small, odd"),
        (["--device", "meta"], "unsupported device 'meta'"),
    ],
)
def test_bad_requests_exit_2(capsys, fake_variant, argv, message):
    assert main([*FAST, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fisherprec bench: error: ") and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(capsys, fake_variant):
    assert main([*FAST, "--device", "cuda"]) == 2
    assert "torch cannot use CUDA here" in capsys.readouterr().err


def test_bad_numbers_are_usage_errors(capsys):
    assert main(["bench", "--min-seconds", "-1"]) == 2
    assert "expected a non-negative number" in capsys.readouterr().err
    assert main(["bench", "--bandwidth-numel", "0"]) == 2


def test_no_registered_variant_is_not_an_error(capsys, monkeypatch):
    monkeypatch.setattr(benchmarks, "variants", lambda: [])
    assert main(["bench"]) == 0
    assert "no benchmark variants are registered" in capsys.readouterr().out


def test_help_explains_every_option(capsys, fake_variant):
    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    for option in (
        "--variants",
        "--sizes",
        "--device",
        "--json",
        "--min-seconds",
        "--bandwidth-numel",
        "--quiet",
    ):
        assert option in text
    assert "fakevar" in text


def test_copy_bandwidth_is_positive():
    assert copy_bandwidth(torch.device("cpu"), 1 << 12, min_seconds=0.0) > 0
