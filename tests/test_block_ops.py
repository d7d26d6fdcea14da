"""Block-diagonal Fisher kernels against float64 references: outer-product
EMA, batched inverse p-th root, fused step; opcheck; bad input."""

from __future__ import annotations

import math

import pytest
import torch

from fisherprec import ops
from tests import reference

# (numels of the tensors of one call, block size): tails, b > n, b = 1, empty tensors.
LAYOUTS = [
    ([1], 1),
    ([5, 16, 37], 16),
    ([37, 0, 9], 7),
    ([64, 3], 64),
    ([130], 33),
]


def _states(numels, b, dtype, generator):
    """Random symmetric PSD statistics, zero outside each (tail) block like real ones."""
    out = []
    for n in numels:
        nb = ops.block_shape(n, b)[0]
        a = torch.randn(nb, b, 3, generator=generator, dtype=torch.float64)
        for k, size in enumerate(reference.block_sizes(n, b)):
            a[k, size:] = 0
        gram = (a @ a.transpose(1, 2)).to(dtype)
        out.append((gram + gram.transpose(1, 2)) / 2)  # exactly symmetric
    return out


def _fisher_like(count: int, b: int, generator, *, rank=None, damping=1e-4) -> torch.Tensor:
    """Rank-b/4 Gram matrices plus damping: condition number ~1e4 (float64)."""
    rank = rank or max(1, b // 4)
    g = torch.randn(count, b, rank, generator=generator, dtype=torch.float64)
    return g @ g.transpose(1, 2) / rank + damping * torch.eye(b, dtype=torch.float64)


# ------------------------------------------------------------ outer update
@pytest.mark.parametrize(("numels", "b"), LAYOUTS)
@pytest.mark.parametrize("state_dtype", ops.BLOCK_STATE_DTYPES)
@pytest.mark.parametrize("row_dtype", ops.FLOATING_DTYPES)
@pytest.mark.parametrize("num_rows", [1, 3])
def test_outer_update_matches_reference(numels, b, state_dtype, row_dtype, num_rows, generator):
    states = _states(numels, b, state_dtype, generator)
    before = [s.clone() for s in states]
    rows = [torch.randn(num_rows, n, generator=generator).to(row_dtype) for n in numels]
    ops.block_outer_update_(states, rows, b, 0.9, 0.05)
    rtol = 1e-6 if state_dtype == torch.float32 else 1e-13
    for got, old, r in zip(states, before, rows, strict=True):
        want = reference.block_outer_update(old, r, b, 0.9, 0.05)
        atol = rtol * float(want.abs().amax()) if want.numel() else 0.0
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol)
        assert torch.equal(got, got.transpose(1, 2))  # exactly symmetric


def test_outer_update_padding_stays_zero(generator):
    state = torch.zeros(ops.block_shape(21, 8))
    ops.block_outer_update_([state], [torch.randn(2, 21, generator=generator)], 8, 1.0, 1.0)
    assert state[2, 5:].abs().sum() == 0 and state[2, :, 5:].abs().sum() == 0
    assert state[2, :5, :5].abs().sum() > 0


# --------------------------------------------------------------- inverse root
def _roots(states, numels, b, **kw):
    roots = [torch.empty_like(s) for s in states]
    status = [torch.empty(s.shape[0], dtype=torch.int32) for s in states]
    ops.block_inv_root_(states, roots, status, numels, b, **kw)
    return roots, status


@pytest.mark.parametrize("b", [1, 2, 5, 16, 33, 64, 128])
@pytest.mark.parametrize("dtype", ops.BLOCK_STATE_DTYPES)
@pytest.mark.parametrize("power", [0.5, 0.25])
def test_inv_root_matches_float64_eigh(b, dtype, power, generator):
    """Fisher-like blocks (rank b/4 + damping, condition ~1e4): fp32 within 1e-5."""
    count = 3 if b <= 64 else 2
    states = [_fisher_like(count, b, generator).to(dtype)]
    roots, status = _roots(states, [count * b], b, scale=0.5, damping=1e-6, power=power)
    assert status[0].tolist() == [ops.ROOT_OK] * count
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for k in range(count):
        want = reference.inv_root(0.5 * states[0][k].double(), 1e-6, power)
        err = (roots[0][k].double() - want).abs().max() / want.abs().max()
        assert err <= tol, f"block {k}: relative error {err:.3g}"
    assert torch.equal(roots[0], roots[0].transpose(1, 2))


@pytest.mark.parametrize(("numels", "b"), LAYOUTS)
def test_inv_root_tail_blocks_and_padding(numels, b, generator):
    states = _states(numels, b, torch.float64, generator)
    roots, status = _roots(states, numels, b, damping=1e-3, power=0.5)
    for s, r, st, n in zip(states, roots, status, numels, strict=True):
        assert (st == ops.ROOT_OK).all()
        for k, size in enumerate(reference.block_sizes(n, b)):
            want = reference.inv_root(s[k, :size, :size], 1e-3, 0.5)
            torch.testing.assert_close(r[k, :size, :size], want, rtol=1e-10, atol=1e-10)
            assert r[k, size:].abs().sum() == 0 and r[k, :, size:].abs().sum() == 0


