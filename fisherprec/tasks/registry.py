"""The registry of built-in training tasks that `fisherprec compare` runs.

A task module in ``fisherprec/tasks/`` calls :func:`register` with a
:class:`Task`; modules are discovered, so a new task needs no edit elsewhere.
A task is a recipe: ``task.make(seed, device)`` returns a fresh
:class:`Problem` (data, model and loss) that is identical for every optimizer
given the same seed, so that optimizers are compared on the same initial
weights and the same stream of minibatches.

Example:
    >>> from fisherprec.tasks import registry
    >>> task = registry.get("regression")
    >>> problem = task.make(seed=0, device=torch.device("cpu"))
    >>> inputs, targets = problem.batch()
    >>> float(problem.loss(problem.model(inputs), targets).detach()) > 0
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from fisherprec._discovery import import_submodules

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Problem:
    """One instance of a task: a model with its initial weights, a stream of
    training minibatches and a fixed held-out set."""

    model: torch.nn.Module
    batch: Callable[[], Batch]  # the next training minibatch (inputs, targets) on the device
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # loss(model(inputs), targets)
    heldout: Batch  # generalization error = loss on these (no gradient)
    eval_chunk: int = 4096  # held-out rows per forward pass

    @torch.no_grad()
    def heldout_loss(self) -> float:
        """Mean loss over the held-out set (the generalization error ε)."""
        inputs, targets = self.heldout
        total, count = 0.0, 0
        for start in range(0, inputs.shape[0], self.eval_chunk):
            x = inputs[start : start + self.eval_chunk]
            y = targets[start : start + self.eval_chunk]
            total += float(self.loss(self.model(x), y)) * x.shape[0]
            count += x.shape[0]
        return total / count


@dataclass(frozen=True)
class Task:
    """A built-in task and its documented defaults."""

    name: str
    description: str
    make: Callable[[int, torch.device], Problem]  # make(seed, device)
    steps: int  # default number of optimizer steps
    threshold: float  # default error threshold δ on the held-out loss
    samples_per_step: int  # observations consumed by one step (for T_sample)
    sample_unit: str  # what an observation is: "examples", "tokens"
    loss_name: str  # e.g. "held-out MSE"
    # Default lr per optimizer name. A Fisher optimizer not listed takes the
    # "adamw" entry (fisherprec.compare.default_lr): list one only to override it.
    lrs: Mapping[str, float] = field(default_factory=dict)
    log_scale: bool = False  # plot the loss on a log axis
    evals: int = 50  # held-out evaluations per run (plus one before the first step)
    # The default learning-rate schedule (fisherprec.schedule.SCHEDULES), applied to every
    # optimizer alike, and its warm-up as a fraction of the run's steps.
    schedule: str = "none"
    warmup_fraction: float = 0.0


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in _TASKS and _TASKS[task.name] != task:
        raise ValueError(f"task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def _discover() -> None:
    package = importlib.import_module("fisherprec.tasks")
    import_submodules(package.__name__, package.__path__)


def names() -> list[str]:
    """Names of every registered task (discovered modules in alphabetical order)."""
    _discover()
    return list(_TASKS)


def get(name: str) -> Task:
    _discover()
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(_TASKS)}") from None


def seeded_module(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`build()` under torch's global RNG seeded with `seed`, restored afterwards:
    the same initial weights for every optimizer, without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
