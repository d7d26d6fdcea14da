"""Refresh work split across the ranks of a process group (the role of
Distributed Shampoo's DDP distributor).

Under DDP every rank holds the same parameters and, after the gradient
all-reduce, the same curvature statistics, so every rank would compute the same
inverse roots (BlockFisher) or eigenbases (KronFisher). With a process group
given, the blocks of each batch due for a refresh are numbered 0..K-1 and cut
into ``world_size`` contiguous shares of ``ceil(K / world_size)`` (the rank
that takes the first share turns from batch to batch, so that batches of one
block do not all land on rank 0); each rank decomposes its shares and one
``all_gather`` per refresh gives every rank all of them. A block's decomposition does not depend on which rank computes it or
on the other blocks in its batch, so the step equals the one every rank would
have taken alone, bit for bit; a refresh costs each rank about
``1 / world_size`` of the decompositions, plus the exchange.

Every rank must step the same parameters with the same statistics (DDP does
this); the collectives would otherwise not match.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist


def work_split(group: Any) -> WorkSplit | None:
    """The split across `group`'s ranks (None without a group); a clear error
    for anything that is not a usable torch.distributed process group (raised
    at construction, not at the first refresh). A group of one rank splits
    nothing but takes the same path, so it is checked the same way."""
    if group is None:
        return None
    if not dist.is_available():
        raise RuntimeError("process_group needs torch.distributed, which this torch lacks")
    if not dist.is_initialized():
        raise RuntimeError(
            "process_group was given but torch.distributed is not initialized; call "
            "torch.distributed.init_process_group first (or pass process_group=None)"
        )
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(
            f"process_group must be a torch.distributed ProcessGroup (e.g. "
            f"torch.distributed.group.WORLD), got {type(group).__name__}"
        )
    return WorkSplit(group)


class WorkSplit:
    """This rank's share of K blocks, and the exchange that gives every rank all K."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def chunk(self, count: int) -> int:
        return -(-count // self.world)

    def share(self, count: int, turn: int = 0, rank: int | None = None) -> tuple[int, int]:
        """The rows [start, stop) of `count` that `rank` (this one by default)
        computes in batch number `turn` (possibly none)."""
        chunk = self.chunk(count)
        position = ((self.rank if rank is None else rank) - turn) % self.world
        start = min(position * chunk, count)
        return start, min(start + chunk, count)

    def exchange(
        self,
        local: Sequence[torch.Tensor],
        counts: Sequence[int],
        turns: Sequence[int] | None = None,
    ) -> list[list[tuple[int, torch.Tensor]]]:
        """Every rank's rows of several row-tensors in one ``all_gather``.

        ``local[i]`` holds this rank's rows ``share(counts[i], turns[i])`` of
        tensor i (turns default to 0, 1, 2, ...), as (rows, width), in one dtype
        and device for all i. Returns, per tensor i, ``[(first row, rows)]`` for
        each rank's non-empty share: together they are rows 0..counts[i]-1."""
        turns = range(len(counts)) if turns is None else turns
        widths = [x.shape[1] for x in local]
        chunks = [self.chunk(n) for n in counts]
        size = sum(c * w for c, w in zip(chunks, widths, strict=True))
        packed = local[0].new_zeros(size)
        offset = 0
        for x, c, w in zip(local, chunks, widths, strict=True):
            packed[offset : offset + x.numel()] = x.reshape(-1)
            offset += c * w
        parts = [torch.empty_like(packed) for _ in range(self.world)]
        dist.all_gather(parts, packed, group=self.group)
        out: list[list[tuple[int, torch.Tensor]]] = []
        offset = 0
        for turn, n, c, w in zip(turns, counts, chunks, widths, strict=True):
            pieces = []
            for rank, part in enumerate(parts):
                start, stop = self.share(n, turn, rank)
                if stop > start:
                    rows = part[offset : offset + (stop - start) * w].view(stop - start, w)
                    pieces.append((start, rows))
            out.append(sorted(pieces, key=lambda piece: piece[0]))
            offset += c * w
        return out


def spans(sizes: Sequence[int], start: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """For rows [start, stop) of the concatenation of tensors with `sizes` rows:
    (tensor index, first row in it, last row + 1 in it) for each tensor touched."""
    offset = 0
    for i, size in enumerate(sizes):
        a, b = max(start, offset), min(stop, offset + size)
        if a < b:
            yield i, a - offset, b - offset
        offset += size
