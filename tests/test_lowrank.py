"""Low-rank window kernels, the LowRank estimator and LowRankFisher against float64 references."""

from __future__ import annotations

import copy

import pytest
import torch

import fisherprec as fp
from fisherprec import ops
from tests import reference

WINDOW_DTYPES = [torch.float32, torch.float64, torch.bfloat16]
SIZES = [0, 1, 7, 31, 1000, 65537, 70_003]


def _split(flat: torch.Tensor, sizes=SIZES) -> list[torch.Tensor]:
    """Consecutive pieces of `flat`, as separate contiguous tensors (a param group)."""
    return [piece.clone() for piece in torch.split(flat, sizes)]


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))


# ------------------------------------------------------------------ ops
@pytest.mark.parametrize("wdtype", WINDOW_DTYPES)
@pytest.mark.parametrize("xdtype", ops.FLOATING_DTYPES)
def test_dots_match_float64_reference(wdtype, xdtype, generator):
    p = sum(SIZES)
    window = torch.randn(5, p, generator=generator).to(wdtype)
    x = torch.randn(p, generator=generator).to(xdtype)
    for columns in (0, 1, 5):
        got = ops.lowrank_dots(window, columns, _split(x))
        want = window[:columns].double() @ x.double()
        assert got.dtype == torch.float64 and got.shape == (columns,)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)


def test_dots_do_not_depend_on_thread_count(generator):
    window = torch.randn(3, 300_001, generator=generator)
    x = [torch.randn(300_001, generator=generator)]
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(ops.lowrank_dots(window, 3, x))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


