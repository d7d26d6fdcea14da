"""`compare` with outside optimizers (module:Class), --opt-kwargs, the tuning
protocol's edge widening and the progress/ETA lines."""

from __future__ import annotations

import io
import json
import math
import shlex
import sys

import pytest
import torch

from fisherprec import compare as compare_mod
from fisherprec._cliutils import Progress, format_duration
from fisherprec.cli import main
from fisherprec.optim import registry
from fisherprec.tasks import registry as tasks

BASE = ["compare", "--quiet", "--steps", "4", "--seeds", "1"]


def _load(out, task="regression"):
    return json.loads((out / f"compare-{task}.json").read_text())


def test_a_plain_torch_class_works_without_the_extra(tmp_path, monkeypatch):
    for hidden in ("pytorch_optimizer", "heavyball"):  # as if the peers extra were absent
        monkeypatch.setitem(sys.modules, hidden, None)
    out = tmp_path / "o"
    lr = tasks.get("regression").lrs["adamw"]
    argv = [*BASE, "--optimizers", "adamw", "torch.optim:AdamW", "torch.optim:Adam"]
    argv += ["--opt-kwargs", f'torch.optim:AdamW={{"lr": {lr}}}', "--out", str(out)]
    assert main(argv) == 0
    result = _load(out)
    infos = result["optimizers"]
    assert list(infos) == ["adamw", "torch.optim:AdamW", "torch.optim:Adam"]
    assert infos["torch.optim:AdamW"]["outside"] and not infos["adamw"]["outside"]
    assert infos["torch.optim:AdamW"]["lr_source"] == "--opt-kwargs"
    # Adam's own default lr, read off the class.
    assert infos["torch.optim:Adam"]["lr"] == 1e-3
    assert infos["torch.optim:Adam"]["lr_source"] == "optimizer default"
    ours, theirs = (infos[n]["runs"][0] for n in ("adamw", "torch.optim:AdamW"))
    assert ours["losses"] == theirs["losses"]  # the same class, lr and data: the same run
    assert ours["state_bytes"] == theirs["state_bytes"] > 0
    table = (out / "compare-regression.md").read_text()
    assert "torch.optim:Adam" in table
    # The page states the command that reproduces it, quoted for a shell.
    command = table.split("- command: `", 1)[1].split("`", 1)[0]
    assert shlex.split(command)[:2] == ["fisherprec", "compare"]
    assert shlex.split(command)[2:] == [
        "--task", "regression", "--optimizers", "adamw", "torch.optim:AdamW", "torch.optim:Adam",
        "--opt-kwargs", f'torch.optim:AdamW={{"lr": {lr}}}', "--steps", "4", "--seeds", "1",
        "--out", str(out),
    ]  # fmt: skip
    assert "- versions: fisherprec " in table and "torch " in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--optimizers", "heavyball:SOAP"],
            "pip install 'fisherprec[peers]' (or pip install heavyball)",
        ),
        (
            ["--optimizers", "pytorch_optimizer:SOAP"],
            "pip install 'fisherprec[peers]' (or pip install pytorch-optimizer)",
        ),
        (["--optimizers", "no_such_module_xyz:Opt"], "needs the module 'no_such_module_xyz'"),
        (
            ["--optimizers", "torch.optim:adamw"],
            "has no class 'adamw'; did you mean torch.optim:AdamW?",
        ),
        (["--optimizers", "torch.optim:"], "is written module:Class"),
        (["--optimizers", "math:pi"], "has no class 'pi'"),
        (["--optimizers", "math:sqrt"], "math.sqrt(params, **{}) failed"),
        (
            ["--optimizers", "torch.optim:Adam", "--opt-kwargs", 'torch.optim:Adam={"nope": 1}'],
            "fix the keyword arguments with --opt-kwargs",
        ),
        (
            ["--optimizers", "adamw", "--opt-kwargs", "sgd={}"],
            "--opt-kwargs names 'sgd', which is not",
        ),
        (["--optimizers", "adamw", "--opt-kwargs", "adamw={bad"], "invalid JSON"),
        (["--optimizers", "adamw", "--opt-kwargs", "adamw=[1]"], "must be a JSON object"),
        (["--optimizers", "adamw", "--opt-kwargs", "adamw"], "expects NAME=JSON"),
        (["--optimizers", "nope"], "(or module:Class for an outside optimizer"),
    ],
)
def test_outside_optimizers_that_cannot_be_built_are_clear_errors(
    tmp_path, capsys, monkeypatch, argv, message
):
    monkeypatch.setitem(sys.modules, "heavyball", None)  # not installed
    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)
    assert main([*BASE, "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fisherprec compare: error: ") and message in err
    assert "peers" in err or "heavyball" not in argv[1]
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


def test_all_is_every_registered_optimizer_plus_the_named_ones():
    resolved = compare_mod._resolve_optimizers(["sgd", "all", "torch.optim:Adam", "sgd"])
    assert list(resolved) == [*registry.REGISTRY, "torch.optim:Adam"]
    assert resolved["torch.optim:Adam"].factory is torch.optim.Adam


def test_opt_kwargs_reach_the_optimizer(monkeypatch):
    seen = {}

    class Spy(torch.optim.SGD):
        def __init__(self, params, **kwargs):
            seen.update(kwargs)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Spy", Spy, raising=False)
    result = compare_mod.compare(
        "regression",
        ["torch.optim:Spy"],
        steps=2,
        seeds=1,
        opt_kwargs={"torch.optim:Spy": {"lr": 0.02, "momentum": 0.5, "nesterov": True}},
    )
    assert seen == {"lr": 0.02, "momentum": 0.5, "nesterov": True}
    info = result["optimizers"]["torch.optim:Spy"]
    assert info["kwargs"] == {"momentum": 0.5, "nesterov": True} and info["lr"] == 0.02


def _fake_train(best_lr):
    """A stand-in for compare.train whose held-out loss is lowest at `best_lr`."""

    def train(task, name, lr, seed, *, steps, **_):
        loss = 1.0 + (math.log10(lr) - math.log10(best_lr)) ** 2
        return {"losses": [loss] * 3, "diverged": False, "lr": lr, "steps_done": steps}

    return train


@pytest.mark.parametrize(
    ("best_factor", "widened", "chosen_factor", "at_edge"),
    [
        (1.0, None, 1.0, None),  # inside the grid: no widening
        (0.3, None, 0.3, None),
        (30.0, "high", 30.0, None),  # at the top: widened once, the optimum found
        (0.01, "low", 0.01, "low"),  # the new end wins again: marked, not widened twice
        (1e4, "high", 100.0, "high"),
    ],
)
def test_tuning_widens_the_grid_once_at_an_edge(
    monkeypatch, best_factor, widened, chosen_factor, at_edge
):
    monkeypatch.setattr(compare_mod, "train", _fake_train(0.01 * best_factor))
    counter = [0, len(compare_mod.TUNE_FACTORS)]
    stream = io.StringIO()
    tuning = compare_mod.tune_lr(
        tasks.get("regression"),
        "adamw",
        0.01,
        steps=10,
        threshold=0.0,
        device=torch.device("cpu"),
        progress=Progress(stream=stream),
        counter=counter,
    )
    extra = compare_mod.TUNE_WIDEN[widened] if widened else ()
    factors = [*compare_mod.TUNE_FACTORS, *extra]
    assert [s["factor"] for s in tuning["sweep"]] == factors
    assert [s["lr"] for s in tuning["sweep"]] == pytest.approx([0.01 * f for f in factors])
    assert counter == [len(factors), len(factors)]  # the total grew with the widening
    assert tuning["widened"] == widened and tuning["at_edge"] == at_edge
    assert tuning["lr"] == pytest.approx(0.01 * chosen_factor)
    assert tuning["seed"] == compare_mod.TUNE_SEED and tuning["steps"] == 5
    assert ("widening it once" in stream.getvalue()) == (widened is not None)


def test_an_edge_lr_is_marked_in_the_table():
    result = {
        "task": {"sample_unit": "examples"},
        "optimizers": {
            "adamw": {
                "lr": 0.3,
                "lr_source": "tuned",
                "tuning": {"at_edge": "high"},
                "summary": compare_mod.summarize([]),
            }
        },
    }
    result["optimizers"]["adamw"]["summary"]["runs"] = 0
    _, rows = compare_mod.table_rows(result)
    assert rows[0][1] == "0.3"  # no run: no mark either
    run = {
        "error": None,
        "diverged": False,
        "final_loss": 1.0,
        "steps_to_threshold": None,
        "samples_to_threshold": None,
        "seconds_to_threshold": None,
        "seconds_per_step": 0.01,
        "state_bytes": 8,
    }
    result["optimizers"]["adamw"]["summary"] = compare_mod.summarize([run])
    _, rows = compare_mod.table_rows(result)
    assert rows[0][1] == "0.3 (tuned, high edge)"


def test_progress_prints_the_total_eta_first_then_one_line_per_run():
    stream = io.StringIO()  # not a terminal: no bars, only the lines
    result = compare_mod.compare(
        "regression", ["sgd", "adamw"], steps=6, seeds=2, progress=Progress(stream=stream)
    )
    assert result["errors"] == []
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("compare regression: 4 runs (2 optimizers × 2 seeds")
    assert "estimated total" in lines[0] and "unknown" not in lines[0]
    assert len(lines) == 5
    for line, (name, seed) in zip(
        lines[1:], [("sgd", 0), ("adamw", 0), ("sgd", 1), ("adamw", 1)], strict=True
    ):
        lr = tasks.get("regression").lrs[name]
        assert f"] {name} lr={lr:.3g} seed {seed}: final " in line
        assert "ms/step" in line and "comparison ETA" in line
    assert lines[-1].endswith("comparison ETA 0 s")


def test_the_terminal_line_shows_step_loss_and_eta_without_tqdm(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "tqdm", None)
    stream = Terminal()
    progress = Progress(stream=stream)
    bar = progress.task("[1/1] adamw lr=0.003 seed 0", 4)
    for _ in range(4):
        bar.update(1, "loss 2.5")
    bar.close("[1/1] adamw lr=0.003 seed 0: final 2.5")
    text = stream.getvalue()
    assert "[1/1] adamw lr=0.003 seed 0  4/4  loss 2.5  ETA 0 s" in text
    assert text.endswith("[1/1] adamw lr=0.003 seed 0: final 2.5\n")


def test_format_duration():
    assert format_duration(4.4) == "4 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(7625) == "2 h 07 min"


def test_pytorch_optimizer_soap_runs_when_the_extra_is_installed(tmp_path):
    pytest.importorskip("pytorch_optimizer")
    out = tmp_path / "o"
    assert main([*BASE, "--optimizers", "pytorch_optimizer:SOAP", "--out", str(out)]) == 0
    info = _load(out)["optimizers"]["pytorch_optimizer:SOAP"]
    assert info["summary"]["runs"] == 1 and info["summary"]["state_bytes"]["mean"] > 0
    assert info["description"].startswith("pytorch_optimizer.SOAP")
