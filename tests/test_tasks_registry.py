"""The task registry behind `fisherprec compare`."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fisherprec.tasks import registry


def test_builtin_tasks_are_discovered():
    assert {"regression", "classification", "bytelm"} <= set(registry.names())


def test_unknown_and_duplicate_names_are_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown task 'nope'; available: .*regression"):
        registry.get("nope")
    task = registry.get("regression")
    registry.register(task)  # the same entry again: fine (module re-import)
    with pytest.raises(ValueError, match="task 'regression' is already registered"):
        registry.register(dataclasses.replace(task, steps=task.steps + 1))


@pytest.mark.parametrize("name", ["regression", "classification", "bytelm"])
def test_problems_are_deterministic_per_seed(name):
    task = registry.get(name)
    cpu = torch.device("cpu")
    a, b, c = task.make(0, cpu), task.make(0, cpu), task.make(1, cpu)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert any(
        not torch.equal(p, q)
        for p, q in zip(a.model.parameters(), c.model.parameters(), strict=True)
    )
    xa, ya = a.batch()
    xb, yb = b.batch()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, c.batch()[0])
    assert a.heldout_loss() == b.heldout_loss()
    loss = a.loss(a.model(xa), ya)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert xa.shape[0] * (xa.shape[1] if name == "bytelm" else 1) == task.samples_per_step


def test_heldout_loss_is_the_mean_over_chunks():
    task = registry.get("classification")
    problem = task.make(0, torch.device("cpu"))
    whole = problem.heldout_loss()
    problem.eval_chunk = 1000  # 4096 rows: uneven chunks
    assert problem.heldout_loss() == pytest.approx(whole, rel=1e-5)
    x, y = problem.heldout
    with torch.no_grad():
        assert whole == pytest.approx(float(problem.loss(problem.model(x), y)), rel=1e-6)


def test_seeded_module_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    first = registry.seeded_module(3, lambda: torch.nn.Linear(2, 2))
    second = registry.seeded_module(3, lambda: torch.nn.Linear(2, 2))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.weight, second.weight)