@pytest.mark.parametrize("wdtype", WINDOW_DTYPES)
def test_insert_stores_rounded_row_and_returns_gram_row(wdtype, generator):
    p = 70_001
    window = torch.randn(4, p, generator=generator).to(wdtype)
    x = torch.randn(p, generator=generator, dtype=torch.float64)
    got = ops.lowrank_insert(window, 2, 3, _split(x, [1, 70_000]))
    assert torch.equal(window[2], x.to(wdtype))
    stored = window[:3].double()
    torch.testing.assert_close(got, stored @ stored[2], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("gdtype", ops.FLOATING_DTYPES)
@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_v", [True, False])
def test_stats_match_adam_moments_and_float64_dots(gdtype, wdtype, with_v, generator):
    sizes = [3, 65_537, 1]
    p = sum(sizes)
    grads = _split(torch.randn(p, generator=generator).to(gdtype), sizes)
    m = _split(torch.randn(p, generator=generator), sizes)
    v = _split(torch.rand(p, generator=generator), sizes) if with_v else []
    m0 = torch.cat(m).double()
    v0 = torch.cat(v).double() if with_v else None
    window = torch.randn(6, p, generator=generator).to(wdtype)
    b1, b2, c2, eps = 0.9, 0.99, 0.3, 1e-3
    out = ops.lowrank_stats(
        grads, m, v, window, 4, 3, beta1=b1, beta2=b2, bias_correction2=c2, eps=eps, maximize=True
    )
    g = -torch.cat(grads).double()
    m_want = b1 * m0 + (1 - b1) * g
    torch.testing.assert_close(torch.cat(m).double(), m_want, rtol=1e-5, atol=1e-6)
    assert torch.equal(window[3], g.to(wdtype))
    stored = window[:4].double()
    m_new = torch.cat(m).double()
    torch.testing.assert_close(out[:4], stored @ stored[3], rtol=1e-12, atol=1e-8)
    torch.testing.assert_close(out[4:8], stored @ m_new, rtol=1e-12, atol=1e-8)
    torch.testing.assert_close(out[8], m_new.square().sum(), rtol=1e-12, atol=0)
    if with_v:
        v_want = b2 * v0 + (1 - b2) * g * g
        torch.testing.assert_close(torch.cat(v).double(), v_want, rtol=1e-5, atol=1e-7)
        adam = m_new / (torch.cat(v).double().sqrt() / c2**0.5 + eps)
        torch.testing.assert_close(out[9], adam.square().sum(), rtol=1e-5, atol=0)
    else:
        assert out[9] == 0


def test_stats_without_insert_uses_unrounded_gradient(generator):
    p = 1001
    grads = [torch.randn(p, generator=generator)]
    window = torch.randn(3, p, generator=generator).to(torch.bfloat16)
    before = window.clone()
    out = ops.lowrank_stats(grads, [torch.zeros(p)], [], window, 2, None, beta1=0.0, beta2=0.5)
    assert torch.equal(window, before)
    torch.testing.assert_close(
        out[:2], window[:2].double() @ grads[0].double(), rtol=1e-12, atol=1e-9
    )


@pytest.mark.parametrize("ydtype", ops.FLOATING_DTYPES)
@pytest.mark.parametrize("xdtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("wdtype", WINDOW_DTYPES)
def test_combine_matches_float64_reference(ydtype, xdtype, wdtype, generator):
    p = sum(SIZES)
    window = torch.randn(7, p, generator=generator).to(wdtype)
    y0 = torch.randn(p, generator=generator).to(ydtype)
    x = torch.randn(p, generator=generator).to(xdtype)
    for columns, decay in ((0, 0.9), (5, 1.0), (7, 0.0)):
        coef = torch.randn(columns + 1, generator=generator, dtype=torch.float64)
        y = _split(y0.clone() if decay else torch.full_like(y0, float("nan")))
        ops.lowrank_combine(y, _split(x), window, columns, coef, decay)
        base = decay * y0.double() if decay else 0.0
        want = base + coef[0] * x.double() + coef[1:] @ window[:columns].double()
        got = torch.cat(y)
        assert got.dtype == ydtype
        tol = {torch.float32: 1e-6, torch.float64: 1e-12}.get(ydtype, 1e-2)
        assert _rel(got, want) <= tol


def test_lowrank_ops_opcheck(generator):
    p = 129
    window = torch.randn(3, p, generator=generator)
    xs = [torch.randn(100, generator=generator), torch.randn(29, generator=generator)]
    out = torch.empty(3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fisherprec.lowrank_dots.default, (window, 3, 1, xs, out))
    m = [torch.zeros(100), torch.zeros(29)]
    v = [torch.zeros(100), torch.zeros(29)]
    stats = torch.empty(8, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.fisherprec.lowrank_stats.default,
        (xs, m, v, window, 3, 0, 0.9, 0.99, 1.0, 1e-8, False, stats),
    )
    coef = torch.randn(4, dtype=torch.float64, generator=generator)
    ys = [torch.randn(100, generator=generator), torch.randn(29, generator=generator)]
    torch.library.opcheck(
        torch.ops.fisherprec.lowrank_combine.default, (ys, m, window, 3, coef, 0.5)
    )


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda w, x: ops.lowrank_dots(w.half(), 2, x),
            TypeError,
            "window has dtype torch.float16",
        ),
        (lambda w, x: ops.lowrank_dots(w, 5, x), ValueError, r"columns=5 is outside \[0, 4\]"),
        (
            lambda w, x: ops.lowrank_dots(w, 2, x[:1]),
            ValueError,
            "hold 3 elements in all but the window has 5",
        ),
        (lambda w, x: ops.lowrank_dots(w[0], 1, x), ValueError, "window must have 2 dimensions"),
        (lambda w, x: ops.lowrank_dots(torch.zeros(300, 5), 1, x), ValueError, "at most 256"),
        (
            lambda w, x: ops.lowrank_insert(w, 2, 2, x),
            ValueError,
            r"slot=2 is outside \[0, columns=2\)",
        ),
        (
            lambda w, x: ops.lowrank_insert(w, 0, 1, [w[1]]),
            ValueError,
            "hold 5 elements|share memory",
        ),
        (
            lambda w, x: ops.lowrank_combine(
                x, [t.int() for t in x], w, 1, torch.zeros(2, dtype=torch.float64)
            ),
            TypeError,
            r"x\[0\] has dtype torch.int32",
        ),
        (
            lambda w, x: ops.lowrank_combine(x, x, w, 1, torch.zeros(3, dtype=torch.float64)),
            ValueError,
            r"coef has shape \(3,\)",
        ),
        (
            lambda w, x: ops.lowrank_combine(x, x, w, 1, torch.zeros(2)),
            TypeError,
            "coef has dtype torch.float32",
        ),
        (
            lambda w, x: ops.lowrank_stats(
                x, [t.double() for t in x], [], w, 1, 0, beta1=0.9, beta2=0.9
            ),
            TypeError,
            r"exp_avg\[0\] has dtype torch.float64",
        ),
        (
            lambda w, x: ops.lowrank_stats(x, x, [], w, 1, 0, beta1=1.0, beta2=0.9),
            ValueError,
            "Invalid beta1",
        ),
        (
            lambda w, x: ops.lowrank_stats(
                x, [t.clone() for t in x], [], w, 1, 0, beta1=0.5, beta2=0.9, eps=-1.0
            ),
            ValueError,
            "Invalid eps",
        ),
    ],
)
def test_lowrank_ops_reject_bad_input(call, error, message):
    window = torch.zeros(4, 5)
    xs = [torch.ones(3), torch.ones(2)]
    with pytest.raises(error, match=message):
        call(window, xs)


