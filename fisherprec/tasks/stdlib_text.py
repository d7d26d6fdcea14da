"""Real text that no one here wrote: the running Python's own standard-library
sources, read at run time (nothing is shipped), as a byte-level corpus.

Files are split into train and held-out sets by a hash of their relative
path, so the split is the same on every machine with the same stdlib and does
not depend on directory listing order.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

VOCAB_SIZE = 256  # bytes


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8, the concatenated training files
    heldout: torch.Tensor  # uint8, the concatenated held-out files
    train_files: int
    heldout_files: int
    # Paths relative to the stdlib directory, in the order they were concatenated.
    train_names: tuple[str, ...] = ()
    heldout_names: tuple[str, ...] = ()


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _is_heldout(relative: str, heldout_fraction: float) -> bool:
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < heldout_fraction


def load_stdlib_corpus(max_bytes: int = 4_000_000, heldout_fraction: float = 0.1) -> Corpus:
    """Up to `max_bytes` of training bytes (and proportionally many held-out
    bytes) from the stdlib's top-level and package ``.py`` files, excluding
    ``test``/``idlelib``/``site-packages``, in sorted path order.

    Raises:
        ValueError: for non-positive sizes or a fraction outside (0, 1).
        FileNotFoundError: when the stdlib sources are not installed.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    root = stdlib_dir()
    skip = {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    if not files:
        raise FileNotFoundError(f"no Python standard-library sources under {root}")
    budget = {
        "train": max_bytes,
        "heldout": max(1, int(max_bytes * heldout_fraction / (1 - heldout_fraction))),
    }
    chunks: dict[str, list[bytes]] = {"train": [], "heldout": []}
    names: dict[str, list[str]] = {"train": [], "heldout": []}
    for path in files:
        relative = path.relative_to(root).as_posix()
        split = "heldout" if _is_heldout(relative, heldout_fraction) else "train"
        if budget[split] <= 0:
            if budget["train"] <= 0 and budget["heldout"] <= 0:
                break
            continue
        data = path.read_bytes()[: budget[split]]
        chunks[split].append(data)
        names[split].append(relative)
        budget[split] -= len(data)

    def as_tensor(parts: list[bytes]) -> torch.Tensor:
        return torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8)

    return Corpus(
        as_tensor(chunks["train"]),
        as_tensor(chunks["heldout"]),
        len(chunks["train"]),
        len(chunks["heldout"]),
        tuple(names["train"]),
        tuple(names["heldout"]),
    )


def random_windows(
    data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows of `seq_len` bytes as int64 inputs and the
    next-byte targets, both (batch_size, seq_len)."""
    if data.numel() < seq_len + 1:
        raise ValueError(
            f"corpus of {data.numel()} bytes is shorter than seq_len + 1 = {seq_len + 1}"
        )
    starts = torch.randint(0, data.numel() - seq_len, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len + 1)
    windows = data[starts[:, None] + offsets].long()
    return windows[:, :-1], windows[:, 1:]
