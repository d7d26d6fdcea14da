"""The op conformance suite: every op of fisherprec.ops.REGISTRY, every dtype
of its row in tests/op_infos.py, through torch.library.opcheck (schema, fake
implementation, dispatch, aliasing of what it writes) and on meta tensors."""

from __future__ import annotations

import pytest
import torch

from fisherprec import ops
from tests.op_infos import OP_INFOS

CASES = [(name, dtype) for name, info in OP_INFOS.items() for dtype in info.dtypes]


def test_every_registered_op_has_an_info_row():
    assert set(OP_INFOS) == set(ops.REGISTRY)


@pytest.mark.parametrize("name", sorted(OP_INFOS))
def test_opcheck(name):
    info = OP_INFOS[name]
    args = info.sample(torch.Generator().manual_seed(0), info.dtypes[0])
    torch.library.opcheck(getattr(torch.ops.fisherprec, name).default, args)


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in CASES])
def test_every_dtype_runs_and_writes_finite_values(name, dtype):
    args = OP_INFOS[name].sample(torch.Generator().manual_seed(0), dtype)
    out = getattr(torch.ops.fisherprec, name)(*args)
    results = [t for t in (out if isinstance(out, tuple) else (out,)) if t is not None]
    written = [a for a, arg in zip(args, _schema_args(name), strict=True) if arg.alias_info]
    for t in results + [t for w in written for t in (w if isinstance(w, list) else [w])]:
        if t.is_floating_point():
            assert torch.isfinite(t).all(), name


def _schema_args(name):
    return getattr(torch.ops.fisherprec, name).default._schema.arguments


def _to_meta(value):
    if isinstance(value, torch.Tensor):
        return value.to("meta")
    if isinstance(value, list):
        return [_to_meta(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(OP_INFOS))
def test_meta_tensors_take_the_fake_and_touch_no_memory(name):
    info = OP_INFOS[name]
    args = info.sample(torch.Generator().manual_seed(0), info.dtypes[0])
    eager = getattr(torch.ops.fisherprec, name)(*args)
    meta = getattr(torch.ops.fisherprec, name)(*[_to_meta(a) for a in args])
    flat_eager = eager if isinstance(eager, tuple) else (eager,)
    flat_meta = meta if isinstance(meta, tuple) else (meta,)
    for e, m in zip(flat_eager, flat_meta, strict=True):
        if e is None:
            assert m is None
        else:
            assert m.device.type == "meta" and m.shape == e.shape and m.dtype == e.dtype
