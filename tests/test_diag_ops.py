"""The diagonal kernels (fused step, per-sample Fisher) against float64 references."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fisherprec import ops
from tests import reference

SIZES = [0, 1, 7, 31, 1000, 65535, 65537]
# Unit roundoff (half an ulp, relative) of the final rounding per parameter dtype.
HALF_ULP = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
HYPER = [
    {},  # AdamW defaults
    {"weight_decay": 0.1, "maximize": True, "step": 3.0},
    {"power": 1.0, "eps": 1e-3, "step": 7.0},
    {"power": 0.25, "beta1": 0.5, "step": 2.0},
    {"beta1": 0.0, "beta2": 0.99, "bias_correction": False},  # RMSprop
]


def _bucket(dtype, generator, sizes=SIZES, shapes=((3, 5, 7),)):
    shapes = [(n,) for n in sizes] + list(shapes)
    params = [torch.randn(s, generator=generator).to(dtype) for s in shapes]
    grads = [torch.randn(s, generator=generator).to(dtype) for s in shapes]
    exp_avgs = [0.1 * torch.randn(s, generator=generator) for s in shapes]
    exp_avg_sqs = [0.01 * torch.rand(s, generator=generator) for s in shapes]
    return params, grads, exp_avgs, exp_avg_sqs


def _kwargs(hyper):
    return (
        {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
        | {"step": 1.0}
        | hyper
    )


@pytest.mark.parametrize("dtype", ops.DIAG_PARAM_DTYPES)
@pytest.mark.parametrize("hyper", HYPER, ids=lambda h: ",".join(h) or "adamw")
def test_diag_step_matches_float64_reference(dtype, hyper, generator):
    bucket = _bucket(dtype, generator)
    before = [[t.clone() for t in lst] for lst in bucket]
    kw = _kwargs(hyper)
    ops.diag_step_(*bucket, **kw)
    for p0, g0, m0, v0, p, g, m, v in zip(*before, *bucket, strict=True):
        want_p, want_m, want_v = reference.diag_step(p0, g0, m0, v0, **kw)
        assert torch.equal(g, g0)  # grads are read only
        assert p.dtype == dtype and m.dtype == v.dtype == torch.float32
        # Forward error bounds of the float32 arithmetic (a few roundings, ε = 2^-24).
        eps32 = 2.0**-24
        m_bound = 4 * eps32 * (m0.double().abs() + g0.double().abs())  # lerp cancels
        assert ((m.double() - want_m).abs() <= m_bound).all()
        torch.testing.assert_close(v.double(), want_v, rtol=8 * eps32, atol=0)
        c1 = 1 - kw["beta1"] ** kw["step"] if kw.get("bias_correction", True) else 1.0
        c2 = 1 - kw["beta2"] ** kw["step"] if kw.get("bias_correction", True) else 1.0
        denom = (want_v / c2) ** kw.get("power", 0.5) + kw["eps"]
        update = kw["lr"] / c1 * want_m.abs() / denom
        # The parameter: float32 error of the update, then the rounding to `dtype`.
        err = (p.double() - want_p).abs()
        bound = (
            kw["lr"] / c1 * m_bound / denom
            + update * 16 * eps32
            + 4 * eps32 * p0.double().abs()
            + (want_p.abs() + 2.0**-24) * HALF_ULP[dtype]
        )
        assert (err <= bound).all(), f"max excess {(err - bound).max():.3g}"


def test_diag_step_without_momentum_keeps_the_gradient_exactly(generator):
    params, grads, exp_avgs, exp_avg_sqs = _bucket(torch.float32, generator, sizes=[1000])
    exp_avgs[0].fill_(1e30)  # a naive m + (g - m) would lose g entirely
    ops.diag_step_(params, grads, exp_avgs, exp_avg_sqs, lr=0.1, beta1=0.0, step=1)
    assert torch.equal(exp_avgs[0], grads[0])


def test_diag_step_matches_torch_adamw_state_bit_for_bit(generator):
    """m and v follow torch's kernels (FMA placement included) exactly."""
    p = torch.randn(10_007, generator=generator)
    g = torch.randn(10_007, generator=generator)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    param = torch.nn.Parameter(p.clone())
    param.grad = g.clone()
    adamw = torch.optim.AdamW([param], lr=0.01, weight_decay=0.1)
    for step in (1.0, 2.0, 3.0):
        adamw.step()
        ops.diag_step_([p], [g], [m], [v], lr=0.01, weight_decay=0.1, step=step)
    state = adamw.state[param]
    assert torch.equal(m, state["exp_avg"]) and torch.equal(v, state["exp_avg_sq"])
    # θ: within float32 rounding of the update (torch's sqrt is not always correctly rounded)
    torch.testing.assert_close(p, param.detach(), rtol=2.5e-7, atol=0.01 * 1e-6)


