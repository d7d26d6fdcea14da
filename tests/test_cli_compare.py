"""`fisherprec compare`, end to end in-process through main(argv), on tiny runs."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest
import torch

from fisherprec import compare as compare_mod
from fisherprec._cliutils import Progress
from fisherprec.cli import COMMANDS, main
from fisherprec.optim import registry
from fisherprec.optim.registry import OptimizerEntry
from fisherprec.tasks import registry as tasks

BASE = ["compare", "--quiet", "--steps", "4", "--seeds", "2"]


def _load(out, task="regression"):
    return json.loads((out / f"compare-{task}.json").read_text())


class _ReportsMemory(torch.optim.SGD):
    """An optimizer that reports its own state size: compare must use it."""

    def memory_bytes(self) -> int:
        return 12345


class _Fails(torch.optim.SGD):
    def step(self, closure=None):
        raise RuntimeError("boom from a broken variant")


class _Nan(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.fill_(float("nan"))


@pytest.fixture
def fake(monkeypatch):
    """Register extra optimizers for one test only."""

    def add(name, factory, **defaults):
        entry = OptimizerEntry(name, factory, defaults, fisher="fake", description=f"test {name}")
        monkeypatch.setitem(registry._REGISTRY, name, entry)
        return entry

    return add


def _check_run_against_its_curve(run, threshold, samples_per_step):
    """T_sample/T_compute recomputed independently from the recorded curve."""
    first = next((i for i, x in enumerate(run["losses"]) if x is not None and x <= threshold), None)
    if first is None:
        assert run["steps_to_threshold"] is None and run["seconds_to_threshold"] is None
    else:
        assert run["steps_to_threshold"] == run["steps"][first]
        assert run["samples_to_threshold"] == run["steps"][first] * samples_per_step
        assert run["seconds_to_threshold"] == run["seconds"][first]


def test_every_command_module_registers():
    assert "fisherprec.compare" in COMMANDS and "fisherprec.bench" in COMMANDS
    assert main(["--version"]) == 0
    from fisherprec.cli import build_parser

    help_text = build_parser().format_help()
    for command in ("demo", "compare", "bench", "kinematics"):
        assert command in help_text


def test_compare_end_to_end_writes_table_json_and_png(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*BASE, "--optimizers", "sgd", "adamw", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "| optimizer" in stdout and "sgd" in stdout and "adamw" in stdout
    result = _load(out)
    assert list(result["optimizers"]) == ["sgd", "adamw"]
    task = tasks.get("regression")
    assert result["task"]["threshold"] == task.threshold
    assert result["task"]["steps"] == 4 and result["task"]["seeds"] == [0, 1]
    assert result["errors"] == []
    for name, info in result["optimizers"].items():
        assert info["lr"] == task.lrs[name] and info["lr_source"] == "task default"

        assert [r["seed"] for r in info["runs"]] == [0, 1]
        for run in info["runs"]:
            assert run["steps"] == [0, 1, 2, 3, 4]
            assert len(run["losses"]) == len(run["seconds"]) == 5
            assert run["seconds"] == sorted(run["seconds"]) and run["seconds"][0] == 0.0
            assert all(math.isfinite(x) and x > 0 for x in run["losses"])
            assert run["final_loss"] == run["losses"][-1]
            assert run["seconds_per_step"] == pytest.approx(run["seconds"][-1] / 4)
            _check_run_against_its_curve(run, task.threshold, task.samples_per_step)
        summary = info["summary"]
        finals = [r["final_loss"] for r in info["runs"]]
        assert summary["runs"] == 2 and summary["final_loss"]["n"] == 2
        assert summary["final_loss"]["mean"] == pytest.approx(sum(finals) / 2)
        assert summary["final_loss"]["std"] == pytest.approx(abs(finals[0] - finals[1]) / 2**0.5)
    # Same seed: same data and initial weights for every optimizer.
    starts = {n: [r["losses"][0] for r in i["runs"]] for n, i in result["optimizers"].items()}
    assert starts["sgd"] == starts["adamw"] and starts["sgd"][0] != starts["sgd"][1]
    # SGD keeps one momentum buffer per parameter, AdamW two moments (+ step counters).
    params = sum(p.numel() for p in task.make(0, torch.device("cpu")).model.parameters())
    sgd_bytes = result["optimizers"]["sgd"]["summary"]["state_bytes"]["mean"]
    adamw_bytes = result["optimizers"]["adamw"]["summary"]["state_bytes"]["mean"]
    assert sgd_bytes == 4 * params and adamw_bytes >= 8 * params
    assert (out / "compare-regression.md").read_text().count("|") > 10
    assert (out / "compare-regression.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_is_reproducible_and_threshold_metrics_match_curves():
    task = tasks.get("classification")
    first = compare_mod.compare("classification", ["adamw"], steps=6, seeds=1, threshold=1.9)
    again = compare_mod.compare("classification", ["adamw"], steps=6, seeds=1, threshold=1.9)
    a, b = first["optimizers"]["adamw"]["runs"][0], again["optimizers"]["adamw"]["runs"][0]
    assert a["losses"] == b["losses"]
    _check_run_against_its_curve(a, 1.9, task.samples_per_step)
    never = compare_mod.compare("classification", ["adamw"], steps=2, seeds=1, threshold=-1.0)
    summary = never["optimizers"]["adamw"]["summary"]
    assert summary["reached"] == 0 and summary["steps_to_threshold"]["mean"] is None
    assert "not reached" in compare_mod.format_table(never)
    always = compare_mod.compare("classification", ["adamw"], steps=2, seeds=1, threshold=100.0)
    run = always["optimizers"]["adamw"]["runs"][0]
    assert run["steps_to_threshold"] == 0 and run["seconds_to_threshold"] == 0.0


@pytest.mark.parametrize("name", tasks.names())
def test_every_task_runs(name):
    task = tasks.get(name)
    result = compare_mod.compare(name, ["sgd"], steps=2, seeds=1)
    run = result["optimizers"]["sgd"]["runs"][0]
    assert run["error"] is None and run["steps"] == [0, 1, 2]
    assert all(math.isfinite(x) for x in run["losses"])
    assert result["task"]["samples_per_step"] == task.samples_per_step
    assert task.threshold < run["losses"][0], "the default threshold must not be met at init"


def test_registered_variants_appear_without_edits(tmp_path, fake):
    fake("memfake", _ReportsMemory, lr=0.01)
    out = tmp_path / "o"
    assert main([*BASE, "--task", "classification", "--out", str(out)]) == 0
    result = _load(out, "classification")
    assert list(result["optimizers"]) == list(registry.REGISTRY)
    info = result["optimizers"]["memfake"]
    # a Fisher variant the task does not list runs at the task's AdamW lr
    adamw_lr = tasks.get("classification").lrs["adamw"]
    assert info["lr"] == adamw_lr and info["lr_source"] == "task default (AdamW's)"
    assert info["fisher"] == "fake"
    assert [r["state_bytes"] for r in info["runs"]] == [12345, 12345]
    assert "memfake" in (out / "compare-classification.md").read_text()


def test_failing_variant_exits_1_and_the_others_still_run(tmp_path, fake, capsys):
    fake("broken", _Fails, lr=0.1)
    out = tmp_path / "o"
    assert main([*BASE, "--optimizers", "sgd,broken", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken seed 0 failed: RuntimeError: boom from a broken variant" in err
    result = _load(out)
    assert len(result["errors"]) == 2
    assert all("boom" in r["error"] for r in result["optimizers"]["broken"]["runs"])
    assert result["optimizers"]["broken"]["summary"]["errors"] == 2
    assert result["optimizers"]["sgd"]["summary"]["runs"] == 2
    assert "failed" in (out / "compare-regression.md").read_text()


def test_divergence_is_a_result_not_an_error(tmp_path, fake):
    fake("nan", _Nan, lr=0.1)
    out = tmp_path / "o"
    assert main([*BASE, "--optimizers", "nan", "--out", str(out)]) == 0
    info = _load(out)["optimizers"]["nan"]
    for run in info["runs"]:
        assert run["diverged"] and run["final_loss"] is None and run["steps_done"] == 1
        assert run["losses"][-1] is None  # NaN is written as null: the JSON stays standard
    assert info["summary"]["diverged"] == 2
    assert "diverged" in (out / "compare-regression.md").read_text()


def test_tune_sweeps_on_a_separate_seed_and_keeps_the_best(tmp_path):
    out = tmp_path / "o"
    assert main([*BASE, "--optimizers", "adamw", "--steps", "6", "--tune", "--out", str(out)]) == 0
    result = _load(out)
    info = result["optimizers"]["adamw"]
    tuning = info["tuning"]
    base = tasks.get("regression").lrs["adamw"]
    assert tuning["seed"] not in result["task"]["seeds"]
    assert tuning["steps"] == 6 // compare_mod.TUNE_STEPS_DIVISOR
    extra = compare_mod.TUNE_WIDEN[tuning["widened"]] if tuning["widened"] else ()
    assert [s["lr"] for s in tuning["sweep"]] == pytest.approx(
        [base * f for f in (*compare_mod.TUNE_FACTORS, *extra)]
    )
    best = min((s for s in tuning["sweep"] if s["score"] is not None), key=lambda s: s["score"])
    assert info["lr"] == best["lr"] == tuning["lr"] and info["lr_source"] == "tuned"
    assert all(r["lr"] == best["lr"] for r in info["runs"])


def test_missing_matplotlib_skips_the_plot_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "o"
    assert main([*BASE, "--optimizers", "sgd", "--out", str(out)]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (out / "compare-regression.png").exists()
    assert _load(out)["files"]["plot"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "nope"], "unknown task 'nope'; available: "),
        (["--optimizers", "sgd", "nope"], "unknown optimizer 'nope'; available: sgd, adamw"),
        (["--device", "meta"], "unsupported device 'meta'"),
        (["--device", "tpu"], "invalid device 'tpu'; use cpu or cuda"),
        (["--threshold", "nan"], "threshold must be finite, got nan"),
    ],
)
def test_bad_requests_exit_2_with_a_clear_message(tmp_path, capsys, argv, message):
    assert main([*BASE, "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fisherprec compare: error: ") and message in err
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(capsys):
    assert main([*BASE, "--device", "cuda"]) == 2
    assert "torch cannot use CUDA here" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "expected a positive integer, got 0"),
        (["--seeds", "x"], "'x'"),
        (["--optimizers"], "expected at least one argument"),
    ],
)
def test_bad_numbers_are_usage_errors(capsys, argv, message):
    assert main(["compare", *argv]) == 2
    assert message in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    assert main(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    for option in (
        "--task",
        "--optimizers",
        "--steps",
        "--threshold",
        "--seeds",
        "--tune",
        "--out",
        "--device",
        "--threads",
        "--quiet",
    ):
        assert option in text
    for name in [*tasks.names(), *registry.REGISTRY]:
        assert f"  {name} " in text


def test_threads_option_is_restored(tmp_path):
    before = torch.get_num_threads()
    argv = [*BASE, "--optimizers", "sgd", "--seeds", "1", "--threads", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert _load(tmp_path)["threads"] == 1 and torch.get_num_threads() == before


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_plain_lines_off_a_terminal_and_silent_when_quiet():
    stream = io.StringIO()
    bar = Progress(stream=stream).task("run", 3)
    bar.update(1, "loss 1")
    bar.close("run: done")
    assert stream.getvalue() == "run: done\n"
    quiet = io.StringIO()
    bar = Progress(quiet=True, stream=quiet).task("run", 3)
    bar.update(3)
    bar.close("run: done")
    assert quiet.getvalue() == ""


def test_progress_without_tqdm_draws_a_plain_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    stream = _Terminal()
    bar = Progress(stream=stream).task("seed 0", 2)
    bar.update(2, "loss 0.5")
    bar.close("seed 0: done")
    text = stream.getvalue()
    assert "\rseed 0  2/2  loss 0.5" in text and text.endswith("seed 0: done\n")


def test_progress_uses_tqdm_on_a_terminal():
    pytest.importorskip("tqdm")
    stream = _Terminal()
    bar = Progress(stream=stream).task("seed 0", 2)
    assert bar._tqdm is not None
    bar.update(2, "loss 0.5")
    bar.close("seed 0: done")
    assert stream.getvalue().endswith("seed 0: done\n")


def test_state_bytes_without_memory_bytes_sums_state_tensors():
    p = torch.nn.Parameter(torch.ones(10, dtype=torch.float64))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones_like(p)
    opt.step()
    step = opt.state[p]["step"]
    expected = 2 * 10 * 8 + step.numel() * step.element_size()
    assert compare_mod.state_bytes(opt) == expected


def test_a_fisher_optimizer_a_task_does_not_list_takes_its_adamw_lr():
    task = tasks.get("regression")
    assert "diag" not in task.lrs
    assert compare_mod.default_lr(task.lrs, "diag") == (task.lrs["adamw"], "task default (AdamW's)")
    assert compare_mod.default_lr({"adamw": 0.5, "diag": 0.1}, "diag") == (0.1, "task default")
    assert compare_mod.default_lr({}, "diag")[1] == "registry default"
    assert compare_mod.default_lr(task.lrs, "sgd") == (task.lrs["sgd"], "task default")
