"""``fisherprec bench``: microbenchmarks of the Fisher variants beside their torch
baselines, from the cases registered in :mod:`fisherprec.benchmarks` (the same
cases the pytest-benchmark suites in bench/ time, so the two never disagree).

For every case it reports the median and minimum time per call, the achieved
bandwidth (the case's ideal bytes per call / median time) as a fraction of a
copy and an axpy bandwidth measured on the same device in the same run, and
the speedup against the baseline of its group: the first case with an impl
other than ``"fisherprec"`` registered for the same (variant, op, workload).

Example:
    >>> from fisherprec.bench import run_bench
    >>> result = run_bench(["diag"], ["gpt2-tiny"], "cpu", bandwidth_numel=1 << 16, min_seconds=0.01)
    >>> sorted(result["bandwidth"])
    ['axpy_bytes_per_s', 'copy_bytes_per_s', 'numel']
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fisherprec._cliutils import Progress, UsageError, parse_device, positive_int

FISHERPREC_IMPL = "fisherprec"
DEFAULT_BANDWIDTH_NUMEL = 1 << 25  # 128 MiB per float32 buffer: far beyond the caches
DEFAULT_MIN_SECONDS = 0.5


def copy_bandwidth(
    device: torch.device,
    numel: int = DEFAULT_BANDWIDTH_NUMEL,
    min_seconds: float = DEFAULT_MIN_SECONDS,
) -> float:
    """Bytes/s of ``dst.copy_(src)`` over float32 (8 bytes per element): the
    ceiling for streaming kernels, beside :func:`fisherprec.benchmarks.axpy_bandwidth`."""
    from fisherprec.benchmarks import time_call

    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    return (
        8
        * numel
        / statistics.median(time_call(lambda: dst.copy_(src), device, min_seconds=min_seconds))
    )


def run_bench(
    variants: Sequence[str] | None,
    sizes: Sequence[str] | None,
    device: str | torch.device = "cpu",
    *,
    bandwidth_numel: int = DEFAULT_BANDWIDTH_NUMEL,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Time every selected case; returns a JSON-serializable dict.

    Raises:
        UsageError: unknown variant, size label or device.
    A case that raises is recorded with its ``error`` and counted in
    ``result["errors"]``; the others still run.
    """
    import fisherprec
    from fisherprec import benchmarks

    device = parse_device(str(device))
    if not min_seconds >= 0:
        raise UsageError(f"min_seconds must be non-negative, got {min_seconds}")
    progress = progress if progress is not None else Progress(quiet=True)
    try:
        cases = benchmarks.collect(variants or None, sizes or None, device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    bar = progress.task("bandwidth", 2)
    copy_bw = copy_bandwidth(device, bandwidth_numel, min_seconds)
    bar.update(1)
    axpy_bw = benchmarks.axpy_bandwidth(device, bandwidth_numel)
    bar.update(1)
    bar.close(
        f"bandwidth on {device}: copy {copy_bw / 1e9:.1f} GB/s, axpy {axpy_bw / 1e9:.1f} GB/s "
        f"({bandwidth_numel} float32)"
    )
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for i, case in enumerate(cases, 1):
        bar = progress.task(f"[{i}/{len(cases)}] {case.key}", 1)
        row: dict[str, Any] = {
            "key": case.key,
            "variant": case.variant,
            "op": case.op,
            "workload": case.workload,
            "impl": case.impl,
            "bytes_per_call": case.bytes_per_call,
            "error": None,
        }
        try:
            times = benchmarks.time_call(case.run, device, min_seconds=min_seconds)
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"
            errors.append(f"{case.key}: {row['error']}")
            bar.close(f"[{i}/{len(cases)}] {case.key}: failed")
            print(f"fisherprec bench: {case.key} failed: {row['error']}", file=sys.stderr)
            rows.append(row)
            continue
        median = statistics.median(times)
        row.update(
            times_s=times,
            repeats=len(times),
            median_s=median,
            min_s=min(times),
            mean_s=statistics.fmean(times),
        )
        if case.bytes_per_call and median > 0:
            row["bytes_per_s"] = case.bytes_per_call / median
            row["fraction_of_copy"] = row["bytes_per_s"] / copy_bw
            row["fraction_of_axpy"] = row["bytes_per_s"] / axpy_bw
        bar.update(1)
        bar.close(f"[{i}/{len(cases)}] {case.key}: {median * 1e3:.3f} ms")
        rows.append(row)
    _add_speedups(rows)
    return {
        "fisherprec": fisherprec.__version__,
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "min_seconds": min_seconds,
        "bandwidth": {
            "numel": bandwidth_numel,
            "copy_bytes_per_s": copy_bw,
            "axpy_bytes_per_s": axpy_bw,
        },
        "cases": rows,
        "errors": errors,
    }


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """Per (variant, op, workload) group: ``baseline`` (the first non-fisherprec
    impl), ``speedup`` = baseline median / this median, and for the fisherprec
    row ``speedups``: its speedup against every baseline of the group."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["op"], row["workload"]), []).append(row)
    for group in groups.values():
        timed = [r for r in group if r["error"] is None]
        baselines = [r for r in timed if r["impl"] != FISHERPREC_IMPL]
        reference = baselines[0] if baselines else None
        for row in group:
            row["baseline"] = None if reference is None else reference["impl"]
            row["speedup"] = (
                reference["median_s"] / row["median_s"]
                if reference is not None and row["error"] is None and row["median_s"] > 0
                else None
            )
            if row["impl"] == FISHERPREC_IMPL and row["error"] is None:
                row["speedups"] = {
                    b["impl"]: b["median_s"] / row["median_s"]
                    for b in baselines
                    if row["median_s"] > 0
                }


def format_table(result: dict[str, Any]) -> str:
    bw = result["bandwidth"]
    intro = (
        f"device {result['device']} ({result['threads']} threads); measured now: copy "
        f"{bw['copy_bytes_per_s'] / 1e9:.1f} GB/s, axpy {bw['axpy_bytes_per_s'] / 1e9:.1f} GB/s; "
        "speedup = baseline median / median (> 1: faster than the baseline)"
    )
    header = [
        "variant",
        "op",
        "workload",
        "impl",
        "median ms",
        "min ms",
        "GB/s",
        "% copy",
        "% axpy",
        "speedup vs baseline",
    ]
    rows = []
    for r in result["cases"]:
        if r["error"] is not None:
            rows.append([r["variant"], r["op"], r["workload"], r["impl"], "failed", *["—"] * 5])
            continue
        has_bw = "bytes_per_s" in r
        if r["speedup"] is None:
            speedup = "—"
        elif r["impl"] == r["baseline"]:
            speedup = "1.00 (baseline)"
        else:
            speedup = f"{r['speedup']:.3g}× vs {r['baseline']}"
        rows.append(
            [
                r["variant"],
                r["op"],
                r["workload"],
                r["impl"],
                f"{r['median_s'] * 1e3:.3f}",
                f"{r['min_s'] * 1e3:.3f}",
                f"{r['bytes_per_s'] / 1e9:.1f}" if has_bw else "—",
                f"{100 * r['fraction_of_copy']:.0f}%" if has_bw else "—",
                f"{100 * r['fraction_of_axpy']:.0f}%" if has_bw else "—",
                speedup,
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([intro, "", line(header), rule, *map(line, rows)])


def _split(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v for value in values for v in value.split(",") if v]


def _run(args: argparse.Namespace) -> int:
    from fisherprec import benchmarks

    known = benchmarks.variants()
    if not known:
        print(
            "fisherprec bench: no benchmark variants are registered "
            "(a variant adds fisherprec/benchmarks/<variant>.py); nothing to time"
        )
        return 0
    result = run_bench(
        _split(args.variants),
        _split(args.sizes),
        args.device,
        bandwidth_numel=args.bandwidth_numel,
        min_seconds=args.min_seconds,
        progress=Progress(quiet=args.quiet),
    )
    print(format_table(result))
    if args.json is not None:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        print(f"wrote {path}")
    if result["errors"]:
        print(f"fisherprec bench: {len(result['errors'])} case(s) failed", file=sys.stderr)
        return 1
    return 0


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {value}")
    return value


def _epilog() -> str:
    from fisherprec import benchmarks

    known = benchmarks.variants()
    return (
        f"registered variants: {', '.join(known) if known else '(none yet)'}\n\n"
        "Each variant's cases time the fisherprec implementation of an op ('update', "
        "'inv_root', 'apply',\n'step') beside torch baselines on the same workload. Exit "
        "status: 0 on success, 1 when a case\nraised an error, 2 for a bad request (unknown "
        "variant, size or device)."
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="microbenchmark the Fisher variants beside their torch baselines",
        description=textwrap.fill(
            "Time the registered benchmark cases (fisherprec/benchmarks/<variant>.py): each "
            "variant's update, inverse-root apply and full optimizer step beside its torch "
            "baselines, with speedups and the achieved bandwidth as a fraction of a copy "
            "and an axpy bandwidth measured in the same run.",
            88,
        ),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help="variants to time, space- or comma-separated (default: every registered one)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        metavar="LABEL",
        help="workload size labels passed to every selected variant, e.g. 1e6-fp32 "
        "(default: each variant's own; an unknown label lists the known ones)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N) (default: cpu)")
    parser.add_argument(
        "--json", metavar="FILE", help="also write every number (each call's time too) to FILE"
    )
    parser.add_argument(
        "--min-seconds",
        type=_nonnegative_float,
        default=DEFAULT_MIN_SECONDS,
        metavar="S",
        help="time each case for at least S seconds (at least 3 calls, at most 100, after one "
        f"warm-up call) (default: {DEFAULT_MIN_SECONDS:g})",
    )
    parser.add_argument(
        "--bandwidth-numel",
        type=positive_int,
        default=DEFAULT_BANDWIDTH_NUMEL,
        metavar="N",
        help="float32 elements in the copy/axpy bandwidth measurement "
        f"(default: {DEFAULT_BANDWIDTH_NUMEL}, 128 MiB per buffer)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    parser.set_defaults(func=_run)
    return parser