def test_stats_rejects_aliasing():
    window = torch.zeros(2, 4)
    g = [torch.ones(4)]
    with pytest.raises(ValueError, match="share memory"):
        ops.lowrank_stats(g, g, [], window, 1, 0, beta1=0.5, beta2=0.9)


# ------------------------------------------------------------- estimator
@pytest.mark.parametrize(("p", "damping"), [(1, 1e-3), (129, 1e-3), (129, 0.1), (1000, 1e-3)])
def test_inv_root_mv_matches_dense_eigendecomposition(p, damping, generator):
    rank = 16
    est = fp.fisher.LowRank(p, rank=rank, damping=damping)
    grads = [torch.randn(p, generator=generator) * (1 + i % 3) for i in range(rank)]
    for g in grads:
        est.update(g)
    G = torch.stack(grads).double()
    want = reference.inv_root(G.T @ G / rank, damping)  # (1/r) G Gᵀ + λI, P×P
    v = torch.randn(2, p, generator=generator)
    assert _rel(est.inv_root_mv(v), v.double() @ want) <= 1e-5
    assert _rel(est.inv_root_mv(v.double()), v.double() @ want) <= 1e-9


def test_window_wraps_around(generator):
    p, rank = 50, 4
    est = fp.fisher.LowRank(p, rank=rank, damping=1e-2)
    updates = [torch.randn(p, generator=generator) for _ in range(11)]
    for g in updates:
        est.update(g)
    assert est.columns == rank and est.num_observations == 11
    torch.testing.assert_close(est.to_dense(), reference.window_fisher(updates, rank))
    v = torch.randn(p, generator=generator, dtype=torch.float64)
    want = v @ reference.inv_root(reference.window_fisher(updates, rank), 1e-2, 0.25)
    assert _rel(est.inv_root_mv(v, power=0.25), want) <= 1e-9


def test_per_sample_mode_keeps_the_last_rank_rows(generator):
    p, rank = 40, 6
    est = fp.fisher.LowRank(p, rank=rank, damping=1e-3)
    batches = [torch.randn(4, p, generator=generator), torch.randn(9, p, generator=generator)]
    for b in batches:
        est.update(b)
    want = reference.window_fisher(batches, rank)  # the last 6 of 13 per-sample gradients
    torch.testing.assert_close(est.to_dense(), want)
    v = torch.randn(p, generator=generator, dtype=torch.float64)
    assert _rel(est.mv(v), want @ v) <= 1e-12


