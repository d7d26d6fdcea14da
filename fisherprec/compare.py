"""``fisherprec compare``: every registered optimizer on a built-in task, measured
by the paper's two efficiency metrics (docs/theory.md, "Information kinematics and efficiency metrics"; paper eq. 5).

For an error threshold δ on the held-out loss (the generalization error ε):

- T_sample(δ): optimizer steps, and observations (steps × batch), until ε ≤ δ
  for the first time (ε is evaluated ``task.evals`` times per run);
- T_compute(δ): training wall-clock seconds until the same: forward, backward
  and optimizer step (drawing minibatches and evaluating are not counted).

Each optimizer runs on the same seeds (same data, same initial weights) and
under the same learning-rate schedule (the task's, or ``--schedule``); the
table reports mean ± sample std over seeds, and the JSON every number.
The optimizers come from :mod:`fisherprec.optim.registry`, the tasks from
:mod:`fisherprec.tasks.registry`: a newly registered variant or task appears
here with no edit. An optimizer named ``module:Class`` (``torch.optim:Adam``,
``pytorch_optimizer:SOAP``, ``heavyball:PSGDKron``) is any torch.optim-style
class, built as ``Class(params, lr=..., **kwargs)``; the outside libraries come
with the ``peers`` extra (``pip install 'fisherprec[peers]'``).

The tuning protocol (``--tune``), the same for every optimizer: the lr grid is
the optimizer's default lr × ``TUNE_FACTORS``; each grid point trains
``steps // TUNE_STEPS_DIVISOR`` steps (with the schedule stretched over those
steps) on seed ``TUNE_SEED``, which no reported run uses; the score is the mean
of the last three held-out losses (a diverged or failed point scores +∞) and
the lowest score wins. When the winner is at an end of the grid, the grid is
widened once in that direction by ``TUNE_WIDEN`` more points; a winner still at
the end after that is marked "edge" in the table and ``at_edge`` in the JSON.

Example:
    >>> from fisherprec.compare import compare, format_table
    >>> result = compare("regression", ["sgd", "adamw"], steps=20, seeds=1)
    >>> sorted(result["optimizers"])
    ['adamw', 'sgd']
    >>> print(format_table(result))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import shlex
import statistics
import sys
import textwrap
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fisherprec import schedule as schedules
from fisherprec._cliutils import (
    Bar,
    Progress,
    UsageError,
    format_bytes,
    format_duration,
    parse_device,
    positive_int,
)
from fisherprec.optim.registry import OptimizerEntry

# --tune: learning rates swept around the default, on a seed no reported run uses,
# for half the steps; the lowest mean of the last 3 held-out losses wins. A winner at
# an end of the grid widens it once in that direction (half-decade steps, like the grid).
TUNE_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
TUNE_WIDEN = {"low": (0.03, 0.01), "high": (30.0, 100.0)}
TUNE_SEED = 10_000
TUNE_STEPS_DIVISOR = 2
TUNE_SCORE_EVALS = 3
# The optional extra that installs the outside optimizers named module:Class.
PEERS_EXTRA = "peers"
PEER_PACKAGES = {"pytorch_optimizer": "pytorch-optimizer", "heavyball": "heavyball"}
# Outside libraries that compile their step by default, and the module attribute that
# makes them eager: every optimizer in a comparison runs eagerly, so that the time per
# step is the optimizer's and not the compiler's (heavyball's torch.compile of SOAP took
# about 2 minutes of the first two steps on the gpt task on the 2-core machine).
EAGER_SWITCHES = {"heavyball": ("heavyball.utils", "compile_mode", None)}
ALL_REGISTERED = "all"  # in --optimizers: every registered optimizer
ETA_PROBE_STEPS = 3  # steps per optimizer timed before the comparison for its total ETA
DEFAULT_TASK = "regression"
DEFAULT_SEEDS = 2
DEFAULT_OUT = "fisherprec-compare"
JOURNAL_NAME = "runs-{task}.jsonl"  # under --out: every finished run, for --resume
_HELP_WIDTH = 88


# --------------------------------------------------------------------------- helpers


def _finite(x: float | None) -> float | None:
    """`x` as a float, or None when missing or non-finite (JSON has no NaN)."""
    return float(x) if x is not None and math.isfinite(x) else None


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state: ``optimizer.memory_bytes()`` when the optimizer
    reports it, else the sum over every tensor in ``optimizer.state``."""
    report = getattr(optimizer, "memory_bytes", None)
    if callable(report):
        return int(report())

    def tensors(value: Any) -> Iterable[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from tensors(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from tensors(item)

    return sum(t.numel() * t.element_size() for t in tensors(list(optimizer.state.values())))


def default_lr(
    task_lrs: Any, name: str | OptimizerEntry, kwargs: Any = None
) -> tuple[float | None, str]:
    """The documented learning rate for an optimizer on a task, and where it
    came from: an ``lr`` in `kwargs` (``--opt-kwargs``), else the task's table,
    else, for a Fisher optimizer, the task's AdamW lr (they are drop-in
    replacements whose lr carries over, so a task lists one only to override
    it), else the entry's defaults (registry, or ``--opt-kwargs`` for
    ``module:Class``), else the optimizer's own default (None)."""
    entry = resolve_optimizer(name) if isinstance(name, str) else name
    if kwargs and "lr" in kwargs:
        return float(kwargs["lr"]), "--opt-kwargs"
    if entry.name in task_lrs:
        return float(task_lrs[entry.name]), "task default"
    if entry.fisher is not None and "adamw" in task_lrs:
        return float(task_lrs["adamw"]), "task default (AdamW's)"
    if "lr" in entry.defaults:
        source = "registry default" if ":" not in entry.name else "--opt-kwargs"
        return float(entry.defaults["lr"]), source
    return None, "optimizer default"


def _import_outside(name: str, module_name: str) -> Any:
    try:
        module = importlib.import_module(module_name)
        switch = EAGER_SWITCHES.get(module_name.split(".")[0])
        if switch is not None:
            setattr(importlib.import_module(switch[0]), switch[1], switch[2])
        return module
    except ModuleNotFoundError as err:
        missing = err.name or module_name
        root = module_name.split(".")[0]
        if missing.split(".")[0] == root:
            package = PEER_PACKAGES.get(root, root)
            raise UsageError(
                f"optimizer {name!r} needs the module {module_name!r}, which is not installed; "
                f"the outside optimizers come with the {PEERS_EXTRA!r} extra: "
                f"pip install 'fisherprec[{PEERS_EXTRA}]' (or pip install {package})"
            ) from None
        raise UsageError(
            f"optimizer {name!r}: importing {module_name!r} failed because its dependency "
            f"{missing!r} is not installed ({err})"
        ) from None
    except Exception as err:  # an installed module that fails to import (e.g. no triton)
        raise UsageError(
            f"optimizer {name!r}: importing {module_name!r} failed: {type(err).__name__}: {err}"
        ) from None


def resolve_optimizer(name: str, kwargs: Any = None) -> OptimizerEntry:
    """The entry that builds optimizer `name`: a registered name, or ``module:Class``
    for any torch.optim-style class (``Class(params, lr=..., **kwargs)``).

    `kwargs` (``--opt-kwargs``) override the entry's defaults. A ``module:Class``
    is imported and built once on a dummy parameter here, so that a missing
    module, a missing class or bad keyword arguments are a clear error before
    any training starts.

    Raises:
        UsageError: unknown name, module not installed (naming the ``peers`` extra),
            no such class, or a class that does not build a torch.optim-style optimizer.
    """
    import fisherprec.optim  # noqa: F401  (imports every variant: fills the registry)
    from fisherprec.optim import registry

    kwargs = dict(kwargs or {})
    if ":" not in name:
        if name not in registry.REGISTRY:
            raise UsageError(
                f"unknown optimizer {name!r}; available: {', '.join(registry.REGISTRY)} "
                "(or module:Class for an outside optimizer, e.g. torch.optim:Adam)"
            )
        entry = registry.get(name)
        if not kwargs:
            return entry
        return OptimizerEntry(
            entry.name, entry.factory, {**entry.defaults, **kwargs}, entry.fisher, entry.description
        )
    module_name, _, class_name = name.partition(":")
    if not module_name or not class_name or ":" in class_name:
        raise UsageError(
            f"optimizer {name!r}: an outside optimizer is written module:Class, "
            "e.g. pytorch_optimizer:SOAP"
        )
    module = _import_outside(name, module_name)
    factory = getattr(module, class_name, None)
    if factory is None or not callable(factory):
        candidates = [n for n in dir(module) if n.lower() == class_name.lower()]
        hint = f"; did you mean {module_name}:{candidates[0]}?" if candidates else ""
        raise UsageError(
            f"optimizer {name!r}: module {module_name!r} has no class {class_name!r}{hint}"
        )
    try:
        probe = factory([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)
    except Exception as err:
        raise UsageError(
            f"optimizer {name!r}: {module_name}.{class_name}(params, **{kwargs!r}) failed: "
            f"{type(err).__name__}: {err} (fix the keyword arguments with --opt-kwargs)"
        ) from None
    groups = getattr(probe, "param_groups", None)
    if not callable(getattr(probe, "step", None)) or not groups or "lr" not in groups[0]:
        raise UsageError(
            f"optimizer {name!r}: {module_name}.{class_name} is not a torch.optim-style "
            "optimizer (it needs step() and param_groups with an 'lr')"
        )
    version = getattr(sys.modules.get(module_name.split(".")[0]), "__version__", None)
    return OptimizerEntry(
        name,
        factory,
        kwargs,
        None,
        f"{module_name}.{class_name}" + (f" {version}" if version else "") + " (outside optimizer)",
    )


def _own_default_lr(entry: OptimizerEntry) -> float:
    """The lr an optimizer picks when given none: read off a throwaway instance."""
    probe = entry.factory([torch.nn.Parameter(torch.zeros(1))], **entry.defaults)
    return float(probe.param_groups[0]["lr"])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _eval_steps(steps: int, evals: int) -> list[int]:
    every = max(1, steps // max(1, evals))
    return sorted({0, steps, *range(every, steps + 1, every)})


# --------------------------------------------------------------------------- one run


def _load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none (Windows).
    The comparison's own threads count in it: a quiet machine reads about the
    number of torch threads while a run trains."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


class RunJournal:
    """Every finished run of a comparison, one JSON line each, appended as the run
    ends, so that a comparison that was stopped (Ctrl-C, a lost machine, a time
    limit) resumes where it stopped: ``--resume`` re-runs only what had not
    finished. A run is reused only when everything that decides it is the same:
    the task, the optimizer and its keyword arguments, lr, seed, steps, threshold,
    schedule, device, threads and the fisherprec and torch versions (`context`
    holds the comparison-wide part). Failed runs are not journaled (they run
    again); diverged ones are results and are kept."""

    def __init__(self, path: str | Path, *, resume: bool, context: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.context = dict(context)
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self._runs: dict[str, dict[str, Any]] = {}
        self._finished: dict[str, str] = {}  # key -> the date of the invocation that ran it
        self.reused = 0
        self.reused_from: set[str] = set()  # invocations whose runs this one reused
        self.previous: Path | None = None
        if resume and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    item = json.loads(line)
                    self._runs[item["key"]] = item["run"]
                    self._finished[item["key"]] = item["invocation"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short when the process was killed: rerun it
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > 0:
                # A comparison started afresh keeps the last journal beside it: a
                # forgotten --resume costs a rerun, never hours of results.
                self.previous = self.path.with_suffix(".jsonl.prev")
                self.path.replace(self.previous)
            self.path.write_text("")

    def key(
        self, name: str, kwargs: Mapping[str, Any], lr: float | None, seed: int, steps: int
    ) -> str:
        what = {**self.context, "optimizer": name, "kwargs": dict(kwargs), "lr": lr}
        return json.dumps({**what, "seed": seed, "steps": steps}, sort_keys=True, default=repr)

    def __len__(self) -> int:
        return len(self._runs)

    def count(self, name: str, steps: int) -> int:
        """Journaled runs of optimizer `name` of `steps` steps (for the ETA)."""
        keys = (json.loads(k) for k in self._runs)
        context = self.context.items()
        return sum(
            1
            for k in keys
            if k["optimizer"] == name
            and k["steps"] == steps
            and all(k.get(a) == b for a, b in context)
        )

    def get(self, key: str) -> dict[str, Any] | None:
        run = self._runs.get(key)
        if run is not None:
            self.reused += 1
            self.reused_from.add(self._finished[key])
        return run

    def add(self, key: str, run: dict[str, Any]) -> None:
        self._runs[key] = run
        self._finished[key] = self.started
        line = json.dumps({"key": key, "invocation": self.started, "run": run}, allow_nan=False)
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "runs": len(self._runs),
            "reused": self.reused,
            "reused_from": sorted(self.reused_from),
        }


def _journal_lookup(
    journal: RunJournal | None, entry: OptimizerEntry, lr: float | None, seed: int, steps: int
) -> tuple[str | None, dict[str, Any] | None]:
    """(the run's journal key, its journaled result or None); (None, None) without a journal."""
    if journal is None:
        return None, None
    key = journal.key(entry.name, entry.defaults, lr, seed, steps)
    return key, journal.get(key)


def _journal_add(journal: RunJournal | None, key: str | None, run: dict[str, Any]) -> None:
    if journal is not None and key is not None:
        journal.add(key, run)


def train(
    task: Any,
    name: str | OptimizerEntry,
    lr: float | None,
    seed: int,
    *,
    steps: int,
    threshold: float,
    device: torch.device,
    bar: Bar | None = None,
    schedule: str = "none",
    warmup_fraction: float = 0.0,
) -> dict[str, Any]:
    """Train a fresh instance of `task` (seed `seed`) with optimizer `name` (a
    registered name, ``module:Class`` or an entry from :func:`resolve_optimizer`)
    for `steps` steps, under the lr `schedule` (fisherprec.schedule) with a
    warm-up of ``warmup_fraction × steps``; returns the held-out curve and the
    efficiency metrics.

    A non-finite held-out loss ends the run early with ``diverged=True``.
    Exceptions from the model or the optimizer propagate.
    """
    entry = resolve_optimizer(name) if isinstance(name, str) else name
    problem = task.make(seed, device)
    model = problem.model
    kwargs = {} if lr is None else {"lr": lr}
    optimizer = entry.factory(model.parameters(), **{**entry.defaults, **kwargs})
    if lr is None:
        lr = float(optimizer.param_groups[0]["lr"])
    scheduler = schedules.LRSchedule(
        optimizer, schedule, steps, schedules.warmup_steps(steps, warmup_fraction)
    )
    checkpoints = set(_eval_steps(steps, task.evals))
    curve_steps: list[int] = []
    curve_seconds: list[float] = []
    curve_losses: list[float | None] = []
    reached: int | None = None
    reached_seconds: float | None = None
    diverged = False
    elapsed = 0.0
    done = 0
    load_at_start = _load_average()

    def evaluate(step: int) -> bool:
        nonlocal reached, reached_seconds, diverged
        loss = problem.heldout_loss()
        curve_steps.append(step)
        curve_seconds.append(elapsed)
        curve_losses.append(_finite(loss))
        if not math.isfinite(loss):
            diverged = True
            return False
        if reached is None and loss <= threshold:
            reached, reached_seconds = step, elapsed
        return True

    for step in range(1, steps + 1 if evaluate(0) else 1):
        inputs, targets = problem.batch()
        _synchronize(device)
        scheduler.before_step(step)  # not timed: setting a float per group
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        problem.loss(model(inputs), targets).backward()
        optimizer.step()
        _synchronize(device)
        elapsed += time.perf_counter() - start
        done = step
        if step in checkpoints and not evaluate(step):
            break
        if bar is not None:
            last = curve_losses[-1]
            bar.update(1, "diverged" if last is None else f"loss {last:.4g}")
    return {
        "seed": seed,
        "lr": lr,
        "steps": curve_steps,
        "seconds": curve_seconds,
        "losses": curve_losses,
        "final_loss": None if diverged else curve_losses[-1],
        "diverged": diverged,
        "steps_done": done,
        "steps_to_threshold": reached,
        "samples_to_threshold": None if reached is None else reached * task.samples_per_step,
        "seconds_to_threshold": reached_seconds,
        "seconds_per_step": elapsed / done if done else None,
        "state_bytes": state_bytes(optimizer),
        "load": [load_at_start, _load_average()],
        "error": None,
    }


def _error_run(seed: int, lr: float | None, err: BaseException) -> dict[str, Any]:
    return {"seed": seed, "lr": lr, "error": f"{type(err).__name__}: {err}"}


def _report_error(label: str, err: BaseException) -> None:
    print(f"fisherprec compare: {label} failed: {type(err).__name__}: {err}", file=sys.stderr)
    tb = traceback.extract_tb(err.__traceback__)
    if tb:
        frame = tb[-1]
        print(f"    at {frame.filename}:{frame.lineno} in {frame.name}", file=sys.stderr)


# --------------------------------------------------------------------------- summary


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over seeds of every metric (errored runs left out;
    times to threshold over the runs that reached it)."""
    ok = [r for r in runs if r.get("error") is None]
    reached = [r for r in ok if r["steps_to_threshold"] is not None]
    return {
        "runs": len(ok),
        "errors": len(runs) - len(ok),
        "diverged": sum(r["diverged"] for r in ok),
        "reached": len(reached),
        "final_loss": _stats([r["final_loss"] for r in ok if not r["diverged"]]),
        "steps_to_threshold": _stats([r["steps_to_threshold"] for r in reached]),
        "samples_to_threshold": _stats([r["samples_to_threshold"] for r in reached]),
        "seconds_to_threshold": _stats([r["seconds_to_threshold"] for r in reached]),
        "seconds_per_step": _stats([r["seconds_per_step"] for r in ok]),
        "state_bytes": _stats([r["state_bytes"] for r in ok]),
    }


# --------------------------------------------------------------------------- the comparison


def _resolve_optimizers(
    names: Sequence[str] | None, opt_kwargs: Mapping[str, Any] | None = None
) -> dict[str, OptimizerEntry]:
    """Entries for the requested names in order, duplicates dropped; ``all`` (or no
    names) is every registered optimizer. `opt_kwargs` maps a name to its extra
    keyword arguments."""
    import fisherprec.optim  # noqa: F401  (imports every variant: fills the registry)
    from fisherprec.optim import registry

    ordered: list[str] = []
    for name in names or [ALL_REGISTERED]:
        for item in list(registry.REGISTRY) if name == ALL_REGISTERED else [name]:
            if item not in ordered:
                ordered.append(item)
    opt_kwargs = dict(opt_kwargs or {})
    for name, kwargs in opt_kwargs.items():
        if name not in ordered:
            raise UsageError(
                f"--opt-kwargs names {name!r}, which is not among the optimizers compared "
                f"({', '.join(ordered)})"
            )
        if not isinstance(kwargs, Mapping):
            raise UsageError(
                f"--opt-kwargs for {name!r} must be a JSON object of keyword arguments, "
                f"got {kwargs!r}"
            )
    return {name: resolve_optimizer(name, opt_kwargs.get(name)) for name in ordered}


def _resolve_task(name: str) -> Any:
    from fisherprec.tasks import registry as tasks

    try:
        return tasks.get(name)
    except ValueError as err:
        raise UsageError(str(err)) from None


class _Eta:
    """The remaining time of the whole comparison: per optimizer, seconds per step
    and per-run overhead (building the task, held-out evaluations), first from a
    short probe, then from the runs as they finish, times the steps still planned."""

    def __init__(self) -> None:
        self.per_step: dict[str, float] = {}
        self.overhead: dict[str, float] = {}
        self.planned: dict[str, list[int]] = {}  # name -> steps of each run still to do

    def plan(self, name: str, steps: int, runs: int = 1) -> None:
        self.planned.setdefault(name, []).extend([steps] * runs)

    def finished(self, name: str, steps: int, wall: float | None, done: int = 0) -> None:
        """A planned run of `steps` steps ended after `done` steps and `wall` seconds
        (None: it failed, nothing learnt)."""
        pending = self.planned.get(name, [])
        if steps in pending:
            pending.remove(steps)
        if wall is not None and done > 0 and name in self.overhead:
            self.per_step[name] = max(0.0, wall - self.overhead[name]) / done

    def remaining(self) -> float | None:
        total = 0.0
        for name, pending in self.planned.items():
            if not pending:
                continue
            if name not in self.per_step:
                return None
            total += sum(self.per_step[name] * s + self.overhead[name] for s in pending)
        return total

    def text(self) -> str:
        left = self.remaining()
        return "" if left is None else f"; comparison ETA {format_duration(left)}"


def _probe(
    task: Any, entry: OptimizerEntry, lr: float | None, steps: int, device: torch.device
) -> tuple[float, float]:
    """(seconds per step, seconds of per-run overhead) of `entry` on `task`, from
    ``ETA_PROBE_STEPS`` steps on the tuning seed (the first step, which may
    compile or allocate, is not counted) and one held-out evaluation."""
    start = time.perf_counter()
    problem = task.make(TUNE_SEED, device)
    made = time.perf_counter() - start
    kwargs = {} if lr is None else {"lr": lr}
    optimizer = entry.factory(problem.model.parameters(), **{**entry.defaults, **kwargs})
    times = []
    for _ in range(ETA_PROBE_STEPS):
        inputs, targets = problem.batch()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        problem.loss(problem.model(inputs), targets).backward()
        optimizer.step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    problem.heldout_loss()
    evaluation = time.perf_counter() - start
    per_step = statistics.fmean(times[1:]) if len(times) > 1 else times[0]
    return per_step, made + evaluation * len(_eval_steps(steps, task.evals))


def _best(sweep: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [s for s in sweep if s["score"] is not None]
    return min(scored, key=lambda s: s["score"]) if scored else None


def _edge(best: dict[str, Any], sweep: Sequence[dict[str, Any]]) -> str | None:
    factors = [s["factor"] for s in sweep]
    if best["factor"] == min(factors):
        return "low"
    if best["factor"] == max(factors):
        return "high"
    return None


def _tune_score(run: Mapping[str, Any]) -> float | None:
    """A tuning run's score: the mean of its last held-out losses; None if it diverged."""
    tail = [x for x in run["losses"][-TUNE_SCORE_EVALS:] if x is not None]
    return None if run["diverged"] or not tail else statistics.fmean(tail)


def tune_lr(
    task: Any,
    name: str | OptimizerEntry,
    base_lr: float,
    *,
    steps: int,
    threshold: float,
    device: torch.device,
    progress: Progress,
    counter: list[int],
    schedule: str = "none",
    warmup_fraction: float = 0.0,
    eta: _Eta | None = None,
    journal: RunJournal | None = None,
) -> dict[str, Any]:
    """Sweep ``base_lr × TUNE_FACTORS`` for ``steps // TUNE_STEPS_DIVISOR`` steps on
    seed ``TUNE_SEED``; score = mean of the last ``TUNE_SCORE_EVALS`` held-out
    losses (diverged or failed: no score). A best lr at an end of the grid widens
    it once in that direction (``TUNE_WIDEN``); ``at_edge`` says whether the best
    is still at that end. Runs found in `journal` are reused, finished ones are
    added to it. Returns the best lr and the sweep."""
    entry = resolve_optimizer(name) if isinstance(name, str) else name
    tune_steps = max(1, steps // TUNE_STEPS_DIVISOR)
    sweep: list[dict[str, Any]] = []

    def run_grid(factors: Sequence[float]) -> None:
        for factor in factors:
            lr = base_lr * factor
            counter[0] += 1
            label = f"[{counter[0]}/{counter[1]}] tune {entry.name} lr={lr:.3g} seed {TUNE_SEED}"
            key, run = _journal_lookup(journal, entry, lr, TUNE_SEED, tune_steps)
            if run is not None:
                score = _tune_score(run)
                result = "diverged" if score is None else f"score {score:.4g}"
                progress.write(f"{label}: {result} (from the journal)")
                sweep.append({"factor": factor, "lr": lr, "score": score, "error": None})
                continue
            bar = progress.task(label, tune_steps)
            started = time.perf_counter()
            try:
                run = train(
                    task,
                    entry,
                    lr,
                    TUNE_SEED,
                    steps=tune_steps,
                    threshold=threshold,
                    device=device,
                    bar=bar,
                    schedule=schedule,
                    warmup_fraction=warmup_fraction,
                )
            except Exception as err:  # a failing lr is a bad lr, not a failed comparison
                if eta is not None:
                    eta.finished(entry.name, tune_steps, None)
                bar.close(f"{label}: failed ({type(err).__name__}: {err})")
                sweep.append(
                    {
                        "factor": factor,
                        "lr": lr,
                        "score": None,
                        "error": f"{type(err).__name__}: {err}",
                    }
                )
                continue
            _journal_add(journal, key, run)
            if eta is not None:
                eta.finished(
                    entry.name, tune_steps, time.perf_counter() - started, run["steps_done"]
                )
            score = _tune_score(run)
            result = "diverged" if score is None else f"score {score:.4g}"
            bar.close(f"{label}: {result}{'' if eta is None else eta.text()}")
            sweep.append({"factor": factor, "lr": lr, "score": score, "error": None})

    run_grid(TUNE_FACTORS)
    best = _best(sweep)
    widened = None if best is None else _edge(best, sweep)
    if widened is not None:
        extra = TUNE_WIDEN[widened]
        counter[1] += len(extra)
        if eta is not None:
            eta.plan(entry.name, tune_steps, len(extra))
        progress.write(
            f"tune {entry.name}: best lr {best['lr']:.3g} is at the {widened} end of the grid; "
            f"widening it once: lr × {', '.join(f'{f:g}' for f in extra)}"
        )
        run_grid(extra)
        best = _best(sweep)
    at_edge = None
    if best is None:
        errors = [s["error"] for s in sweep if s["error"]]
        if errors and len(errors) == len(sweep):
            raise RuntimeError(f"every tuning run failed; first error: {errors[0]}")
        lr = base_lr  # every lr diverged: keep the documented default
    else:
        lr = best["lr"]
        if widened is not None and _edge(best, sweep) == widened:
            at_edge = widened
    return {
        "lr": lr,
        "seed": TUNE_SEED,
        "steps": tune_steps,
        "base_lr": base_lr,
        "widened": widened,
        "at_edge": at_edge,
        "sweep": sweep,
    }


def _versions(entries: Mapping[str, OptimizerEntry]) -> dict[str, str | None]:
    """Versions of torch, numpy and every outside optimizer's top-level module."""
    import numpy

    versions: dict[str, str | None] = {"torch": torch.__version__, "numpy": numpy.__version__}
    for name in entries:
        if ":" in name:
            root = name.partition(":")[0].split(".")[0]
            versions[root] = getattr(sys.modules.get(root), "__version__", None)
    return versions


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def compare(
    task_name: str = DEFAULT_TASK,
    optimizers: Sequence[str] | None = None,
    *,
    steps: int | None = None,
    threshold: float | None = None,
    seeds: int = DEFAULT_SEEDS,
    tune: bool = False,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    opt_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    schedule: str | None = None,
    journal: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the comparison; returns a JSON-serializable dict of every number.

    `optimizers`: registered names, ``all`` (every registered one; also the
    default) and ``module:Class`` outside optimizers. `opt_kwargs`: extra keyword
    arguments per optimizer name. `schedule`: ``"cosine"`` (warm-up, then cosine
    decay) or ``"none"``; default: the task's. `journal`: a file that records
    every finished run (:class:`RunJournal`); with `resume`, runs already in it
    are reused instead of trained again, so a stopped comparison continues
    where it stopped.

    Raises:
        UsageError: unknown task, optimizer, schedule or device, an outside
            optimizer that cannot be imported or built, or bad sizes.
    Failures inside a run do not raise: they are recorded in the run's
    ``error`` field and counted in ``result["errors"]``.
    """
    task = _resolve_task(task_name)
    resolved = _resolve_optimizers(optimizers, opt_kwargs)
    device = parse_device(str(device))
    steps = task.steps if steps is None else steps
    threshold = task.threshold if threshold is None else threshold
    schedule = task.schedule if schedule is None else schedule
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UsageError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"seeds must be a positive integer, got {seeds!r}")
    if not math.isfinite(threshold):
        raise UsageError(f"threshold must be finite, got {threshold}")
    if schedule not in schedules.SCHEDULES:
        raise UsageError(
            f"unknown schedule {schedule!r}; available: {', '.join(schedules.SCHEDULES)}"
        )
    warmup_fraction = task.warmup_fraction if schedule != "none" else 0.0
    progress = progress if progress is not None else Progress(quiet=True)
    started = datetime.datetime.now(datetime.timezone.utc)

    import fisherprec

    run_journal = None
    if journal is not None:
        context = {
            "task": task.name,
            "threshold": threshold,
            "schedule": schedule,
            "warmup_fraction": warmup_fraction,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "fisherprec": fisherprec.__version__,
            "torch": torch.__version__,
        }
        run_journal = RunJournal(journal, resume=resume, context=context)
        if run_journal.previous is not None:
            progress.write(
                f"started a fresh journal {run_journal.path} (the earlier one is kept as "
                f"{run_journal.previous}; --resume would have reused its runs)"
            )
        elif resume:
            progress.write(f"resuming from {run_journal.path}: {len(run_journal)} runs journaled")
    total = len(resolved) * seeds + (len(resolved) * len(TUNE_FACTORS) if tune else 0)
    counter = [0, total]
    errors: list[str] = []
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in resolved.items():
        lr, source = default_lr(task.lrs, entry, (opt_kwargs or {}).get(name))
        if lr is None and ":" in name:  # shown in every progress line and the table
            lr = _own_default_lr(entry)
        entries[name] = {
            "fisher": entry.fisher,
            "description": entry.description,
            "outside": ":" in name,
            "kwargs": {k: v for k, v in entry.defaults.items() if k != "lr"},
            "lr": lr,
            "lr_source": source,
            "tuning": None,
            "runs": [],
        }
    tune_steps = max(1, steps // TUNE_STEPS_DIVISOR)
    eta = None
    if not progress.quiet:  # the total ETA up front, from a few timed steps per optimizer
        eta = _Eta()
        for name, entry in resolved.items():
            if tune:
                eta.plan(name, tune_steps, len(TUNE_FACTORS))
            eta.plan(name, steps, seeds)
            if run_journal is not None:  # journaled runs cost nothing
                for length in (tune_steps, steps) if tune else (steps,):
                    for _ in range(run_journal.count(name, length)):
                        eta.finished(name, length, None)
                if not eta.planned[name]:
                    continue
            try:
                eta.per_step[name], eta.overhead[name] = _probe(
                    task, entry, entries[name]["lr"], steps, device
                )
            except Exception as err:  # the run itself will report it
                progress.write(f"ETA probe of {name} failed ({type(err).__name__}: {err})")
        left = eta.remaining()
        progress.write(
            f"compare {task.name}: {total} runs ({len(resolved)} optimizers × "
            f"{seeds} seed{'s' * (seeds > 1)}"
            + (
                f" + {len(resolved) * len(TUNE_FACTORS)} tuning runs of {tune_steps} steps"
                if tune
                else ""
            )
            + f", {steps} steps each), schedule {schedule}; estimated total "
            + ("unknown" if left is None else format_duration(left))
            + f" (from {ETA_PROBE_STEPS} timed steps of each optimizer)"
        )
    if tune:
        for name, info in entries.items():
            entry = resolved[name]
            base = info["lr"]
            if base is None:  # the optimizer's own default: read it off a throwaway instance
                base = _own_default_lr(entry)
            try:
                info["tuning"] = tune_lr(
                    task,
                    entry,
                    base,
                    steps=steps,
                    threshold=threshold,
                    device=device,
                    progress=progress,
                    counter=counter,
                    schedule=schedule,
                    warmup_fraction=warmup_fraction,
                    eta=eta,
                    journal=run_journal,
                )
            except Exception as err:
                _report_error(f"tuning {name}", err)
                errors.append(f"tuning {name}: {type(err).__name__}: {err}")
                info["tuning"] = {"error": f"{type(err).__name__}: {err}"}
                continue
            info["lr"], info["lr_source"] = info["tuning"]["lr"], "tuned"
    for seed in range(seeds):  # seeds outermost: background load hits every optimizer alike
        for name, info in entries.items():
            counter[0] += 1
            lr_text = "" if info["lr"] is None else f" lr={info['lr']:.3g}"
            label = f"[{counter[0]}/{counter[1]}] {name}{lr_text} seed {seed}"
            if info["tuning"] is not None and "error" in info["tuning"]:
                info["runs"].append({"seed": seed, "lr": None, "error": "tuning failed"})
                if eta is not None:
                    eta.finished(name, steps, None)
                continue
            key, run = _journal_lookup(run_journal, resolved[name], info["lr"], seed, steps)
            if run is not None:
                info["lr"] = run["lr"]
                progress.write(f"{label}: {_run_line(run)} (from the journal)")
                info["runs"].append(run)
                continue
            bar = progress.task(label, steps)
            run_started = time.perf_counter()
            try:
                run = train(
                    task,
                    resolved[name],
                    info["lr"],
                    seed,
                    steps=steps,
                    threshold=threshold,
                    device=device,
                    bar=bar,
                    schedule=schedule,
                    warmup_fraction=warmup_fraction,
                )
            except Exception as err:
                if eta is not None:
                    eta.finished(name, steps, None)
                bar.close(f"{label}: failed")
                _report_error(f"{name} seed {seed}", err)
                errors.append(f"{name} seed {seed}: {type(err).__name__}: {err}")
                info["runs"].append(_error_run(seed, info["lr"], err))
                continue
            _journal_add(run_journal, key, run)
            if eta is not None:
                eta.finished(name, steps, time.perf_counter() - run_started, run["steps_done"])
            info["lr"] = run["lr"]
            bar.close(f"{label}: {_run_line(run)}{'' if eta is None else eta.text()}")
            info["runs"].append(run)
    for info in entries.values():
        info["summary"] = summarize(info["runs"])
    return {
        "fisherprec": fisherprec.__version__,
        "torch": torch.__version__,
        "versions": _versions(resolved),
        "date": started.isoformat(timespec="seconds"),
        "machine": _machine(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "task": {
            "name": task.name,
            "description": task.description,
            "loss": task.loss_name,
            "threshold": threshold,
            "steps": steps,
            "eval_steps": _eval_steps(steps, task.evals),
            "samples_per_step": task.samples_per_step,
            "sample_unit": task.sample_unit,
            "seeds": list(range(seeds)),
            "log_scale": task.log_scale,
            "schedule": {
                "name": schedule,
                "warmup_fraction": warmup_fraction,
                "warmup_steps": schedules.warmup_steps(steps, warmup_fraction),
                "min_factor": schedules.MIN_FACTOR if schedule != "none" else 1.0,
            },
        },
        "tune": (
            {
                "factors": list(TUNE_FACTORS),
                "widen": {k: list(v) for k, v in TUNE_WIDEN.items()},
                "seed": TUNE_SEED,
                "steps": tune_steps,
                "score": f"mean of the last {TUNE_SCORE_EVALS} held-out losses",
            }
            if tune
            else None
        ),
        "optimizers": entries,
        "journal": None if run_journal is None else run_journal.summary(),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "errors": errors,
    }


def _run_line(run: dict[str, Any]) -> str:
    final = "diverged" if run["diverged"] else f"final {run['final_loss']:.4g}"
    to = run["steps_to_threshold"]
    reached = (
        "δ not reached" if to is None else f"δ at step {to} ({run['seconds_to_threshold']:.2f} s)"
    )
    per_step = run["seconds_per_step"]
    speed = "" if per_step is None else f", {per_step * 1e3:.2f} ms/step"
    return f"{final}, {reached}{speed}"


# --------------------------------------------------------------------------- report


def _fmt(stats: dict[str, Any], scale: float = 1.0, digits: int = 3, kind: str = "g") -> str:
    mean, std = stats["mean"], stats["std"]
    if mean is None:
        return "—"
    mean, std = mean * scale, std * scale
    if kind == "int":
        return f"{mean:.0f}" if stats["n"] < 2 else f"{mean:.0f} ± {std:.0f}"
    if kind == "count":
        text = _count(mean)
        return text if stats["n"] < 2 else f"{text} ± {_count(std)}"
    text = f"{mean:.{digits}g}"
    return text if stats["n"] < 2 else f"{text} ± {std:.2g}"


def _count(x: float) -> str:
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= divisor:
            return f"{x / divisor:.3g}{suffix}"
    return f"{x:.0f}"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table, as strings."""
    unit = result["task"]["sample_unit"]
    header = [
        "optimizer",
        "lr",
        "final loss",
        "T_sample: steps",
        f"T_sample: {unit}",
        "T_compute (s)",
        "ms/step",
        "state",
    ]
    rows = []
    for name, info in result["optimizers"].items():
        s = info["summary"]
        lr = "—" if info["lr"] is None else f"{info['lr']:.3g}"
        if s["runs"] == 0:
            rows.append([name, lr, "failed", "—", "—", "—", "—", "—"])
            continue
        final = "diverged" if s["final_loss"]["n"] == 0 else _fmt(s["final_loss"])
        if s["diverged"] > 0:
            final += f" ({s['diverged']} diverged)" if s["final_loss"]["n"] else ""
        partial = f" ({s['reached']}/{s['runs']})" if 0 < s["reached"] < s["runs"] else ""
        if s["reached"] == 0:
            to_steps = to_samples = to_seconds = "not reached"
        else:
            to_steps = _fmt(s["steps_to_threshold"], kind="int") + partial
            to_samples = _fmt(s["samples_to_threshold"], kind="count") + partial
            to_seconds = _fmt(s["seconds_to_threshold"]) + partial
        tuning = info.get("tuning") or {}
        edge = tuning.get("at_edge")
        rows.append(
            [
                name + (f" ({s['errors']} failed)" if s["errors"] else ""),
                lr
                + (
                    ""
                    if info["lr_source"] != "tuned"
                    else f" (tuned, {edge} edge)"
                    if edge
                    else " (tuned)"
                ),
                final,
                to_steps,
                to_samples,
                to_seconds,
                _fmt(s["seconds_per_step"], scale=1e3),
                "—" if s["state_bytes"]["mean"] is None else format_bytes(s["state_bytes"]["mean"]),
            ]
        )
    return header, rows


def format_table(result: dict[str, Any]) -> str:
    """The summary as a Markdown table, preceded by a line saying what was run."""
    t = result["task"]
    seeds = len(t["seeds"])
    sched = t.get("schedule") or {"name": "none"}
    if sched["name"] == "none":
        schedule_text = "constant lr"
    else:
        schedule_text = (
            f"lr schedule {sched['name']} ({sched['warmup_steps']} warm-up steps, decay to "
            f"{sched['min_factor']:g} × lr)"
        )
    tune = result.get("tune")
    tune_text = (
        ""
        if not tune
        else f"\nlr tuned on seed {tune['seed']}: default × "
        f"{', '.join(f'{f:g}' for f in tune['factors'])} for {tune['steps']} steps, best "
        f"{tune['score']}, widened once at an edge ('edge' = still at the end after that)"
    )
    intro = (
        f"task {t['name']}: {t['description']}\n"
        f"error ε = {t['loss']}; threshold δ = {t['threshold']:g}; {t['steps']} steps × "
        f"{t['samples_per_step']} {t['sample_unit']}; {schedule_text}; {seeds} "
        f"seed{'s' * (seeds > 1)} (mean ± std); device {result['device']} "
        f"({result['threads']} threads){tune_text}"
    )
    header, rows = table_rows(result)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([intro, "", line(header), rule, *map(line, rows)])


def plot(result: dict[str, Any], path: str | Path) -> bool:
    """Held-out loss vs steps and vs training seconds (mean over seeds, band =
    min..max), with the threshold; False (nothing written) when matplotlib is
    not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    t = result["task"]
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    by_steps, by_seconds = fig.subplots(1, 2, sharey=True)
    for i, (name, info) in enumerate(result["optimizers"].items()):
        runs = [r for r in info["runs"] if r.get("error") is None and r["losses"]]
        if not runs:
            continue
        length = max(len(r["losses"]) for r in runs)
        steps = next(r["steps"] for r in runs if len(r["steps"]) == length)
        mean, low, high, seconds = [], [], [], []
        for k in range(length):
            values = [r["losses"][k] for r in runs if k < len(r["losses"])]
            values = [math.nan if v is None else v for v in values]
            finite = [v for v in values if math.isfinite(v)]
            mean.append(statistics.fmean(finite) if finite else math.nan)
            low.append(min(finite) if finite else math.nan)
            high.append(max(finite) if finite else math.nan)
            seconds.append(statistics.fmean(r["seconds"][k] for r in runs if k < len(r["seconds"])))
        color = f"C{i % 10}"
        label = name if info["lr"] is None else f"{name} (lr {info['lr']:.3g})"
        for ax, x in ((by_steps, steps), (by_seconds, seconds)):
            ax.plot(x, mean, color=color, label=label, lw=1.6)
            if len(runs) > 1:
                ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0)
    for ax, xlabel in ((by_steps, "optimizer steps"), (by_seconds, "training seconds")):
        ax.axhline(t["threshold"], color="0.3", ls="--", lw=1)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        if t["log_scale"]:
            ax.set_yscale("log")
    by_steps.set_ylabel(t["loss"])
    by_steps.set_title("T_sample: loss vs steps")
    by_seconds.set_title(f"T_compute: loss vs seconds ({result['device']})")
    by_steps.legend(
        fontsize="small", title=f"δ = {t['threshold']:g} (dashed)", title_fontsize="small"
    )
    seeds = len(t["seeds"])
    fig.suptitle(
        f"fisherprec compare — {t['name']}: mean of {seeds} seed{'s' * (seeds > 1)}"
        + (" (band: min–max)" if seeds > 1 else "")
    )
    fig.savefig(path, dpi=110)
    return True


def write_outputs(result: dict[str, Any], out: str | Path) -> dict[str, Path | None]:
    """Write ``compare-<task>.json``, ``.md`` (the table) and ``.png`` under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"compare-{result['task']['name']}"
    json_path, table_path, plot_path = (out / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    paths: dict[str, Path | None] = {
        "json": json_path,
        "table": table_path,
        "plot": plot_path if plot(result, plot_path) else None,
    }
    result = {**result, "files": {k: None if v is None else str(v) for k, v in paths.items()}}
    json_path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    table_path.write_text(format_table(result) + "\n\n" + format_provenance(result) + "\n")
    return paths


def format_provenance(result: dict[str, Any]) -> str:
    """When, where and with what the result was made: the command (when run from the
    command line), date, machine and versions, as Markdown lines."""
    machine = result.get("machine") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (result.get("versions") or {}).items())
    lines = []
    if result.get("command"):
        lines.append(f"- command: `{result['command']}`")
    lines += [
        f"- date: {result.get('date', '?')} (start of the run, UTC)",
        f"- machine: {machine.get('processor', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"{machine.get('platform', '?')}, Python {machine.get('python', '?')}; "
        f"device {result['device']}, {result['threads']} torch threads",
        f"- versions: fisherprec {result.get('fisherprec', '?')}, {versions}",
    ]
    loads = [
        x
        for info in result.get("optimizers", {}).values()
        for run in info.get("runs", [])
        for x in run.get("load") or []
        if x is not None
    ]
    if loads:
        lines.append(
            f"- load average (1 min) at the start and end of the reported runs: "
            f"{min(loads):.2f}–{max(loads):.2f} (the run's own {result['threads']} threads count)"
        )
    journal = result.get("journal") or {}
    if journal.get("reused"):
        lines.append(
            f"- resumed (--resume): {journal['reused']} runs taken from the journal "
            f"{journal['path']}, trained by the invocations started at "
            f"{', '.join(journal['reused_from'])}; the rest by this one"
        )
    return "\n".join(lines)


def _command_line(args: argparse.Namespace) -> str:
    """The command that reproduces `args` (every option spelled out)."""
    parts = ["fisherprec", "compare", "--task", args.task]
    if args.optimizers:
        parts += ["--optimizers", *_split_names(args.optimizers)]
    for item in args.opt_kwargs or []:
        parts += ["--opt-kwargs", item]
    for flag, value in (
        ("--steps", args.steps),
        ("--threshold", args.threshold),
        ("--schedule", args.schedule),
        ("--threads", args.threads),
    ):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--seeds", str(args.seeds)]
    if args.tune:
        parts.append("--tune")
    if args.device != "cpu":
        parts += ["--device", args.device]
    parts += ["--out", str(args.out)]
    if args.resume:
        parts.append("--resume")
    return shlex.join(parts)


# --------------------------------------------------------------------------- command line


def _split_names(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [name for value in values for name in value.split(",") if name]


def parse_opt_kwargs(values: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``NAME=JSON`` items (``adamw='{"weight_decay": 0.1}'``) as {name: kwargs};
    a name given twice merges, the later value winning."""
    parsed: dict[str, dict[str, Any]] = {}
    for item in values or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(
                f"--opt-kwargs expects NAME=JSON, e.g. adamw='{{\"weight_decay\": 0.1}}', "
                f"got {item!r}"
            )
        try:
            kwargs = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"--opt-kwargs for {name!r}: invalid JSON {text!r} ({err})") from None
        if not isinstance(kwargs, dict):
            raise UsageError(f"--opt-kwargs for {name!r} must be a JSON object, got {text!r}")
        parsed.setdefault(name, {}).update(kwargs)
    return parsed


def _run(args: argparse.Namespace) -> int:
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        result = compare(
            args.task,
            _split_names(args.optimizers),
            steps=args.steps,
            threshold=args.threshold,
            seeds=args.seeds,
            tune=args.tune,
            device=args.device,
            progress=Progress(quiet=args.quiet),
            opt_kwargs=parse_opt_kwargs(args.opt_kwargs),
            schedule=args.schedule,
            journal=Path(args.out) / JOURNAL_NAME.format(task=args.task),
            resume=args.resume,
        )
    finally:
        torch.set_num_threads(threads)
    result["command"] = _command_line(args)
    paths = write_outputs(result, args.out)
    print(format_table(result))
    print()
    if paths["plot"] is None:
        print(
            "matplotlib is not installed: no plot written "
            "(pip install 'fisherprec[plot]' or pip install matplotlib)",
            file=sys.stderr,
        )
    print("wrote " + ", ".join(str(p) for p in paths.values() if p is not None))
    if result["errors"]:
        print(
            f"fisherprec compare: {len(result['errors'])} run(s) failed; see 'errors' in "
            f"{paths['json']}",
            file=sys.stderr,
        )
        return 1
    return 0


def _epilog() -> str:
    import fisherprec.optim  # noqa: F401
    from fisherprec.optim import registry
    from fisherprec.tasks import registry as tasks

    lines = ["tasks (defaults: steps, threshold δ):"]
    for name in tasks.names():
        task = tasks.get(name)
        lrs = ", ".join(f"{k} {v:g}" for k, v in task.lrs.items())
        sched = (
            ""
            if task.schedule == "none"
            else f"; schedule {task.schedule} ({task.warmup_fraction:g} of the steps warm-up)"
        )
        text = (
            f"{task.description}. Defaults: {task.steps} steps, δ = {task.threshold:g} on the "
            f"{task.loss_name}; lr: {lrs}{sched}"
        )
        lines += textwrap.wrap(
            text, _HELP_WIDTH, initial_indent=f"  {name:<15} ", subsequent_indent=" " * 18
        )
    lines.append("")
    lines.append("registered optimizers:")
    for name, entry in registry.REGISTRY.items():
        lines += textwrap.wrap(
            entry.description or "(no description)",
            _HELP_WIDTH,
            initial_indent=f"  {name:<15} ",
            subsequent_indent=" " * 18,
        )
    grid = ", ".join(f"{f:g}" for f in TUNE_FACTORS)
    low, high = (", ".join(f"{f:g}" for f in TUNE_WIDEN[k]) for k in ("low", "high"))
    lines += [
        "",
        "outside optimizers: module:Class is any torch.optim-style class, built as",
        "  Class(params, lr=..., **kwargs), e.g. torch.optim:Adam, pytorch_optimizer:SOAP,",
        "  pytorch_optimizer:Shampoo, heavyball:SOAP, heavyball:PSGDKron; the outside",
        f"  libraries come with the '{PEERS_EXTRA}' extra: pip install 'fisherprec[{PEERS_EXTRA}]'.",
        f"  '{ALL_REGISTERED}' in --optimizers stands for every registered optimizer.",
        "",
        "Learning rates: an lr in --opt-kwargs, else the task's documented default for the",
        "optimizer, else the lr in the optimizer's registry entry, else the class's own default.",
        "The schedule (the task's, or --schedule) multiplies every optimizer's lr alike.",
        "",
        "Tuning protocol (--tune), the same for every optimizer, built-in or outside:",
        f"  grid     the default lr above × {grid}",
        f"  runs     one per grid point, steps/{TUNE_STEPS_DIVISOR} steps each (the schedule",
        f"           stretched over them), on seed {TUNE_SEED}: never a reported seed (0..K-1)",
        f"  score    mean of the last {TUNE_SCORE_EVALS} held-out losses; diverged or failed = none",
        "  pick     the lowest score; its lr is used for every reported seed",
        f"  edge     a best lr at the low (high) end widens the grid once by × {low}",
        f"           (× {high}); still at the end after that: marked '(tuned, low/high edge)'",
        "",
        "Outputs under --out: compare-<task>.json (every number, the date, machine and",
        "versions), compare-<task>.md (the table), compare-<task>.png (needs matplotlib),",
        f"{JOURNAL_NAME.format(task='<task>')} (each run as it finishes; --resume continues a stopped",
        "comparison from it).",
        "Progress (stderr, unless --quiet): the estimated total time first, then one line per",
        "run (optimizer, lr, seed, step, held-out loss, ETA); bars only on a terminal.",
        "Exit status: 0 on success (also when an optimizer diverges or misses δ), 1 when a",
        "run raised an error, 2 for a bad request (unknown task/optimizer/device).",
    ]
    return "\n".join(lines)


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="compare the registered optimizers on a built-in task (T_sample, T_compute)",
        description=textwrap.fill(
            "Train every registered optimizer (torch baselines and fisherprec's Fisher "
            "variants) on a built-in task and measure the paper's efficiency metrics: "
            "T_sample (steps and observations until the held-out loss first reaches the "
            "threshold δ) and T_compute (training seconds until then), with final loss, "
            "time per step and optimizer-state bytes, as mean ± std over seeds.",
            _HELP_WIDTH,
        ),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--task",
        default=DEFAULT_TASK,
        help=f"built-in task to train on (default: {DEFAULT_TASK}; see the list below)",
    )
    parser.add_argument(
        "--optimizers",
        nargs="+",
        metavar="NAME",
        help="optimizers to compare, space- or comma-separated: registered names, "
        f"'{ALL_REGISTERED}' (every registered one; the default) and module:Class outside "
        "optimizers (see below)",
    )
    parser.add_argument(
        "--opt-kwargs",
        nargs="+",
        action="extend",
        metavar="NAME=JSON",
        help="extra keyword arguments for an optimizer, as a JSON object, e.g. "
        "heavyball:SOAP='{\"precondition_frequency\": 10}' (an lr here is its default lr)",
    )
    parser.add_argument(
        "--schedule",
        choices=schedules.SCHEDULES,
        help="learning-rate schedule for every optimizer alike: cosine = linear warm-up then "
        f"cosine decay to {schedules.MIN_FACTOR:g} × lr; none = constant "
        "(default: the task's)",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="optimizer steps per run (default: the task's, sized for ~2 minutes on 2 cores)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="DELTA",
        help="error threshold δ on the held-out loss for T_sample/T_compute (default: the task's)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=DEFAULT_SEEDS,
        metavar="K",
        help=f"seeds 0..K-1 per optimizer (data, initial weights); mean ± std over them "
        f"(default: {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help=f"first sweep each optimizer's lr over default × {', '.join(f'{f:g}' for f in TUNE_FACTORS)} "
        f"for steps/{TUNE_STEPS_DIVISOR} steps on seed {TUNE_SEED} (never a reported seed); "
        f"keep the lr with the lowest mean of the last {TUNE_SCORE_EVALS} held-out losses; a "
        "best lr at an end of the grid widens it once that way (costs about 2.5–3.5 runs per "
        "optimizer on top of the reported ones; the protocol is below)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"directory for the JSON, table and PNG (created; default: ./{DEFAULT_OUT})",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"reuse the finished runs recorded in --out's {JOURNAL_NAME.format(task='<task>')} "
        "by an earlier, stopped invocation of the same command (a run is reused only when "
        "its task, optimizer, kwargs, lr, seed, steps, schedule, threads and versions match)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda (or cuda:N); an error when CUDA is not usable (default: cpu)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch intra-op threads, also used by fisherprec's native kernels "
        f"(default: torch's, here {torch.get_num_threads()})",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress output on stderr (progress bars are shown only on a terminal)",
    )
    parser.set_defaults(func=_run)
    return parser
