"""The refresh work split's bookkeeping (fisherprec.optim._work_split), with the
ranks simulated in one process: every row is computed by exactly one rank and
the exchange puts every row back where it belongs, for odd counts, counts below
the world size and empty shares. (tests/test_distributed.py runs it for real.)"""

from __future__ import annotations

import itertools

import pytest
import torch

from fisherprec.optim import _work_split
from fisherprec.optim._work_split import WorkSplit, spans


def _split(rank: int, world: int) -> WorkSplit:
    split = WorkSplit.__new__(WorkSplit)
    split.group, split.rank, split.world = None, rank, world
    return split


@pytest.mark.parametrize("shift", [0, 3])  # turns 0, 1, ... (the default) or given
@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("counts", [[1], [7, 1, 4], [0, 3], [2, 2, 2, 2, 9]])
def test_every_row_has_one_owner_and_the_exchange_restores_them(monkeypatch, world, counts, shift):
    turns = [t + shift for t in range(len(counts))]
    generator = torch.Generator().manual_seed(world * 100 + sum(counts))
    widths = [3 + i for i in range(len(counts))]
    full = [torch.randn(n, w, generator=generator) for n, w in zip(counts, widths, strict=True)]
    splits = [_split(r, world) for r in range(world)]
    owners = [[0] * n for n in counts]
    local = []
    for split in splits:
        mine = []
        for i, n in enumerate(counts):
            a, b = split.share(n, turns[i])
            for row in range(a, b):
                owners[i][row] += 1
            mine.append(full[i][a:b])
        local.append(mine)
    assert all(count == 1 for rows in owners for count in rows)
    # The collective: every rank's packed buffer, gathered in rank order.
    packed: list[torch.Tensor] = []

    def all_gather(parts, tensor, group=None):
        packed.append(tensor.clone())
        if len(packed) == world:
            for part, each in zip(parts, packed, strict=True):
                part.copy_(each)

    monkeypatch.setattr(_work_split.dist, "all_gather", all_gather)
    given = None if shift == 0 else turns
    for split, mine in zip(splits[:-1], local[:-1], strict=True):
        split.exchange(mine, counts, given)  # (fills `packed`; the last call fills the parts)
    pieces = splits[-1].exchange(local[-1], counts, given)
    for i, n in enumerate(counts):
        rebuilt = torch.cat([rows for _, rows in pieces[i]] or [full[i][:0]])
        assert [start for start, _ in pieces[i]] == sorted(start for start, _ in pieces[i])
        assert torch.equal(rebuilt, full[i]), (i, n)


def test_single_blocks_turn_from_rank_to_rank():
    # Four batches of one block over two ranks: two each, not four on rank 0.
    taken = [sum(_split(r, 2).share(1, turn) != (1, 1) for turn in range(4)) for r in range(2)]
    assert taken == [2, 2]


def test_spans_cut_a_row_range_at_tensor_borders():
    sizes = [3, 0, 4, 2]
    for start, stop in itertools.combinations(range(10), 2):
        rows = [(i, a, b) for i, a, b in spans(sizes, start, stop)]
        offsets = [0, 3, 3, 7]
        covered = [offsets[i] + r for i, a, b in rows for r in range(a, b)]
        assert covered == list(range(start, stop))