def test_inv_root_is_graceful_on_singular_and_bad_blocks(generator):
    b = 8
    g = torch.randn(b, generator=generator)
    state = torch.stack(
        [
            torch.zeros(b, b),  # F = 0: R = λ^(-p) I
            torch.outer(g, g),  # rank 1, condition 1/λ
            torch.full((b, b), float("nan")),  # non-finite statistic
            torch.eye(b) * 1e30,  # huge but finite
        ]
    )
    roots, status = _roots([state], [4 * b], b, damping=1e-2, power=0.5)
    assert status[0].tolist() == [ops.ROOT_OK, ops.ROOT_OK, ops.ROOT_NONFINITE_INPUT, ops.ROOT_OK]
    torch.testing.assert_close(roots[0][0], torch.eye(b) * 10.0)
    want = reference.inv_root(state[1], 1e-2)
    torch.testing.assert_close(roots[0][1].double(), want, rtol=1e-5, atol=1e-5 * want.abs().max())
    assert torch.isnan(roots[0][2]).all()
    torch.testing.assert_close(roots[0][3], torch.eye(b) * 1e-15)
    # Without damping a singular block has no inverse root: reported, not garbage.
    roots, status = _roots([state[:2].contiguous()], [2 * b], b, damping=0.0)
    assert status[0].tolist() == [ops.ROOT_NONFINITE_OUTPUT] * 2
    assert torch.isnan(roots[0]).all()


def test_inv_root_does_not_depend_on_thread_count(generator):
    state = _fisher_like(40, 16, generator).float()
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(_roots([state], [640], 16, damping=1e-6)[0][0])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


# ----------------------------------------------------------------- fused step
def _step_reference(p, g, m, v, root, status, b, s):
    """One fused step in float64 from explicit inputs (s: the scalars)."""
    g = g.double().flatten() * (-1.0 if s["maximize"] else 1.0)
    m = s["beta1"] * m.double().flatten() + (1 - s["beta1"]) * g
    v = s["beta2"] * v.double().flatten() + (1 - s["beta2"]) * g * g
    a = m / (v.sqrt() * s["inv_c2_root"] + s["eps"])
    u = a.clone()
    for k, size in enumerate(reference.block_sizes(g.numel(), b)):
        if status[k] != ops.ROOT_OK:
            continue
        sl = slice(k * b, k * b + size)
        ub = root[k, :size, :size].double() @ m[sl]
        if s["graft"]:
            ub = ub * (a[sl].norm() / ub.norm())
        u[sl] = ub
    theta = p.double().flatten() * s["decay"] - s["step_size"] * u
    return theta.reshape(p.shape), m, v


