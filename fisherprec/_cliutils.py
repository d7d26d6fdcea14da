"""Helpers shared by the subcommands of the ``fisherprec`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

import torch


class UsageError(ValueError):
    """A bad command-line request (unknown name, bad value): exit status 2, no traceback."""


def parse_device(text: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, checked to be usable now."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"invalid device {text!r}; use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {text!r}; use cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {text!r} requested but torch cannot use CUDA here "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {text!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return device


def positive_int(text: str) -> int:
    """argparse type: an int ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class Progress:
    """Progress reporting on stderr: a tqdm bar (or a plain self-rewriting line
    when tqdm is not installed) on a terminal, one line per finished item
    otherwise, nothing at all when `quiet`."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", None)
        self.bars = not quiet and bool(isatty and isatty())

    def task(self, description: str, total: int) -> Bar:
        return Bar(self, description, total)

    def write(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.stream, flush=True)


class Bar:
    """One unit of work with `total` ticks; `close(summary)` prints its summary line."""

    def __init__(self, progress: Progress, description: str, total: int) -> None:
        self.progress = progress
        self.description = description
        self.total = total
        self.done = 0
        self._tqdm: Any = None
        self._last_draw = 0.0
        self._started = time.monotonic()
        if progress.bars:
            try:
                from tqdm import tqdm
            except ImportError:
                self._tqdm = None
            else:
                self._tqdm = tqdm(
                    total=total,
                    desc=description,
                    leave=False,
                    file=progress.stream,
                    dynamic_ncols=True,
                )

    def update(self, n: int = 1, status: str = "") -> None:
        self.done += n
        if self._tqdm is not None:
            self._tqdm.update(n)
            if status:
                self._tqdm.set_postfix_str(status, refresh=False)
        elif self.progress.bars:
            now = time.monotonic()
            if now - self._last_draw > 0.1 or self.done >= self.total:
                self._last_draw = now
                left = (now - self._started) / self.done * (self.total - self.done)
                line = (
                    f"{self.description}  {self.done}/{self.total}  {status}  "
                    f"ETA {format_duration(left)}"
                )
                print(f"\r{line[:110]:<110}", end="", file=self.progress.stream, flush=True)

    def close(self, summary: str) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.progress.bars:
            print(f"\r{'':<110}\r", end="", file=self.progress.stream)
        self.progress.write(summary)


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: a remaining time, to the second under
    an hour."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
