"""Sequential predictors that learn in context by construction, with known regret.

Two universal predictors for symbol streams (bytes by default), each run
from empty counts at the start of every sequence, so that everything it knows
at position t it learnt from x_1 … x_{t−1} of that same sequence:

* :func:`kt_nll` — the Krichevsky–Trofimov estimator over an alphabet of M
  symbols, p(a | x_<t) = (n_a + ½) / (t − 1 + M/2): the Bayes mixture of all
  i.i.d. sources under the Dirichlet(½, …, ½) prior.
* :func:`ctw_nll` — context-tree weighting of bounded depth D over the binary
  decomposition of each symbol: the Bayes mixture, with the ½/½ tree prior, of
  every tree source whose contexts are at most D previous symbols, each
  context's bit law estimated by a binary KT estimator.

Both return the per-position loss −log p(x_t | x_<t) in nats as an (N, T)
float64 tensor, the input of :mod:`fisherprec.kinematics`. Their regret
bounds, and why they make the in-context loss decelerate, are stated in
docs/theory.md, section "In-context learning and sequential prediction".

Example:
    >>> import torch
    >>> from fisherprec import sequential
    >>> x = torch.tensor([[0, 0, 1, 0]])
    >>> (-sequential.kt_nll(x, alphabet=2)).exp()  # p(x_t | x_<t) = (n + ½) / (t − 1 + 1)
    tensor([[0.5000, 0.7500, 0.1667, 0.6250]], dtype=torch.float64)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["ctw_nll", "kt_nll"]

_LOG_HALF = math.log(0.5)


def _symbols(sequences: Any, alphabet: int, name: str = "sequences") -> np.ndarray:
    """(N, T) int64 numpy array of symbols in [0, alphabet), validated."""
    if isinstance(sequences, torch.Tensor):
        if sequences.is_floating_point() or sequences.is_complex() or sequences.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer symbols, got dtype {sequences.dtype}")
        array = sequences.detach().cpu().numpy()
    else:
        array = np.asarray(sequences)
        if array.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer symbols, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (T,) or (N, T), got {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} holds no symbols (shape {tuple(array.shape)})")
    array = array.astype(np.int64, copy=False)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= alphabet:
        raise ValueError(f"{name} must lie in [0, {alphabet}) (the alphabet), got [{low}, {high}]")
    return array


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise ValueError(f"Invalid {name} value: {value} (must be in [{low}, {high}])")
    return int(value)


def kt_nll(sequences: Any, alphabet: int = 256) -> torch.Tensor:
    """Per-position loss of the Krichevsky–Trofimov estimator, from scratch per sequence.

    p(x_t = a | x_<t) = (n_a(t) + ½) / (t − 1 + M/2), with n_a(t) the count of
    a among x_1 … x_{t−1} and M = ``alphabet``; the first symbol is uniform.

    Args:
        sequences: (N, T) or (T,) integer symbols in [0, alphabet).
        alphabet: M ≥ 2.

    Returns:
        (N, T) float64 losses −log p(x_t | x_<t) in nats.
    """
    alphabet = _check_int("alphabet", alphabet, 2, 2**31)
    x = _symbols(sequences, alphabet)
    N, T = x.shape
    # n_{x_t}(t): how often x_t occurred before position t in its row (a stable sort
    # groups equal symbols in order of position; the rank within a group is the count).
    order = np.argsort(x, axis=1, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=1)
    ranks = np.arange(T)[None].repeat(N, 0)
    new_group = np.ones((N, T), dtype=bool)
    new_group[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group_start = np.maximum.accumulate(np.where(new_group, ranks, 0), axis=1)
    before = np.empty((N, T), dtype=np.float64)
    np.put_along_axis(before, order, (ranks - group_start).astype(np.float64), axis=1)
    t = np.arange(T, dtype=np.float64)[None]
    return torch.from_numpy(-np.log((before + 0.5) / (t + alphabet / 2)))


def _context_keys(x: np.ndarray, depth: int, bits: int) -> np.ndarray:
    """(depth + 1, N, T, bits) int64: a key per (window, context of length d,
    bit-tree node) that is unique within the window, for d = 0 … depth.

    The context of x_t at depth d is x_{t−1} … x_{t−d}, with a padding symbol
    before the start; bit j of x_t is predicted at node (1 << j) | (its j
    higher bits) of the symbol's binary tree, so each node is its own KT leaf.
    """
    N, T = x.shape
    base = (1 << bits) + 1  # the symbols shifted by one, 0 = before the start
    shifted = x + 1
    ctx = np.zeros((depth + 1, N, T), dtype=np.int64)
    for d in range(1, depth + 1):
        older = np.zeros((N, T), dtype=np.int64)
        older[:, d:] = shifted[:, :-d] if d < T else 0
        ctx[d] = ctx[d - 1] + older * base ** (d - 1)
    j = np.arange(bits)
    prefix = x[..., None] >> (bits - j)  # the j higher bits of x_t, (N, T, bits)
    node = (1 << j) | prefix
    return ctx[..., None] * (1 << bits) + node[None]


def ctw_nll(sequences: Any, depth: int = 3, bits: int = 8, *, chunk: int = 512) -> torch.Tensor:
    """Per-position loss of context-tree weighting, from scratch per sequence.

    Each symbol of ``bits`` bits is coded bit by bit, most significant first;
    bit j is predicted by a CTW mixture over the contexts x_{t−1} … x_{t−D}
    (padded before the start) for the tree node of x_t's first j bits. At a
    context node s of depth < D the weighted probability is

        P_w(s) = ½ P_e(s) + ½ Π_c P_w(c s)

    over the children c s (one more symbol of context) seen so far, and
    P_w(s) = P_e(s) at depth D, with P_e the binary KT probability of the
    bits seen in context s. The probability of x_t is the product over its
    bits of the ratios P_w(root) after / before the bit.

    Args:
        sequences: (N, T) or (T,) integer symbols in [0, 2**bits).
        depth: D ≥ 0, context length in symbols (D = 0: one KT per bit node).
        bits: bits per symbol (8 for bytes, 1 for a binary stream).
        chunk: sequences processed together (memory ~ chunk·T·bits·(D+1) int64).

    Returns:
        (N, T) float64 losses −log p(x_t | x_<t) in nats.
    """
    bits = _check_int("bits", bits, 1, 16)
    depth = _check_int("depth", depth, 0, 64)
    chunk = _check_int("chunk", chunk, 1, 2**31)
    if ((1 << bits) + 1) ** depth * (1 << bits) * chunk >= 2**62:
        raise ValueError(
            f"depth={depth} with bits={bits} and chunk={chunk} overflows the int64 context "
            "keys; use a smaller depth or chunk"
        )
    x = _symbols(sequences, 1 << bits)
    out = [_ctw_chunk(x[start : start + chunk], depth, bits) for start in range(0, len(x), chunk)]
    return torch.from_numpy(np.concatenate(out))


def _ctw_chunk(x: np.ndarray, depth: int, bits: int) -> np.ndarray:
    N, T = x.shape
    keys = _context_keys(x, depth, bits) * N + np.arange(N)[None, :, None, None]
    # Dense node ids, one table for all depths (depth is a leading axis, so ids
    # of different depths never collide after offsetting).
    ids = np.empty(keys.shape, dtype=np.int64)
    offset = 0
    for d in range(depth + 1):
        unique, inverse = np.unique(keys[d].reshape(-1), return_inverse=True)
        ids[d] = inverse.reshape(keys.shape[1:]) + offset
        offset += unique.size
    del keys
    counts = np.zeros((2, offset))  # bits 0 and 1 seen at each node
    log_pe = np.zeros(offset)  # log KT probability of the node's bits
    log_pw = np.zeros(offset)  # log weighted probability
    log_children = np.zeros(offset)  # Σ over seen children of log P_w
    bit_values = (x[..., None] >> (bits - 1 - np.arange(bits))) & 1  # (N, T, bits)
    nll = np.zeros((N, T))
    rows = np.arange(N)
    for t in range(T):
        for j in range(bits):
            node = ids[:, :, t, j]  # (D + 1, N), root first
            bit = bit_values[:, t, j]
            c0, c1 = counts[0, node], counts[1, node]
            seen = np.where(bit == 1, c1, c0)
            new_pe = log_pe[node] + np.log((seen + 0.5) / (c0 + c1 + 1.0))
            old_pw = log_pw[node]
            new_pw = np.empty_like(new_pe)
            new_pw[depth] = new_pe[depth]
            for d in range(depth - 1, -1, -1):
                children = log_children[node[d]] + (new_pw[d + 1] - old_pw[d + 1])
                log_children[node[d]] = children
                new_pw[d] = np.logaddexp(new_pe[d], children) + _LOG_HALF
            log_pe[node] = new_pe
            log_pw[node] = new_pw
            counts[bit[None, :], node] += 1.0
            nll[rows, t] -= new_pw[0] - old_pw[0]
    return nll