@pytest.mark.parametrize(("numels", "b"), LAYOUTS)
@pytest.mark.parametrize("dtype", ops.FLOATING_DTYPES)
@pytest.mark.parametrize(("graft", "maximize"), [(True, False), (False, True)])
def test_fused_step_matches_reference(numels, b, dtype, graft, maximize, generator):
    scalars = {
        "beta1": 0.9,
        "beta2": 0.99,
        "step_size": 0.01 / (1 - 0.9**3),
        "inv_c2_root": 1 / math.sqrt(1 - 0.99**3),
        "eps": 1e-8,
        "decay": 1 - 0.01 * 0.1,
        "maximize": maximize,
        "graft": graft,
    }
    params = [torch.randn(n, generator=generator).to(dtype) for n in numels]
    grads = [torch.randn(n, generator=generator).to(dtype) for n in numels]
    ms = [torch.randn(n, generator=generator) * 0.1 for n in numels]
    vs = [torch.rand(n, generator=generator) for n in numels]
    roots = [s.float() for s in _states(numels, b, torch.float64, generator)]
    status = [
        torch.randint(0, 2, (ops.block_shape(n, b)[0],), generator=generator, dtype=torch.int32)
        * ops.ROOT_NONE
        for n in numels
    ]
    want = [
        _step_reference(*args, b, scalars)
        for args in zip(params, grads, ms, vs, roots, status, strict=True)
    ]
    ops.block_fisher_step_(params, grads, ms, vs, roots, status, block_size=b, **scalars)
    tol = {torch.float32: 1e-5, torch.float64: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
    for p, m, v, (wp, wm, wv) in zip(params, ms, vs, want, strict=True):
        torch.testing.assert_close(m.double(), wm.reshape(m.shape), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(v.double(), wv.reshape(v.shape), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(p.double(), wp, rtol=tol[dtype], atol=tol[dtype])


# ------------------------------------------------------------- opcheck, errors


def _root_call(**override):
    args = {
        "states": [torch.zeros(2, 4, 4)],
        "roots": [torch.zeros(2, 4, 4)],
        "status": [torch.zeros(2, dtype=torch.int32)],
        "numels": [7],
        "block_size": 4,
        "damping": 1e-3,
    } | override
    ops.block_inv_root_(**args)


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ({"block_size": 0}, ValueError, "Invalid block_size value: 0"),
        ({"block_size": 257}, ValueError, "Invalid block_size value: 257"),
        ({"numels": [9]}, ValueError, r"states\[0\] has shape \(2, 4, 4\), expected \(3, 4, 4\)"),
        (
            {"states": [torch.zeros(2, 4, 4, dtype=torch.float16)]},
            TypeError,
            "states\\[0\\] has dtype",
        ),
        (
            {"roots": [torch.zeros(2, 4, 4, dtype=torch.float64)]},
            TypeError,
            "roots\\[0\\] has dtype",
        ),
        ({"status": [torch.zeros(2)]}, TypeError, r"status\[0\] has dtype torch.float32"),
        ({"status": [torch.zeros(3, dtype=torch.int32)]}, ValueError, r"status\[0\] has shape"),
        ({"damping": -1.0}, ValueError, "Invalid damping value"),
        ({"damping": float("nan")}, ValueError, "Invalid damping value"),
        ({"power": 0.0}, ValueError, "Invalid power value"),
        ({"states": [torch.zeros(4, 2, 4).transpose(0, 1)]}, ValueError, "must be contiguous"),
        (
            {"roots": [torch.zeros(2, 4, 4), torch.zeros(1, 4, 4)]},
            ValueError,
            "roots has 2 tensors",
        ),
    ],
)
def test_inv_root_rejects_bad_input(override, error, message):
    with pytest.raises(error, match=message):
        _root_call(**override)


def test_inv_root_rejects_aliasing():
    state = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match="share memory"):
        _root_call(states=[state], roots=[state])


@pytest.mark.parametrize(
    ("states", "rows", "message"),
    [
        ([torch.zeros(1, 4, 4)], [torch.ones(4)], r"rows\[0\] must be a \(B, n\) matrix"),
        ([torch.zeros(1, 4, 4)], [torch.ones(1, 5)], r"expected \(2, 4, 4\)"),
        (
            [torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)],
            [torch.ones(1, 4), torch.ones(2, 4)],
            "rows",
        ),
        ([torch.zeros(1, 4, 4, dtype=torch.int32)], [torch.ones(1, 4)], "has dtype torch.int32"),
    ],
)
def test_outer_update_rejects_bad_input(states, rows, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ops.block_outer_update_(states, rows, 4, 0.9, 0.1)


def test_fused_step_rejects_bad_input():
    p = [torch.zeros(5)]
    good = {
        "grads": [torch.zeros(5)],
        "exp_avgs": [torch.zeros(5)],
        "exp_avg_sqs": [torch.zeros(5)],
        "roots": [torch.zeros(2, 4, 4)],
        "status": [torch.zeros(2, dtype=torch.int32)],
    }
    kw = {
        "block_size": 4,
        "beta1": 0.9,
        "beta2": 0.99,
        "step_size": 0.1,
        "inv_c2_root": 1.0,
        "eps": 1e-8,
        "decay": 1.0,
    }
    cases = [
        (
            {"exp_avgs": [torch.zeros(5, dtype=torch.float64)]},
            TypeError,
            r"exp_avgs\[0\] has dtype",
        ),
        ({"grads": [torch.zeros(6)]}, ValueError, r"grads\[0\] has shape \(6,\)"),
        ({"roots": [torch.zeros(1, 4, 4)]}, ValueError, r"roots\[0\] has shape \(1, 4, 4\)"),
        ({"exp_avg_sqs": good["exp_avgs"]}, ValueError, "share memory"),
    ]
    for override, error, message in cases:
        args = good | override
        with pytest.raises(error, match=message):
            ops.block_fisher_step_(p, **args, **kw)
    with pytest.raises(ValueError, match="Invalid inv_c2_root"):
        ops.block_fisher_step_(p, **good, **(kw | {"inv_c2_root": 0.0}))


def test_gpu_check_block_runs_on_cpu():
    """The device check's code path, CPU against itself (the GPU run is the lead's)."""
    from fisherprec.benchmarks.block import BLOCK_SIZES, gpu_check_block

    report = gpu_check_block("cpu", num_params=1024, min_seconds=0.0)
    assert report["outer_update_rel_err"] == 0.0 and report["fused_step_rel_err"] == 0.0
    for b in BLOCK_SIZES:
        assert report[f"inv_root_b{b}"]["rel_err_vs_cpu"] == 0.0
