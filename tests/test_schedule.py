"""The learning-rate schedules of fisherprec.schedule and their use in `compare`."""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import pytest
import torch

from fisherprec import schedule
from fisherprec.compare import train
from fisherprec.tasks import registry as tasks


def test_cosine_warms_up_linearly_then_decays_to_the_floor():
    total, warmup = 100, 10
    f = [schedule.lr_factor("cosine", s, total, warmup) for s in range(1, total + 1)]
    assert f[:warmup] == pytest.approx([s / warmup for s in range(1, warmup + 1)])
    assert f[warmup] == pytest.approx(1.0)  # first decay step: the peak
    decay = f[warmup:]
    assert all(a > b for a, b in itertools.pairwise(decay))  # strictly decreasing
    assert f[-1] == pytest.approx(schedule.MIN_FACTOR)
    # The halfway point of the decay is halfway between the peak and the floor.
    mid = schedule.lr_factor("cosine", warmup + 1 + (total - warmup - 1) // 2, total, warmup)
    expected = schedule.MIN_FACTOR + (1 - schedule.MIN_FACTOR) * 0.5 * (
        1 + math.cos(math.pi * ((total - warmup - 1) // 2) / (total - warmup - 1))
    )
    assert mid == pytest.approx(expected)
    assert 0.5 < mid < 0.6  # (1 + 0.1) / 2, up to the integer halfway step


def test_none_is_constant_and_leaves_every_group_lr_alone():
    assert {schedule.lr_factor("none", s, 37, 5) for s in range(1, 38)} == {1.0}
    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2))]
    opt = torch.optim.SGD([{"params": params[:1], "lr": 0.1}, {"params": params[1:]}], lr=0.7)
    driver = schedule.LRSchedule(opt, "none", 20, 0)
    for step in range(1, 21):
        driver.before_step(step)
        assert [g["lr"] for g in opt.param_groups] == [0.1, 0.7]


def test_lr_schedule_scales_each_group_from_its_own_starting_lr():
    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2))]
    opt = torch.optim.AdamW([{"params": params[:1], "lr": 0.2}, {"params": params[1:]}], lr=0.01)
    driver = schedule.LRSchedule(opt, "cosine", 50, 5)
    for step in (1, 3, 5, 6, 30, 50):
        driver.before_step(step)
        factor = schedule.lr_factor("cosine", step, 50, 5)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2 * factor, 0.01 * factor])
    tensor_lr = torch.optim.Adam([torch.nn.Parameter(torch.randn(2))], lr=torch.tensor(0.5))
    lr_tensor = tensor_lr.param_groups[0]["lr"]
    schedule.LRSchedule(tensor_lr, "cosine", 10, 2).before_step(1)
    assert tensor_lr.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("linear", 1, 10, 0), "unknown schedule 'linear'"),
        (("cosine", 0, 10, 0), "step must be in 1..total_steps=10, got 0"),
        (("cosine", 11, 10, 0), "step must be in 1..total_steps=10, got 11"),
        (("cosine", 1, 10, 11), "warmup must be in 0..total_steps=10, got 11"),
    ],
)
def test_bad_schedule_arguments_name_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        schedule.lr_factor(*args)


def test_warmup_steps_and_an_optimizer_without_lr():
    assert schedule.warmup_steps(1000, 0.05) == 50
    assert schedule.warmup_steps(3, 0.05) == 1 and schedule.warmup_steps(3, 0.0) == 0
    with pytest.raises(ValueError, match="warm-up fraction"):
        schedule.warmup_steps(10, 1.5)

    class NoLr:
        def __init__(self) -> None:
            self.param_groups = [{"params": []}]

    with pytest.raises(TypeError, match="no param_groups with an 'lr'"):
        schedule.LRSchedule(NoLr(), "cosine", 10, 1)


class RecordsLr(torch.optim.SGD):
    """Records the lr of its first group at every step (used as tests.test_schedule:RecordsLr)."""

    seen: ClassVar[list[float]] = []

    def step(self, closure=None):
        RecordsLr.seen.append(float(self.param_groups[0]["lr"]))
        return super().step(closure)


@pytest.mark.parametrize("name", ["sgd", "tests.test_schedule:RecordsLr"])
def test_train_applies_the_schedule_to_registered_and_outside_optimizers(name, monkeypatch):
    from fisherprec.optim import registry
    from fisherprec.optim.registry import OptimizerEntry

    if name == "sgd":  # the registered sgd, with the recording class as its factory
        entry = OptimizerEntry("sgd", RecordsLr, {"lr": 0.05})
        monkeypatch.setitem(registry._REGISTRY, "sgd", entry)
    RecordsLr.seen = []
    task = tasks.get("regression")
    train(
        task,
        name,
        0.05,
        0,
        steps=12,
        threshold=0.0,
        device=torch.device("cpu"),
        schedule="cosine",
        warmup_fraction=0.25,
    )
    expected = [0.05 * schedule.lr_factor("cosine", s, 12, 3) for s in range(1, 13)]
    assert RecordsLr.seen == pytest.approx(expected)
    RecordsLr.seen = []
    train(task, name, 0.05, 0, steps=5, threshold=0.0, device=torch.device("cpu"))
    assert RecordsLr.seen == [0.05] * 5  # the default: no schedule
