"""`compare --resume`: the run journal reuses finished runs only when everything
that decides them matches, and a resumed comparison equals an uninterrupted one."""

from __future__ import annotations

import io
import json

import pytest

from fisherprec import compare as compare_mod
from fisherprec._cliutils import Progress
from fisherprec.cli import main

ARGS = dict(steps=6, seeds=2)
TRAIN = compare_mod.train  # the real one, before any test wraps it


class Interrupt(BaseException):
    """Stands for Ctrl-C or a lost machine in the middle of a comparison (a
    BaseException, like KeyboardInterrupt, which pytest itself would catch)."""


def _count_trains(monkeypatch, stop_after=None):
    """Wrap `train` to count the runs it trains; raise `Interrupt` after `stop_after`."""
    calls = []
    real = TRAIN

    def counting(*args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            monkeypatch.setattr(compare_mod, "train", real)  # only the first time
            raise Interrupt
        calls.append((args[1].name if hasattr(args[1], "name") else args[1], args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(compare_mod, "train", counting)
    return calls


def _curves(result):
    return {
        name: [(r["seed"], r["lr"], r["losses"]) for r in info["runs"]]
        for name, info in result["optimizers"].items()
    }


def test_a_stopped_comparison_resumes_and_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    counted = _count_trains(monkeypatch)
    whole = compare_mod.compare("regression", ["sgd", "adamw"], tune=True, **ARGS)
    total = len(counted)
    assert total >= 14  # 10 tuning runs (more when a grid widens) + 4 reported ones
    journal = tmp_path / "runs.jsonl"
    calls = _count_trains(monkeypatch, stop_after=7)
    with pytest.raises(Interrupt):
        compare_mod.compare("regression", ["sgd", "adamw"], tune=True, journal=journal, **ARGS)
    assert len(calls) == 7 and len(journal.read_text().splitlines()) == 7
    calls = _count_trains(monkeypatch)
    stream = io.StringIO()
    resumed = compare_mod.compare(
        "regression",
        ["sgd", "adamw"],
        tune=True,
        journal=journal,
        resume=True,
        progress=Progress(stream=stream),
        **ARGS,
    )
    assert len(calls) == total - 7  # only what had not finished
    assert _curves(resumed) == _curves(whole)  # the same lrs picked, the same curves
    assert {n: i["lr"] for n, i in resumed["optimizers"].items()} == {
        n: i["lr"] for n, i in whole["optimizers"].items()
    }
    assert resumed["journal"]["reused"] == 7 and resumed["journal"]["runs"] == total
    text = stream.getvalue()
    assert "resuming from" in text and text.count("(from the journal)") == 7
    assert "resumed (--resume): 7 runs" in compare_mod.format_provenance(resumed)


def test_a_run_is_reused_only_when_its_settings_match(tmp_path, monkeypatch):
    journal = tmp_path / "runs.jsonl"
    compare_mod.compare("regression", ["adamw"], steps=6, seeds=1, journal=journal)
    calls = _count_trains(monkeypatch)
    for changed in (
        dict(steps=7),
        dict(threshold=123.0),
        dict(schedule="cosine"),
        dict(opt_kwargs={"adamw": {"weight_decay": 0.5}}),
        dict(opt_kwargs={"adamw": {"lr": 0.02}}),
    ):
        calls.clear()
        settings = {"steps": 6, **changed}
        compare_mod.compare(
            "regression", ["adamw"], seeds=1, journal=journal, resume=True, **settings
        )
        assert len(calls) == 1, changed  # trained again, not taken from the journal
    calls.clear()
    compare_mod.compare("regression", ["adamw"], steps=6, seeds=2, journal=journal, resume=True)
    assert calls == [("adamw", 1)]  # seed 0 matched; seed 1 is new


def test_failed_runs_are_not_journaled_and_a_cut_line_is_skipped(tmp_path, monkeypatch):
    journal = tmp_path / "runs.jsonl"
    real = compare_mod.train

    def failing(*args, **kwargs):
        if args[3] == 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(compare_mod, "train", failing)
    result = compare_mod.compare("regression", ["sgd"], steps=5, seeds=2, journal=journal)
    assert len(result["errors"]) == 1
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["run"]["seed"] == 0
    journal.write_text(lines[0] + "\n" + lines[0][:40])  # a line cut short by a kill
    calls = _count_trains(monkeypatch)
    resumed = compare_mod.compare(
        "regression", ["sgd"], steps=5, seeds=2, journal=journal, resume=True
    )
    assert resumed["errors"] == [] and calls == [("sgd", 1)]


def test_without_resume_a_fresh_journal_starts_and_the_old_one_is_kept(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", "--steps", "4", "--seeds", "1", "--optimizers", "sgd", "--out", str(out)]
    assert main(argv) == 0
    journal = out / "runs-regression.jsonl"
    first = journal.read_text()
    assert len(first.splitlines()) == 1
    capsys.readouterr()
    assert main(argv) == 0
    assert "started a fresh journal" in capsys.readouterr().err
    assert (out / "runs-regression.jsonl.prev").read_text() == first
    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert (
        "(from the journal)" in err
        and "resumed (--resume)" in (out / "compare-regression.md").read_text()
    )
    assert "--resume" in json.loads((out / "compare-regression.json").read_text())["command"]


def test_every_reported_run_records_the_load_average():
    result = compare_mod.compare("regression", ["sgd"], steps=3, seeds=1)
    (run,) = result["optimizers"]["sgd"]["runs"]
    assert len(run["load"]) == 2 and all(x is None or x >= 0 for x in run["load"])
    if run["load"][0] is not None:
        assert "load average (1 min)" in compare_mod.format_provenance(result)