def test_decay_weights_older_columns(generator):
    p, rank = 30, 5
    est = fp.fisher.LowRank(p, rank=rank, damping=1e-2, decay=0.7)
    updates = [torch.randn(p, generator=generator) for _ in range(8)]
    for g in updates:
        est.update(g)
    want = reference.window_fisher(updates, rank, decay=0.7)
    torch.testing.assert_close(est.to_dense(), want)
    v = torch.randn(p, generator=generator, dtype=torch.float64)
    assert _rel(est.inv_root_mv(v), v @ reference.inv_root(want, 1e-2)) <= 1e-9


def test_bfloat16_buffer_is_exact_for_the_rounded_gradients(generator):
    p, rank = 300, 8
    est = fp.fisher.LowRank(p, rank=rank, damping=1e-3, buffer_dtype=torch.bfloat16)
    updates = [torch.randn(p, generator=generator) for _ in range(rank)]
    for g in updates:
        est.update(g)
    rounded = [g.bfloat16() for g in updates]
    want = reference.window_fisher(rounded, rank)
    v = torch.randn(p, generator=generator)
    assert _rel(est.inv_root_mv(v), v.double() @ reference.inv_root(want, 1e-3)) <= 1e-5
    assert est.memory_bytes() == rank * p * 2 + rank * rank * 8 + rank * 8


@pytest.mark.parametrize("kind", ["repeated", "zero", "collinear"])
def test_rank_deficient_windows_stay_finite(kind, generator):
    p = 64
    est = fp.fisher.LowRank(p, rank=8, damping=1e-8)
    g = torch.randn(p, generator=generator)
    for i in range(8):
        est.update({"repeated": g, "zero": torch.zeros(p), "collinear": g * (i - 3.5)}[kind])
    v = torch.randn(p, generator=generator, dtype=torch.float64)
    out = est.inv_root_mv(v)
    assert torch.isfinite(out).all()
    want = v @ reference.inv_root(est.to_dense(), 1e-8)
    assert _rel(out, want) <= 1e-6


def test_estimator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Invalid rank"):
        fp.fisher.LowRank(5, rank=0)
    with pytest.raises(ValueError, match="Invalid rank"):
        fp.fisher.LowRank(5, rank=257)
    with pytest.raises(ValueError, match="Invalid decay"):
        fp.fisher.LowRank(5, decay=0.0)
    with pytest.raises(ValueError, match="Invalid buffer_dtype"):
        fp.fisher.LowRank(5, buffer_dtype=torch.float16)


# ------------------------------------------------------------- optimizer
def _flat_problem(generator, sizes=(7, 1, 30)):
    params = [torch.nn.Parameter(torch.randn(n, generator=generator)) for n in sizes]
    grads = [torch.randn(sum(sizes), generator=generator) * (1 + 0.1 * t) for t in range(9)]
    return params, grads


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"graft": None, "lr": 1e-2},
        {"update_every": 3, "decay": 0.8, "rank": 4},
        {"rank": 3, "weight_decay": 0.1, "maximize": True},
        {"betas": (0.0, 0.9), "damping": 1e-3},
        {"rcond": 1e-6},
        {"rcond": 0.05, "graft": None, "lr": 1e-2},
    ],
)
def test_optimizer_matches_dense_float64_reference(kwargs, generator):
    params, grads = _flat_problem(generator)
    theta0 = torch.cat([p.detach() for p in params]).double()
    args = {"lr": 0.1, "rank": 5, "betas": (0.9, 0.99), "damping": 1e-6} | kwargs
    opt = fp.optim.LowRankFisher(params, **args)
    for g in grads:
        for p, piece in zip(params, torch.split(g, [p.numel() for p in params]), strict=True):
            p.grad = piece.clone()
        opt.step()
    want = reference.lowrank_fisher_steps(
        theta0,
        grads,
        lr=args["lr"],
        rank=args["rank"],
        betas=args["betas"],
        damping=args["damping"],
        update_every=args.get("update_every", 1),
        graft=args.get("graft", "diag") == "diag",
        weight_decay=opt.defaults["weight_decay"],
        decay=args.get("decay", 1.0),
        rcond=opt.defaults["rcond"],
        maximize=args.get("maximize", False),
    )
    got = torch.cat([p.detach() for p in params])
    assert _rel(got - theta0, want - theta0) <= 1e-4


