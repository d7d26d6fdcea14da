"""Learning-rate schedules that apply to any torch.optim-style optimizer alike.

A schedule is a multiplier on each parameter group's starting learning rate,
written into ``group["lr"]`` before every step. It needs nothing but
``optimizer.param_groups`` (no ``torch.optim.lr_scheduler``, which wraps
``optimizer.step`` and requires a ``torch.optim.Optimizer``), so the torch
baselines, fisherprec's Fisher variants and outside optimizers (pytorch-optimizer,
heavyball) are scheduled by the same code.

Schedules:

- ``"none"``: the multiplier is 1 at every step;
- ``"cosine"``: the usual language-model schedule: linear warm-up from
  ``1/warmup`` to 1 over the first ``warmup`` steps, then cosine decay from 1 at
  step ``warmup`` to ``min_factor`` at the last step.

Example:
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> schedule = LRSchedule(opt, "cosine", total_steps=100, warmup=10)
    >>> schedule.before_step(1)
    >>> round(opt.param_groups[0]["lr"], 6)
    0.01
"""

from __future__ import annotations

import math
from typing import Any

import torch

SCHEDULES = ("none", "cosine")
MIN_FACTOR = 0.1  # cosine decays to 10% of the peak lr (the nanoGPT/Chinchilla convention)


def lr_factor(
    schedule: str, step: int, total_steps: int, warmup: int, min_factor: float = MIN_FACTOR
) -> float:
    """The multiplier for the `step`-th optimizer step (1-based) of `total_steps`.

    Raises:
        ValueError: unknown `schedule`, `step` outside 1..total_steps, or a
            `warmup` outside 0..total_steps.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; available: {', '.join(SCHEDULES)}")
    if total_steps < 1 or not 1 <= step <= total_steps:
        raise ValueError(f"step must be in 1..total_steps={total_steps}, got {step}")
    if not 0 <= warmup <= total_steps:
        raise ValueError(f"warmup must be in 0..total_steps={total_steps}, got {warmup}")
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_factor must be in [0, 1], got {min_factor}")
    if schedule == "none":
        return 1.0
    if step <= warmup:
        return step / warmup
    decay_steps = total_steps - warmup
    if decay_steps <= 0:
        return 1.0
    # 0 at the first step after warm-up... 1 at the last: the last step uses min_factor.
    progress = (step - warmup - 1) / max(1, decay_steps - 1)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(total_steps: int, fraction: float) -> int:
    """Warm-up length for a run of `total_steps`: ``round(fraction × total)``,
    at least 1 when `fraction` > 0, never more than the run."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"warm-up fraction must be in [0, 1], got {fraction}")
    if fraction == 0.0:
        return 0
    return min(total_steps, max(1, round(fraction * total_steps)))


class LRSchedule:
    """Drives ``group["lr"]`` of every parameter group of `optimizer` as
    ``starting lr × lr_factor(...)``; the starting lrs are read at construction."""

    def __init__(
        self,
        optimizer: Any,
        schedule: str,
        total_steps: int,
        warmup: int,
        min_factor: float = MIN_FACTOR,
    ) -> None:
        lr_factor(schedule, 1, total_steps, warmup, min_factor)  # validates the arguments
        groups = getattr(optimizer, "param_groups", None)
        if not groups or any("lr" not in g for g in groups):
            raise TypeError(
                f"optimizer {type(optimizer).__name__} has no param_groups with an 'lr': "
                "a learning-rate schedule cannot drive it"
            )
        self.optimizer = optimizer
        self.schedule = schedule
        self.total_steps = total_steps
        self.warmup = warmup
        self.min_factor = min_factor
        self.base_lrs = [float(g["lr"]) for g in groups]

    def factor(self, step: int) -> float:
        return lr_factor(self.schedule, step, self.total_steps, self.warmup, self.min_factor)

    def before_step(self, step: int) -> None:
        """Set every group's lr for the `step`-th step (1-based)."""
        factor = self.factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            lr = base * factor
            if isinstance(group["lr"], torch.Tensor):  # a tensor lr stays the same tensor
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