def test_diag_step_does_not_depend_on_thread_count(generator):
    results = []
    threads = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            bucket = _bucket(torch.float32, torch.Generator().manual_seed(5), sizes=[300_001, 5])
            ops.diag_step_(*bucket, lr=0.01, step=4)
            results.append(bucket)
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_diag_step_propagates_nonfinite_values_elementwise():
    p, m, v = torch.ones(5), torch.zeros(5), torch.zeros(5)
    g = torch.tensor([1.0, float("nan"), float("inf"), -1.0, 0.0])
    ops.diag_step_([p], [g], [m], [v], lr=0.1, step=1)
    assert torch.isnan(p[1]) and torch.isnan(p[2])  # inf/inf in the update
    assert torch.isfinite(p[[0, 3, 4]]).all() and p[4] == 1.0


def test_diag_step_under_torch_compile(generator):
    bucket = _bucket(torch.float32, generator, sizes=[17, 4096], shapes=())
    eager = [[t.clone() for t in lst] for lst in bucket]

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(params, grads, exp_avgs, exp_avg_sqs):
        ops.diag_step_(params, grads, exp_avgs, exp_avg_sqs, lr=0.01, step=2)

    step(*bucket)
    ops.diag_step_(*eager, lr=0.01, step=2)
    for a, b in zip(bucket, eager, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_diag_step_on_meta_tensors_traces_through_the_fake():
    t = [torch.empty(4, device="meta")]
    ops.diag_step_(t, [torch.empty(4, device="meta")], [torch.empty(4, device="meta")],
                   [torch.empty(4, device="meta")], lr=0.1, step=1)  # fmt: skip


def _good(n=4):
    return [torch.ones(n)], [torch.ones(n)], [torch.zeros(n)], [torch.zeros(n)]


def _with(index, value):
    args = list(_good())
    args[index] = value
    return args


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (_with(0, []), ValueError, "params must not be empty"),
        (_with(1, [torch.ones(4), torch.ones(4)]), ValueError, "grads has 2 tensors but params has 1"),
        (_with(1, [torch.ones(5)]), ValueError, r"grads\[0\] has shape \(5,\) but params\[0\] has \(4,\)"),
        (_with(2, [torch.zeros(2, 2)]), ValueError, r"exp_avgs\[0\] has shape \(2, 2\)"),
        (_with(3, [torch.zeros(3)]), ValueError, r"exp_avg_sqs\[0\] has shape \(3,\)"),
        (_with(1, [torch.ones(4, dtype=torch.bfloat16)]), TypeError, "grads have dtype torch.bfloat16 but params have torch.float32"),
        (_with(0, [torch.ones(4, dtype=torch.float64)]), TypeError, r"params\[0\] has dtype torch.float64"),
        (_with(2, [torch.zeros(4, dtype=torch.bfloat16)]), TypeError, r"exp_avgs\[0\] has dtype torch.bfloat16; supported: float32"),
        (_with(3, [torch.zeros(4, dtype=torch.float64)]), TypeError, r"exp_avg_sqs\[0\] has dtype torch.float64"),
        (_with(0, [torch.ones(8)[::2]]), ValueError, r"params\[0\] must be contiguous"),
        (_with(1, [torch.ones(4, 2).T.reshape(2, 4).T.contiguous().T]), ValueError, None),
        (_with(2, [torch.zeros(4).to_sparse()]), TypeError, "dense"),
        (_with(1, torch.ones(4)), TypeError, "grads must be a list of tensors"),
        (_with(3, [torch.zeros(4, device="meta")]), RuntimeError, r"exp_avg_sqs\[0\] is on meta but params\[0\] is on cpu"),
    ],
)  # fmt: skip
def test_diag_step_rejects_bad_buffers(args, error, message):
    if message is None:  # a (4, 2)-shaped transposed grad: both shape and layout are wrong
        with pytest.raises(ValueError):
            ops.diag_step_(*args, lr=0.1, step=1)
        return
    with pytest.raises(error, match=message):
        ops.diag_step_(*args, lr=0.1, step=1)