def _mlp_loss(opt_factory, steps=150):
    torch.manual_seed(0)
    x = torch.randn(128, 8) * torch.logspace(0, 1, 8)
    y = torch.sin(x[:, :1]) + 0.5 * x[:, 1:2]
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = opt_factory(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize("buffer_dtype", [torch.float32, torch.bfloat16])
def test_trains_an_mlp_to_a_loss_threshold(buffer_dtype):
    start = _mlp_loss(lambda p: torch.optim.SGD(p, lr=0.0), steps=1)
    loss = _mlp_loss(
        lambda p: fp.optim.LowRankFisher(p, lr=1e-2, rank=16, buffer_dtype=buffer_dtype)
    )
    assert loss < 0.05 * start and loss < 0.1, (start, loss)


@pytest.mark.parametrize("buffer_dtype", [torch.float32, torch.bfloat16])
def test_trains_an_mlp_without_grafting(buffer_dtype):
    # Ungrafted steps are at most ~√r·lr long, so this needs more steps than
    # the grafted run; with rcond = 1e-6 the loss ended above its start (3.8-6.2).
    start = _mlp_loss(lambda p: torch.optim.SGD(p, lr=0.0), steps=1)
    loss = _mlp_loss(
        lambda p: fp.optim.LowRankFisher(
            p, lr=1e-2, rank=16, graft=None, buffer_dtype=buffer_dtype
        ),
        steps=400,
    )
    assert loss < 0.05 * start and loss < 0.1, (start, loss)


def test_state_dict_round_trip_resumes_bit_for_bit(generator):
    def make():
        model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
        return model

    torch.manual_seed(3)
    model = make()
    opt = fp.optim.LowRankFisher(model.parameters(), lr=1e-2, rank=4, buffer_dtype=torch.bfloat16)
    x = torch.randn(16, 5, generator=generator)

    def train(m, o, steps):
        for _ in range(steps):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()

    train(model, opt, 6)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    train(model, opt, 5)

    resumed = make()
    resumed.load_state_dict(saved_model)
    opt2 = fp.optim.LowRankFisher(
        resumed.parameters(), lr=1e-2, rank=4, buffer_dtype=torch.bfloat16
    )
    opt2.load_state_dict(saved_opt)
    first = next(iter(opt2.state.values()))
    assert first["window"].dtype == torch.bfloat16 and first["gram"].dtype == torch.float64
    train(resumed, opt2, 5)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_memory_bytes_reports_window_moments_and_gram():
    params = [torch.nn.Parameter(torch.ones(10)), torch.nn.Parameter(torch.ones(3, 2))]
    for p in params:
        p.grad = torch.ones_like(p)
    opt = fp.optim.LowRankFisher(params, rank=4)
    opt.step()
    p_total = 16
    step = 4  # the float32 step count, as torch.optim keeps it
    assert opt.memory_bytes() == 4 * p_total * 4 + 2 * p_total * 4 + (2 * 16 + 2 * 4) * 8 + step
    opt_bf16 = fp.optim.LowRankFisher(params, rank=4, graft=None, buffer_dtype=torch.bfloat16)
    opt_bf16.step()
    assert opt_bf16.memory_bytes() == 4 * p_total * 2 + p_total * 4 + (2 * 16 + 2 * 4) * 8 + step


def test_missing_gradients_count_as_zero_and_skip_policy_leaves_state(generator):
    a = torch.nn.Parameter(torch.randn(4, generator=generator))
    b = torch.nn.Parameter(torch.randn(3, generator=generator))
    a.grad = torch.randn(4, generator=generator)
    opt = fp.optim.LowRankFisher([a, b], lr=0.1, rank=2, nonfinite="skip")
    opt.step()
    window = opt.state[a]["window"]
    assert torch.equal(window[0, 4:], torch.zeros(3)) and torch.equal(window[0, :4], a.grad)
    before = window.clone()
    a.grad = torch.full((4,), float("nan"))
    opt.step()
    assert torch.equal(opt.state[a]["window"], before) and opt.skipped_steps == 1


def test_rank_deficient_gradients_keep_the_optimizer_finite():
    p = torch.nn.Parameter(torch.ones(20))
    opt = fp.optim.LowRankFisher([p], lr=0.1, rank=4)
    for i in range(6):
        p.grad = torch.zeros(20) if i % 2 else torch.linspace(-1, 1, 20)
        opt.step()
        assert torch.isfinite(p).all()


def test_mixed_dtypes_in_one_group_are_a_clear_error():
    a = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    a.grad, b.grad = torch.ones(2), torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="separate param groups"):
        fp.optim.LowRankFisher([a, b]).step()


