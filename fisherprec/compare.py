"""``fisherprec compare``: every registered optimizer on a built-in task, measured
by the paper's two efficiency metrics (THEORY.md §1, paper eq. 5).

For an error threshold δ on the held-out loss (the generalization error ε):

- T_sample(δ): optimizer steps, and observations (steps × batch), until ε ≤ δ
  for the first time (ε is evaluated ``task.evals`` times per run);
- T_compute(δ): training wall-clock seconds until the same: forward, backward
  and optimizer step (drawing minibatches and evaluating are not counted).

Each optimizer runs on the same seeds (same data, same initial weights); the
table reports mean ± sample std over seeds, and the JSON every number.
The optimizers come from :mod:`fisherprec.optim.registry`, the tasks from
:mod:`fisherprec.tasks.registry`: a newly registered variant or task appears
here with no edit.

Example:
    >>> from fisherprec.compare import compare, format_table
    >>> result = compare("regression", ["sgd", "adamw"], steps=20, seeds=1)
    >>> sorted(result["optimizers"])
    ['adamw', 'sgd']
    >>> print(format_table(result))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import textwrap
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from fisherprec._cliutils import (
    Bar,
    Progress,
    UsageError,
    format_bytes,
    parse_device,
    positive_int,
)

# --tune: learning rates swept around the default, on a seed no reported run uses,
# for half the steps; the lowest mean of the last 3 held-out losses wins.
TUNE_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
TUNE_SEED = 10_000
TUNE_STEPS_DIVISOR = 2
DEFAULT_TASK = "regression"
DEFAULT_SEEDS = 2
DEFAULT_OUT = "fisherprec-compare"
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


def default_lr(task_lrs: Any, name: str) -> tuple[float | None, str]:
    """The documented learning rate for optimizer `name` on a task, and where it
    came from: the task's table, else the registry entry's defaults, else the
    optimizer's own default (None)."""
    from fisherprec.optim import registry

    if name in task_lrs:
        return float(task_lrs[name]), "task default"
    entry = registry.get(name)
    if "lr" in entry.defaults:
        return float(entry.defaults["lr"]), "registry default"
    return None, "optimizer default"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _eval_steps(steps: int, evals: int) -> list[int]:
    every = max(1, steps // max(1, evals))
    return sorted({0, steps, *range(every, steps + 1, every)})


# --------------------------------------------------------------------------- one run


def train(
    task: Any,
    name: str,
    lr: float | None,
    seed: int,
    *,
    steps: int,
    threshold: float,
    device: torch.device,
    bar: Bar | None = None,
) -> dict[str, Any]:
    """Train a fresh instance of `task` (seed `seed`) with optimizer `name` for
    `steps` steps; returns the held-out curve and the efficiency metrics.

    A non-finite held-out loss ends the run early with ``diverged=True``.
    Exceptions from the model or the optimizer propagate.
    """
    from fisherprec.optim import registry

    problem = task.make(seed, device)
    model = problem.model
    kwargs = {} if lr is None else {"lr": lr}
    optimizer = registry.build(name, model.parameters(), **kwargs)
    if lr is None:
        lr = float(optimizer.param_groups[0]["lr"])
    checkpoints = set(_eval_steps(steps, task.evals))
    curve_steps: list[int] = []
    curve_seconds: list[float] = []
    curve_losses: list[float | None] = []
    reached: int | None = None
    reached_seconds: float | None = None
    diverged = False
    elapsed = 0.0
    done = 0

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


def _resolve_optimizers(names: Sequence[str] | None) -> list[str]:
    import fisherprec.optim  # noqa: F401  (imports every variant: fills the registry)
    from fisherprec.optim import registry

    if not names:
        return list(registry.REGISTRY)
    resolved: list[str] = []
    for name in names:
        if name not in registry.REGISTRY:
            raise UsageError(
                f"unknown optimizer {name!r}; available: {', '.join(registry.REGISTRY)}"
            )
        if name not in resolved:
            resolved.append(name)
    return resolved


def _resolve_task(name: str) -> Any:
    from fisherprec.tasks import registry as tasks

    try:
        return tasks.get(name)
    except ValueError as err:
        raise UsageError(str(err)) from None


def tune_lr(
    task: Any,
    name: str,
    base_lr: float,
    *,
    steps: int,
    threshold: float,
    device: torch.device,
    progress: Progress,
    counter: list[int],
) -> dict[str, Any]:
    """Sweep ``base_lr × TUNE_FACTORS`` for ``steps // TUNE_STEPS_DIVISOR`` steps on
    seed ``TUNE_SEED``; score = mean of the last three held-out losses
    (diverged or failed: infinite). Returns the best lr and the sweep."""
    tune_steps = max(1, steps // TUNE_STEPS_DIVISOR)
    sweep: list[dict[str, Any]] = []
    for factor in TUNE_FACTORS:
        lr = base_lr * factor
        counter[0] += 1
        label = f"[{counter[0]}/{counter[1]}] tune {name} lr={lr:.3g}"
        bar = progress.task(label, tune_steps)
        try:
            run = train(
                task,
                name,
                lr,
                TUNE_SEED,
                steps=tune_steps,
                threshold=threshold,
                device=device,
                bar=bar,
            )
        except Exception as err:  # a failing lr is a bad lr, not a failed comparison
            bar.close(f"{label}: failed ({type(err).__name__}: {err})")
            sweep.append({"lr": lr, "score": None, "error": f"{type(err).__name__}: {err}"})
            continue
        tail = [x for x in run["losses"][-3:] if x is not None]
        score = None if run["diverged"] or not tail else statistics.fmean(tail)
        bar.close(f"{label}: {'diverged' if score is None else f'score {score:.4g}'}")
        sweep.append({"lr": lr, "score": score, "error": None})
    scored = [s for s in sweep if s["score"] is not None]
    if not scored:
        errors = [s["error"] for s in sweep if s["error"]]
        if errors and len(errors) == len(sweep):
            raise RuntimeError(f"every tuning run failed; first error: {errors[0]}")
        best = base_lr  # every lr diverged: keep the documented default
    else:
        best = min(scored, key=lambda s: s["score"])["lr"]
    return {"lr": best, "seed": TUNE_SEED, "steps": tune_steps, "sweep": sweep}


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
) -> dict[str, Any]:
    """Run the comparison; returns a JSON-serializable dict of every number.

    Raises:
        UsageError: unknown task, optimizer or device, or bad sizes.
    Failures inside a run do not raise: they are recorded in the run's
    ``error`` field and counted in ``result["errors"]``.
    """
    task = _resolve_task(task_name)
    names = _resolve_optimizers(optimizers)
    device = parse_device(str(device))
    steps = task.steps if steps is None else steps
    threshold = task.threshold if threshold is None else threshold
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UsageError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"seeds must be a positive integer, got {seeds!r}")
    if not math.isfinite(threshold):
        raise UsageError(f"threshold must be finite, got {threshold}")
    progress = progress if progress is not None else Progress(quiet=True)

    import fisherprec
    from fisherprec.optim import registry

    total = len(names) * seeds + (len(names) * len(TUNE_FACTORS) if tune else 0)
    counter = [0, total]
    errors: list[str] = []
    entries: dict[str, dict[str, Any]] = {}
    for name in names:
        entry = registry.get(name)
        lr, source = default_lr(task.lrs, name)
        entries[name] = {
            "fisher": entry.fisher,
            "description": entry.description,
            "lr": lr,
            "lr_source": source,
            "tuning": None,
            "runs": [],
        }
    if tune:
        for name, info in entries.items():
            base = info["lr"]
            if base is None:  # the optimizer's own default: read it off a throwaway instance
                probe = registry.build(name, [torch.nn.Parameter(torch.zeros(1))])
                base = float(probe.param_groups[0]["lr"])
            try:
                info["tuning"] = tune_lr(
                    task,
                    name,
                    base,
                    steps=steps,
                    threshold=threshold,
                    device=device,
                    progress=progress,
                    counter=counter,
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
            label = f"[{counter[0]}/{counter[1]}] {name} seed {seed}"
            if info["tuning"] is not None and "error" in info["tuning"]:
                info["runs"].append({"seed": seed, "lr": None, "error": "tuning failed"})
                continue
            bar = progress.task(label, steps)
            try:
                run = train(
                    task,
                    name,
                    info["lr"],
                    seed,
                    steps=steps,
                    threshold=threshold,
                    device=device,
                    bar=bar,
                )
            except Exception as err:
                bar.close(f"{label}: failed")
                _report_error(f"{name} seed {seed}", err)
                errors.append(f"{name} seed {seed}: {type(err).__name__}: {err}")
                info["runs"].append(_error_run(seed, info["lr"], err))
                continue
            info["lr"] = run["lr"]
            bar.close(f"{label}: {_run_line(run)}")
            info["runs"].append(run)
    for info in entries.values():
        info["summary"] = summarize(info["runs"])
    return {
        "fisherprec": fisherprec.__version__,
        "torch": torch.__version__,
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
        },
        "tune": {"factors": list(TUNE_FACTORS), "seed": TUNE_SEED} if tune else None,
        "optimizers": entries,
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
        rows.append(
            [
                name + (f" ({s['errors']} failed)" if s["errors"] else ""),
                lr + (" (tuned)" if info["lr_source"] == "tuned" else ""),
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
    intro = (
        f"task {t['name']}: {t['description']}\n"
        f"error ε = {t['loss']}; threshold δ = {t['threshold']:g}; {t['steps']} steps × "
        f"{t['samples_per_step']} {t['sample_unit']}; {seeds} seed{'s' * (seeds > 1)} "
        f"(mean ± std); device {result['device']} ({result['threads']} threads)"
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
    table_path.write_text(format_table(result) + "\n")
    return paths


# --------------------------------------------------------------------------- command line


def _split_names(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [name for value in values for name in value.split(",") if name]


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
        )
    finally:
        torch.set_num_threads(threads)
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
        text = (
            f"{task.description}. Defaults: {task.steps} steps, δ = {task.threshold:g} on the "
            f"{task.loss_name}; lr: {lrs}"
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
    lines += [
        "",
        "Learning rates: the task's documented default for the optimizer, else the lr in the",
        "optimizer's registry entry. Outputs under --out: compare-<task>.json (every number),",
        "compare-<task>.md (the table), compare-<task>.png (needs matplotlib).",
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
        help="optimizers to compare, space- or comma-separated (default: every registered one)",
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
        "keep the lr with the lowest mean of the last 3 held-out losses (costs about "
        "2.5 runs per optimizer on top of the reported ones)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"directory for the JSON, table and PNG (created; default: ./{DEFAULT_OUT})",
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