def test_diag_step_rejects_aliasing_buffers():
    p, g, m, v = _good(8)
    with pytest.raises(
        ValueError, match=r"exp_avg(_sq)?s\[0\] and exp_avg(_sq)?s\[0\] share memory"
    ):
        ops.diag_step_(p, g, m, m, lr=0.1, step=1)
    with pytest.raises(
        ValueError, match=r"(params|grads)\[0\] and (params|grads)\[0\] share memory"
    ):
        ops.diag_step_(p, p, m, v, lr=0.1, step=1)
    base = torch.zeros(8)
    with pytest.raises(ValueError, match="share memory"):
        ops.diag_step_([base[:5], base[4:7]], [torch.ones(5), torch.ones(3)],
                       [torch.zeros(5), torch.zeros(3)], [torch.zeros(5), torch.zeros(3)],
                       lr=0.1, step=1)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "Invalid lr value"),
        ({"lr": float("nan")}, "Invalid lr value"),
        ({"eps": -1e-8}, "Invalid eps value"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value"),
        ({"beta1": 1.0}, "Invalid beta1 value"),
        ({"beta2": -0.1}, "Invalid beta2 value"),
        ({"step": 0}, "Invalid step value"),
        ({"power": 0.0}, "Invalid power value"),
    ],
)
def test_diag_step_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ops.diag_step_(*_good(), **({"lr": 0.1, "step": 1} | kwargs))


def test_cuda_tensors_on_a_cpu_only_build_are_a_clear_error(monkeypatch):
    monkeypatch.setattr(ops.checks, "CUDA_BUILT", False)
    with FakeTensorMode():
        bufs = [[torch.empty(4, device="cuda")] for _ in range(4)]
        state = torch.empty(4, device="cuda")
    with pytest.raises(
        RuntimeError, match=r"params\[0\] is on cuda:0, but fisherprec was built without CUDA"
    ):
        ops.diag_step_(*bufs, lr=0.1, step=1)
    with pytest.raises(
        RuntimeError, match="state is on cuda:0, but fisherprec was built without CUDA"
    ):
        ops.diag_fisher_update_(state, torch.ones(4), old_weight=0.0, new_weight=1.0)  # fmt: skip


# --------------------------------------------------------- per-sample Fisher
@pytest.mark.parametrize("grad_dtype", ops.FLOATING_DTYPES)
@pytest.mark.parametrize("state_dtype", ops.DIAG_STATE_DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (1, 1025), (5, 3), (33, 1023), (3, 3001)])
def test_diag_fisher_update_matches_float64_reference(grad_dtype, state_dtype, shape, generator):
    p = shape[-1]
    grads = torch.randn(shape, generator=generator).to(grad_dtype)
    state = torch.rand(p, generator=generator, dtype=torch.float64).to(state_dtype)
    old, new = 0.7, 0.3 / (shape[0] if len(shape) == 2 else 1)
    want = reference.diag_fisher(state, grads, old, new)
    ops.diag_fisher_update_(state, grads, old_weight=old, new_weight=new)
    rtol = 1e-13 if state_dtype == torch.float64 else 2.0**-24
    torch.testing.assert_close(state.double(), want, rtol=rtol, atol=0)