def test_registered_for_compare_and_bench():
    entry = fp.optim.registry.get("lowrank")
    model = torch.nn.Linear(2, 1)
    assert isinstance(
        fp.optim.registry.build("lowrank", model.parameters()), fp.optim.LowRankFisher
    )
    assert entry.fisher == "lowrank"


def test_plain_torch_benchmark_baseline_computes_the_same_step(generator):
    from fisherprec.benchmarks.lowrank import HYPER, PlainTorchLowRank

    p, rank = 300, 4
    param = torch.nn.Parameter(torch.randn(p, generator=generator))
    baseline = param.detach().clone()
    opt = fp.optim.LowRankFisher([param], rank=rank, **HYPER)
    plain = PlainTorchLowRank(baseline, rank, torch.float32)
    start = baseline.clone()
    for _ in range(6):
        g = torch.randn(p, generator=generator)
        param.grad = g.clone()
        opt.step()
        plain.step(g)
    assert _rel(baseline - start, (param.detach() - start).double()) <= 1e-4


def test_benchmark_cases_are_registered_and_validate_labels():
    from fisherprec import benchmarks

    assert "lowrank" in benchmarks.variants()
    with pytest.raises(ValueError, match="unknown lowrank workload 'huge'"):
        benchmarks.collect(["lowrank"], ["huge"], torch.device("cpu"))


def test_gpu_check_runs_its_comparison_and_report_on_any_device():
    from fisherprec.benchmarks.lowrank import gpu_check_lowrank

    device = "cuda" if fp.cuda_available() else "cpu"  # on the CPU it checks CPU against CPU
    result = gpu_check_lowrank(device, workloads=["small"])
    assert result["max_rel_err_float32"] < 1e-5 and result["small/speedup_vs_plain_torch"] > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_low_precision_and_double_parameters_follow_the_float32_run(dtype, generator):
    theta = torch.randn(50, generator=generator)
    grads = [torch.randn(50, generator=generator) for _ in range(4)]
    results = {}
    for dt in (torch.float32, dtype):
        p = torch.nn.Parameter(theta.to(dt, copy=True))
        opt = fp.optim.LowRankFisher([p], lr=0.1, rank=3)
        for g in grads:
            p.grad = g.to(dt)
            opt.step()
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        results[dt] = p.detach().double()
    tol = {torch.bfloat16: 5e-2, torch.float16: 1e-2, torch.float64: 1e-5}[dtype]
    err = _rel(results[dtype] - theta.double(), results[torch.float32] - theta.double())
    assert err <= tol, err
