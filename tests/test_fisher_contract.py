"""One suite for the estimator contract, run over every kind in tests/fisher_kinds.py."""

from __future__ import annotations

import pytest
import torch

import fisherprec as fp
from tests import reference
from tests.fisher_kinds import KINDS, EstimatorKind

P_VALUES = [1, 7, 70, 129]
BETAS = [None, 0.9]


def _updates(p: int, generator: torch.Generator, dtype=torch.float32) -> list[torch.Tensor]:
    """A mix of single gradients and per-sample batches with different scales."""
    shapes = [(p,), (5, p), (p,), (3, p), (1, p)]
    return [(torch.randn(s, generator=generator) * (1 + i)).to(dtype) for i, s in enumerate(shapes)]


def _fitted(kind: EstimatorKind, p: int, beta, damping, generator):
    if beta is not None and not kind.supports_beta:
        pytest.skip(f"{kind.name} has no EMA mode")
    est = kind.make(p, beta, damping)
    updates = _updates(p, generator)
    for g in updates:
        assert est.update(g) is est
    return est, kind.expected(updates, beta)


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float) -> None:
    scale = want.abs().max().clamp_min(1e-30)
    err = (got.to(torch.float64) - want).abs().max() / scale
    assert err <= rtol, f"relative error {err:.3g} > {rtol:.1g}"


def test_the_contract_suite_covers_every_registered_structure():
    covered = {type(k.make(7, None, 0.0)) for k in KINDS}
    assert covered == set(fp.fisher.registry.REGISTRY.values())


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request) -> EstimatorKind:
    return request.param


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("beta", BETAS)
def test_to_dense_trace_and_counters(kind, p, beta, generator):
    est, want = _fitted(kind, p, beta, 1e-3, generator)
    dense = est.to_dense()
    assert dense.dtype == torch.float64 and dense.shape == (p, p)
    _close(dense, want, kind.rtol)
    assert est.trace() == pytest.approx(float(want.trace()), rel=kind.rtol)
    assert est.num_updates == 5 and est.num_observations == 1 + 5 + 1 + 3 + 1
    assert est.memory_bytes() > 0


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("vdtype", [torch.float32, torch.float64])
def test_mv_matches_reference(kind, p, beta, vdtype, generator):
    est, want = _fitted(kind, p, beta, 1e-3, generator)
    v = torch.randn(p, generator=generator, dtype=torch.float64)
    got = est.mv(v.to(vdtype))
    assert got.shape == (p,) and got.dtype == vdtype
    rtol = kind.rtol if vdtype == torch.float32 else max(kind.rtol**2, 1e-10)
    _close(got, want @ v.to(vdtype).double(), rtol)
    block = torch.randn(4, p, generator=generator, dtype=torch.float64).to(vdtype)
    _close(est.mv(block), block.double() @ want, rtol)


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("power", [0.5, 0.25, 1.0])
@pytest.mark.parametrize("damping", [1e-3, 1.0])
def test_inv_root_mv_matches_reference(kind, p, power, damping, generator):
    est, want = _fitted(kind, p, None, damping, generator)
    root = reference.inv_root(want, damping, power)
    v = torch.randn(3, p, generator=generator, dtype=torch.float64)
    _close(est.inv_root_mv(v.float(), power=power), v @ root, kind.rtol)
    _close(est.inv_root_mv(v, power=power), v @ root, max(kind.rtol**2, 1e-9))
    single = est.inv_root_mv(v[0].float(), power=power)
    assert single.shape == (p,)


def test_before_any_update_F_is_zero(kind, generator):
    est = kind.make(9, None, 0.25)
    v = torch.randn(9, generator=generator)
    assert torch.equal(est.mv(v), torch.zeros(9))
    torch.testing.assert_close(est.inv_root_mv(v), v / 0.5)
    assert est.trace() == 0.0 and est.num_updates == 0


def test_repeated_and_zero_gradients_stay_finite(kind, generator):
    est = kind.make(33, None, 1e-6)
    g = torch.randn(33, generator=generator)
    for _ in range(4):
        est.update(g)
    est.update(torch.zeros(2, 33))
    out = est.inv_root_mv(torch.randn(33, generator=generator))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda e: e.update(torch.ones(8)), ValueError, "expected num_params=9"),
        (lambda e: e.update(torch.ones(2, 3, 9)), ValueError, "must have 1 or 2 dimensions"),
        (
            lambda e: e.update(torch.ones(9, dtype=torch.int64)),
            TypeError,
            "g has dtype torch.int64",
        ),
        (lambda e: e.update(torch.ones(0, 9)), ValueError, "no observations"),
        (lambda e: e.update(torch.ones(9, 2).T), ValueError, "g must be contiguous"),
        (lambda e: e.update([1.0] * 9), TypeError, "g must be a torch.Tensor"),
        (lambda e: e.mv(torch.ones(10)), ValueError, "expected num_params=9"),
        (
            lambda e: e.mv(torch.ones(9, dtype=torch.float16)),
            TypeError,
            "v has dtype torch.float16",
        ),
        (lambda e: e.inv_root_mv(torch.ones(9), power=0.0), ValueError, "Invalid power"),
        (lambda e: e.inv_root_mv(torch.ones(9), power=float("nan")), ValueError, "Invalid power"),
    ],
)
def test_bad_input_is_a_clear_error(kind, call, error, message):
    with pytest.raises(error, match=message):
        call(kind.make(9, None, 1e-3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 0}, "num_params"),
        ({"damping": -1.0}, "Invalid damping"),
        ({"beta": 1.0}, "Invalid beta"),
    ],
)
def test_bad_construction_is_a_clear_error(kind, kwargs, message):
    args = {"p": 5, "beta": None, "damping": 1e-3} | kwargs
    if args["beta"] is not None and not kind.supports_beta:
        pytest.skip(f"{kind.name} has no EMA mode")
    with pytest.raises(ValueError, match=message):
        kind.make(args["p"], args["beta"], args["damping"])
