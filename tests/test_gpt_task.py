"""The `gpt` task: shape, held-out split, deterministic training (tiny overrides)."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from fisherprec.compare import train
from fisherprec.tasks import gpt
from fisherprec.tasks import registry as tasks
from fisherprec.tasks.stdlib_text import stdlib_dir

CPU = torch.device("cpu")
TINY = {"layers": 2, "width": 32, "heads": 2, "context": 32, "batch": 4, "heldout_windows": 8}
TINY_CORPUS = 300_000


def _tiny_task(**changes):
    make = functools.partial(gpt.make_problem, corpus_bytes=TINY_CORPUS, **TINY)
    return dataclasses.replace(
        gpt.TASK, make=lambda seed, device: make(seed, device), evals=4, **changes
    )


def test_the_default_task_is_gpt_shaped():
    task = tasks.get("gpt")
    assert task is gpt.TASK and task.sample_unit == "tokens"
    assert task.samples_per_step == gpt.BATCH * gpt.CONTEXT  # T_sample counts tokens
    assert task.schedule == "cosine" and 0 < task.warmup_fraction < 1
    problem = task.make(0, CPU)
    model = problem.model
    params = sum(p.numel() for p in model.parameters())
    assert params >= 500_000 and len(model.blocks) >= 4
    assert model.embed.embedding_dim >= 128 and model.position.shape[0] >= 128
    assert model.head.weight.data_ptr() != model.embed.weight.data_ptr()  # untied
    x, y = problem.batch()
    assert x.shape == y.shape == (gpt.BATCH, gpt.CONTEXT) and x.dtype == torch.int64
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (gpt.BATCH, gpt.CONTEXT, 256)
    assert torch.isfinite(problem.loss(logits, y))


def test_heldout_files_are_disjoint_from_training_files():
    data = gpt.corpus()
    assert data.train_files == len(data.train_names) > 100
    assert data.heldout_files == len(data.heldout_names) > 10
    assert not set(data.train_names) & set(data.heldout_names)
    root = stdlib_dir()
    # The held-out bytes are exactly the held-out files (the last one possibly cut at
    # the budget), so no held-out window reads a training file.
    heldout = b"".join((root / name).read_bytes() for name in data.heldout_names)
    assert heldout.startswith(bytes(data.heldout.tolist()))
    assert data.heldout.numel() > len(heldout) - (root / data.heldout_names[-1]).stat().st_size
    train_bytes = b"".join((root / name).read_bytes() for name in data.train_names)
    assert train_bytes.startswith(bytes(data.train[:200_000].tolist()))


def test_tiny_gpt_trains_deterministically_per_seed():
    task = _tiny_task()
    runs = [
        train(task, "adamw", 3e-3, seed, steps=6, threshold=0.0, device=CPU, schedule="cosine")
        for seed in (0, 0, 1)
    ]
    assert runs[0]["losses"] == runs[1]["losses"]  # same seed: same data and weights
    assert runs[0]["losses"] != runs[2]["losses"]
    assert runs[0]["steps"] == [0, 1, 2, 3, 4, 5, 6]
    assert runs[0]["losses"][-1] < runs[0]["losses"][0] < 5.7  # it learns; ln 256 ≈ 5.55


def test_tiny_gpt_runs_in_compare_with_an_outside_torch_class(monkeypatch):
    from fisherprec.compare import compare

    monkeypatch.setitem(tasks._TASKS, "gpt-tiny", _tiny_task(name="gpt-tiny"))
    result = compare(
        "gpt-tiny",
        ["adamw", "torch.optim:AdamW"],
        steps=4,
        seeds=1,
        opt_kwargs={"torch.optim:AdamW": {"lr": 3e-3}},
    )
    assert result["errors"] == [] and result["task"]["schedule"]["name"] == "cosine"
    ours, theirs = (result["optimizers"][n]["runs"][0] for n in ("adamw", "torch.optim:AdamW"))
    # The registered adamw is torch.optim.AdamW: built through module:Class with the same lr
    # and the same schedule, it follows the same curve.
    assert ours["losses"] == pytest.approx(theirs["losses"], rel=1e-6)