def test_diag_fisher_update_opcheck(generator):
    state = torch.rand(129, generator=generator)
    grads = torch.randn(4, 129, generator=generator)
    torch.library.opcheck(
        torch.ops.fisherprec.diag_fisher_update.default, (state, grads, 0.5, 0.25)
    )


@pytest.mark.parametrize(
    ("state", "grads", "error", "message"),
    [
        (torch.zeros(4, dtype=torch.float16), torch.ones(4), TypeError, "state has dtype torch.float16"),
        (torch.zeros(2, 2), torch.ones(2), ValueError, "state must have 1 dimensions"),
        (torch.zeros(4), torch.ones(5), ValueError, "grads has 5 columns but state has 4"),
        (torch.zeros(4), torch.ones(2, 2, 4), ValueError, "grads must have 1 or 2 dimensions"),
        (torch.zeros(4), torch.ones(4, dtype=torch.int32), TypeError, "grads has dtype torch.int32"),
        (torch.zeros(4), torch.ones(4, 2).T, ValueError, "grads must be contiguous"),
        (torch.zeros(4), torch.ones(4, device="meta"), RuntimeError, "grads is on meta, expected cpu"),
    ],
)  # fmt: skip
def test_diag_fisher_update_rejects_bad_input(state, grads, error, message):
    with pytest.raises(error, match=message):
        ops.diag_fisher_update_(state, grads, old_weight=0.5, new_weight=0.5)


def test_diag_fisher_update_rejects_aliasing_and_bad_weights():
    buf = torch.ones(8)
    with pytest.raises(ValueError, match=r"(state|grads)\[0\] and (state|grads)\[0\] share memory"):
        ops.diag_fisher_update_(buf[:4], buf[2:6], old_weight=0.5, new_weight=0.5)
    with pytest.raises(ValueError, match="Invalid new_weight value"):
        ops.diag_fisher_update_(torch.zeros(2), torch.ones(2), old_weight=0.5, new_weight=float("inf"))  # fmt: skip


def _all_patterns(dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_loads_are_exact_for_every_bit_pattern(dtype):
    """to_float over all 65536 patterns: a zero step keeps θ, and m = g with β1 = 0."""
    patterns = _all_patterns(dtype)
    n = patterns.numel()
    params, grads = patterns.clone(), torch.zeros(n, dtype=dtype)
    m, v = torch.zeros(n), torch.zeros(n)
    ops.diag_step_([params], [grads], [m], [v], lr=0.0, eps=1.0, step=1)
    nan = torch.isnan(patterns)
    assert torch.equal(params.view(torch.int16)[~nan], patterns.view(torch.int16)[~nan])
    assert torch.isnan(params[nan]).all()
    finite = torch.isfinite(patterns)
    m = torch.zeros(n)
    ops.diag_step_([torch.zeros(n, dtype=dtype)], [patterns], [m], [torch.zeros(n)],
                   lr=0.0, beta1=0.0, eps=1.0, step=1)  # fmt: skip
    assert torch.equal(m[finite], patterns.float()[finite])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lr", [0.3, 1e-5, 1000.0])
def test_low_precision_stores_round_like_torch(dtype, lr, generator):
    """from_float: the low-precision step equals torch's rounding of the float32 step."""
    patterns = _all_patterns(dtype)
    params = patterns[torch.isfinite(patterns)]
    n = params.numel()
    grads = torch.randn(n, generator=generator).to(dtype)
    kw = {"lr": lr, "beta1": 0.0, "beta2": 0.0, "bias_correction": False, "step": 1}
    low = [params.clone()], [grads], [torch.zeros(n)], [torch.zeros(n)]
    high = [params.float()], [grads.float()], [torch.zeros(n)], [torch.zeros(n)]
    ops.diag_step_(*low, **kw)
    ops.diag_step_(*high, **kw)
    want = high[0][0].to(dtype)
    assert torch.equal(low[0][0].view(torch.int16), want.view(torch.int16))
