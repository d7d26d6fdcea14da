"""The native scoring step of sequential A-optimal design against its float64 reference."""

import pytest
import torch

import fisherprec as fp
from fisherprec import ops
from tests import reference


def _inputs(n, p, dtype, generator, *, beta=0.3, masked=0.25):
    pool = torch.randn(n, p, generator=generator).to(dtype)
    b = torch.randn(p, generator=generator, dtype=torch.float64)
    c = torch.randn(p, generator=generator, dtype=torch.float64)
    # Consistent with a PSD B: s' = s − β u² stays ≥ 1, so 1 + η s' is well conditioned.
    u = pool.to(torch.float64) @ b
    s = torch.rand(n, generator=generator, dtype=torch.float64) * 5 + 1 + beta * u * u
    t = torch.rand(n, generator=generator, dtype=torch.float64) * 5 + 10
    mask = torch.rand(n, generator=generator) < masked
    return pool, b, c, beta, 0.7, 1.0, s, t, mask


@pytest.mark.parametrize("dtype", ops.FLOATING_DTYPES)
@pytest.mark.parametrize(("n", "p"), [(1, 1), (7, 3), (33, 17), (2049, 64), (4099, 65), (300, 1)])
def test_score_step_matches_float64_reference(n, p, dtype, generator):
    pool, b, c, beta, gamma, eta, s, t, mask = _inputs(n, p, dtype, generator)
    want_s, want_t, want_score, want_index = reference.design_score_step(
        pool, b, c, beta, gamma, eta, s, t, mask
    )
    out = torch.empty(2, dtype=torch.float64)
    ops.design_score_step(pool, b, c, beta, gamma, eta, s, t, mask, out)
    torch.testing.assert_close(s, want_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t, want_t, rtol=1e-12, atol=1e-12)
    assert out[0].item() == pytest.approx(want_score, rel=1e-12)
    assert int(out[1]) == want_index


@pytest.mark.parametrize("eta", [0.0, 1.0, 2.5])
def test_score_step_eta_and_no_update(eta, generator):
    pool, b, c, _, gamma, _, s, t, mask = _inputs(513, 9, torch.float32, generator)
    s0, t0 = s.clone(), t.clone()
    out = torch.empty(2, dtype=torch.float64)
    ops.design_score_step(pool, b, c, 0.0, gamma, eta, s, t, mask, out)  # beta = 0: scores only
    assert torch.equal(s, s0) and torch.equal(t, t0)
    score = (t0 / (1 + eta * s0)).masked_fill(mask, -torch.inf)
    assert out[0].item() == pytest.approx(score.max().item(), rel=1e-15)
    assert int(out[1]) == int(score.argmax())


def test_score_step_ties_masks_and_empty():
    pool = torch.ones(5000, 4)
    z = torch.zeros(4, dtype=torch.float64)
    s = torch.zeros(5000, dtype=torch.float64)
    t = torch.ones(5000, dtype=torch.float64)
    mask = torch.zeros(5000, dtype=torch.bool)
    mask[:3] = True
    out = torch.empty(2, dtype=torch.float64)
    ops.design_score_step(pool, z, z, 0.0, 0.0, 1.0, s, t, mask, out)
    assert out.tolist() == [1.0, 3.0]  # all tied: the lowest unmasked index, over chunks
    mask[:] = True
    ops.design_score_step(pool, z, z, 0.0, 0.0, 1.0, s, t, mask, out)
    assert out.tolist() == [-float("inf"), -1.0]
    empty = torch.empty(0, 4)
    e = torch.empty(0, dtype=torch.float64)
    ops.design_score_step(empty, z, z, 0.5, 0.0, 1.0, e, e.clone(), e.bool(), out)
    assert out.tolist() == [-float("inf"), -1.0]


def test_score_step_does_not_depend_on_thread_count(generator):
    inputs = _inputs(20_001, 37, torch.float32, generator)
    threads = torch.get_num_threads()
    results = []
    try:
        for k in (1, 2, 3):
            torch.set_num_threads(k)
            pool, b, c, beta, gamma, eta, s, t, mask = (
                x.clone() if isinstance(x, torch.Tensor) else x for x in inputs
            )
            out = torch.empty(2, dtype=torch.float64)
            ops.design_score_step(pool, b, c, beta, gamma, eta, s, t, mask, out)
            results.append((s, t, out))
    finally:
        torch.set_num_threads(threads)
    for s, t, out in results[1:]:
        assert torch.equal(s, results[0][0]) and torch.equal(t, results[0][1])
        assert torch.equal(out, results[0][2])


