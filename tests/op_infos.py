"""OpInfo-style table of the native ops: for every op of fisherprec.ops.REGISTRY,
the dtypes it takes and a builder of valid raw arguments (odd sizes, random
values) for ``torch.ops.fisherprec.<name>``. tests/test_op_conformance.py runs
torch.library.opcheck (schema, fake, dispatch) and the meta path over every row;
the numerics of each op stay in its family's test file, its error inputs in the
fuzz suite (tests/fuzz.py, one valid-sample builder per public op)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Args = tuple[Any, ...]


@dataclass(frozen=True)
class OpInfo:
    name: str
    dtypes: tuple[torch.dtype, ...]
    sample: Callable[[torch.Generator, torch.dtype], Args]


def _randn(generator, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def _sum_of_squares(g, dtype):
    return ([_randn(g, 7, dtype=dtype), _randn(g, 3, 5, dtype=dtype)],)


def _bellman_backup(g, dtype):
    states, actions = 5, 2  # row s·A + a → successors (s + a) % S and (s + 2) % S, 1/2 each
    indptr = torch.arange(0, 2 * states * actions + 1, 2, dtype=torch.int64)
    indices = torch.tensor(
        [[(s + a) % states, (s + 2) % states] for s in range(states) for a in range(actions)]
    ).reshape(-1)
    values = torch.full((indices.numel(),), 0.5, dtype=dtype)
    reward, v = _randn(g, states, actions, dtype=dtype), _randn(g, states, dtype=dtype)
    return indptr, indices, values, reward, v, 0.9, None, True


def _design_score_step(g, dtype):
    n, p = 9, 3
    f64 = torch.float64
    return (
        _randn(g, n, p, dtype=dtype),
        _randn(g, p, dtype=f64),
        _randn(g, p, dtype=f64),
        0.5,
        0.1,
        1.0,
        _randn(g, n, dtype=f64).abs(),
        _randn(g, n, dtype=f64).abs(),
        torch.zeros(n, dtype=torch.bool),
        torch.zeros(2, dtype=f64),
    )


def _diag_bucket(g, dtype, sizes=(3, 129)):
    params = [_randn(g, n, dtype=dtype) for n in sizes]
    grads = [_randn(g, n, dtype=dtype) for n in sizes]
    moments = [_randn(g, n).abs() for n in sizes], [_randn(g, n).abs() for n in sizes]
    return params, grads, *moments


def _diag_step(g, dtype):
    return (*_diag_bucket(g, dtype), 0.01, 0.9, 0.999, 1e-8, 0.01, 2.0, 0.5, True, False)


def _diag_step_counted(g, dtype):
    params, grads, m, v = _diag_bucket(g, dtype, sizes=(3, 129, 5))
    steps = torch.tensor([2.0, 2.0, 7.0])  # two step counts: two native calls
    return params, grads, m, v, steps, 0.01, 0.9, 0.999, 1e-8, 0.01, 0.5, True, False


def _diag_fisher_update(g, dtype):
    return _randn(g, 11, dtype=torch.float64).abs(), _randn(g, 4, 11, dtype=dtype), 0.5, 0.25


def _block_states(g, numels, b, dtype):
    states = []
    for n in numels:
        rows = _randn(g, -(-n // b), b, b, dtype=torch.float64)
        states.append((rows @ rows.transpose(1, 2)).to(dtype))
    return states


def _block_outer_update(g, dtype):
    b, numels = 4, [6, 9]
    return (
        _block_states(g, numels, b, torch.float32),
        [_randn(g, 2, n, dtype=dtype) for n in numels],
        b,
        0.9,
        0.1,
    )


def _block_inv_root(g, dtype):
    b, numels = 4, [6, 9]
    states = _block_states(g, numels, b, dtype)
    roots = [torch.empty_like(s) for s in states]
    status = [torch.empty(s.shape[0], dtype=torch.int32) for s in states]
    return states, roots, status, numels, b, 1.0, 1e-3, 0.5


def _block_fisher_step(g, dtype):
    b, numels = 4, [6, 9]
    states, roots, status, *_ = _block_inv_root(g, torch.float32)
    torch.ops.fisherprec.block_inv_root(states, roots, status, numels, b, 1.0, 1e-3, 0.5)
    params, grads, ms, vs = _diag_bucket(g, dtype, numels)
    return params, grads, ms, vs, roots, status, b, 0.9, 0.99, 0.1, 1.0, 1e-8, 1.0, False, True


def _window(g, dtype, rows=4, total=10):
    return _randn(g, rows, total, dtype=dtype)


def _lowrank_dots(g, dtype):
    return (
        _window(g, dtype),
        3,
        1,
        [_randn(g, 7), _randn(g, 3)],
        torch.empty(3, dtype=torch.float64),
    )


def _lowrank_stats(g, dtype):
    grads = [_randn(g, 7), _randn(g, 3)]
    m = [_randn(g, 7), _randn(g, 3)]
    v = [_randn(g, 7).abs(), _randn(g, 3).abs()]
    out = torch.empty(2 * 3 + 2, dtype=torch.float64)
    return grads, m, v, _window(g, dtype), 3, 2, 0.9, 0.99, 1.0, 1e-8, False, out


def _lowrank_combine(g, dtype):
    out = [_randn(g, 7), _randn(g, 3)]
    x = [_randn(g, 7), _randn(g, 3)]
    return out, x, _window(g, dtype), 3, _randn(g, 4, dtype=torch.float64), 0.5


def _symmetric_eigh(g, dtype):
    m = _randn(g, 3, 5, 5, dtype=dtype)
    out = torch.float64
    return (
        m @ m.mT,
        torch.empty(3, 5, dtype=out),
        torch.empty(3, 5, 5, dtype=out),
        torch.empty(3, dtype=torch.int32),
    )


FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
WINDOWS = (torch.float32, torch.float64, torch.bfloat16)

OP_INFOS: dict[str, OpInfo] = {
    info.name: info
    for info in [
        OpInfo("sum_of_squares", FLOATS, _sum_of_squares),
        OpInfo("bellman_backup", (torch.float32, torch.float64), _bellman_backup),
        OpInfo("design_score_step", FLOATS, _design_score_step),
        OpInfo("diag_step", (torch.float32, torch.bfloat16, torch.float16), _diag_step),
        OpInfo("diag_step_counted", (torch.float32, torch.bfloat16), _diag_step_counted),
        OpInfo("diag_fisher_update", FLOATS, _diag_fisher_update),
        OpInfo("block_outer_update", FLOATS, _block_outer_update),
        OpInfo("block_inv_root", (torch.float32, torch.float64), _block_inv_root),
        OpInfo("block_fisher_step", FLOATS, _block_fisher_step),
        OpInfo("lowrank_dots", WINDOWS, _lowrank_dots),
        OpInfo("lowrank_stats", WINDOWS, _lowrank_stats),
        OpInfo("lowrank_combine", WINDOWS, _lowrank_combine),
        OpInfo("symmetric_eigh", (torch.float32, torch.float64), _symmetric_eigh),
    ]
}