def _bad(**changes):
    pool = torch.ones(6, 3)
    args = {
        "pool": pool,
        "b": torch.zeros(3, dtype=torch.float64),
        "c": torch.zeros(3, dtype=torch.float64),
        "beta": 0.1,
        "gamma": 0.0,
        "eta": 1.0,
        "s": torch.zeros(6, dtype=torch.float64),
        "t": torch.zeros(6, dtype=torch.float64),
        "mask": torch.zeros(6, dtype=torch.bool),
        "out": torch.empty(2, dtype=torch.float64),
    }
    args.update(changes)
    return args


shared = torch.zeros(8, dtype=torch.float64)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"pool": torch.ones(6)}, ValueError, "pool must have 2 dimensions"),
        ({"pool": torch.ones(6, 3, dtype=torch.int32)}, TypeError, "pool has dtype torch.int32"),
        ({"pool": torch.ones(3, 6).T}, ValueError, "pool must be contiguous"),
        ({"b": torch.zeros(3)}, TypeError, "b has dtype torch.float32"),
        ({"c": torch.zeros(4, dtype=torch.float64)}, ValueError, r"c has shape \(4,\)"),
        ({"s": torch.zeros(5, dtype=torch.float64)}, ValueError, r"s has shape \(5,\)"),
        ({"mask": torch.zeros(6, dtype=torch.uint8)}, TypeError, "mask has dtype torch.uint8"),
        ({"out": torch.empty(3, dtype=torch.float64)}, ValueError, r"out has shape \(3,\)"),
        ({"beta": float("nan")}, ValueError, "Invalid beta value"),
        ({"gamma": "x"}, TypeError, "gamma must be a real number"),
        ({"eta": float("inf")}, ValueError, "Invalid eta value"),
        ({"s": shared[:6], "out": shared[5:7]}, ValueError, "share memory"),
        ({"pool": torch.ones(6, 3, device="meta")}, RuntimeError, "is on cpu, expected meta"),
    ],
)
def test_score_step_rejects_bad_input(changes, error, message):
    with pytest.raises(error, match=message):
        ops.design_score_step(**_bad(**changes))


@pytest.mark.skipif(not fp.cuda_available(), reason="needs a CUDA device and the CUDA kernels")
@pytest.mark.parametrize("dtype", ops.FLOATING_DTYPES)
def test_score_step_cuda_matches_cpu(dtype, generator):
    for n, p in [(1, 1), (33, 17), (70_001, 64), (5000, 65)]:
        args = _inputs(n, p, dtype, generator)
        cpu = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        gpu = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
        out_cpu = torch.empty(2, dtype=torch.float64)
        out_gpu = torch.empty(2, dtype=torch.float64, device="cuda")
        ops.design_score_step(*cpu, out_cpu)
        ops.design_score_step(*gpu, out_gpu)
        torch.testing.assert_close(gpu[6].cpu(), cpu[6], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gpu[7].cpu(), cpu[7], rtol=1e-12, atol=1e-12)
        assert int(out_gpu[1]) == int(out_cpu[1])
        assert out_gpu[0].item() == pytest.approx(out_cpu[0].item(), rel=1e-12)


@pytest.mark.skipif(not fp.cuda_available(), reason="needs a CUDA device and the CUDA kernels")
def test_greedy_on_cuda_matches_cpu(generator):
    pool = torch.nn.functional.normalize(torch.randn(3000, 12, generator=generator), dim=1)
    from fisherprec import design

    cpu = design.greedy(pool, 30)
    gpu = design.greedy(pool.cuda(), 30)
    assert torch.equal(cpu.indices, gpu.indices)
    torch.testing.assert_close(cpu.errors, gpu.errors)


def test_benchmark_torch_baseline_computes_the_same_step(generator):
    from fisherprec.benchmarks.design import torch_score_step

    args = _inputs(3001, 64, torch.float64, generator)
    native = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    baseline = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    out_native, out_torch = torch.empty(2, dtype=torch.float64), torch.empty(2, dtype=torch.float64)
    ops.design_score_step(*native, out_native)
    torch_score_step(*baseline, out_torch)
    live = ~args[8]  # the baseline also updates chosen rows, whose s, t are never read
    torch.testing.assert_close(native[6][live], baseline[6][live], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(native[7][live], baseline[7][live], rtol=1e-12, atol=1e-12)
    assert int(out_native[1]) == int(out_torch[1])
