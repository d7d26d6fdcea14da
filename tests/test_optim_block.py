"""BlockFisher: whole steps against a float64 reference, its reductions to
Adam, fallback and failure counting, state_dict, memory, validation, and a toy
problem where block preconditioning pays."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import fisherprec as fp
from fisherprec import ops
from fisherprec.optim import BlockFisher, registry
from tests import reference

# Sizes with tails and blocks larger than a tensor (block 8: 35 = 4·8 + 3; 5 < 8).
SHAPES = [(5, 7), (5,), (16,), (2, 2, 3)]


def _grads(shapes, steps, generator, *, scale=1.0, correlated=True):
    """Per step, one gradient per shape; correlated coordinates so F_b is far from diagonal."""
    out = []
    for _ in range(steps):
        step = []
        for shape in shapes:
            g = torch.randn(shape, generator=generator) * scale
            if correlated:
                g = g + 0.5 * torch.randn((), generator=generator)  # shared component
            step.append(g)
        out.append(step)
    return out


def _run(opt_factory, params0, grads):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = opt_factory(params)
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params], opt


def _assert_steps_close(got, want, params0, rtol):
    """Compare displacements θ − θ0, relative to the largest one."""
    for g, w, p0 in zip(got, want, params0, strict=True):
        moved = (w - p0.double()).abs().max()
        err = (g.double() - w).abs().max() / moved
        assert err <= rtol, f"relative error {err:.3g} of the displacement (> {rtol:.1g})"


CONFIGS = [
    {"graft": "diag", "update_every": 3, "power": 0.5},
    {"graft": None, "update_every": 1, "power": 0.5},
    {"graft": None, "update_every": 2, "power": 0.25, "weight_decay": 0.1},
    {"graft": "diag", "update_every": 1, "power": 0.5, "maximize": True, "weight_decay": 0.5},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_steps_match_float64_reference(config, generator):
    hyper = {"lr": 0.01, "block_size": 8, "betas": (0.9, 0.99), "damping": 1e-2} | config
    params0 = [torch.randn(s, generator=generator) for s in SHAPES]
    grads = _grads(SHAPES, 12, generator)
    got, opt = _run(lambda ps: BlockFisher(ps, **hyper), params0, grads)
    want = reference.block_fisher_steps(params0, grads, **hyper)
    _assert_steps_close(got, want, params0, 2e-4)
    assert opt.root_failures == 0
    for p in opt.state.values():
        assert (p["root_status"] == ops.ROOT_OK).all()


def test_block_size_one_is_adam_with_eps_inside_the_root(generator):
    """b = 1, graft=None, roots every step: u = m̂ / sqrt(v̂ + λ) exactly."""
    damping = 1e-4
    shapes = [(7,), (3, 4)]
    params0 = [torch.randn(s, generator=generator) for s in shapes]
    grads = _grads(shapes, 10, generator, correlated=False)
    hyper = {"lr": 0.01, "betas": (0.9, 0.999), "damping": damping, "weight_decay": 0.1}
    got, _ = _run(
        lambda ps: BlockFisher(ps, block_size=1, update_every=1, graft=None, **hyper),
        params0,
        grads,
    )
    # float64 reference of the Adam rule with ε inside the root
    beta1, beta2 = hyper["betas"]
    for i, p0 in enumerate(params0):
        theta = p0.double().clone()
        m = torch.zeros_like(theta)
        v = torch.zeros_like(theta)
        for t, step in enumerate(grads, start=1):
            g = step[i].double()
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            u = (m / (1 - beta1**t)) / (v / (1 - beta2**t) + damping).sqrt()
            theta = theta * (1 - 0.01 * 0.1) - 0.01 * u
        _assert_steps_close([got[i]], [theta], [p0], 1e-5)
    # and AdamW with ε ≈ sqrt(λ) is close (the two placements differ by O(λ/v̂))
    adam, _ = _run(
        lambda ps: torch.optim.AdamW(ps, eps=math.sqrt(damping), **hyper_adam(hyper)),
        params0,
        grads,
    )
    _assert_steps_close(got, [a.double() for a in adam], params0, 0.05)


def hyper_adam(hyper):
    return {"lr": hyper["lr"], "betas": hyper["betas"], "weight_decay": hyper["weight_decay"]}


@pytest.mark.parametrize(("block_size", "update_every"), [(1, 1), (1, 4), (8, 1000)])
def test_grafted_block_one_and_before_first_root_is_adamw(block_size, update_every, generator):
    """Grafting a 1×1 block to Adam's norm, or taking the diagonal fallback, is AdamW."""
    params0 = [torch.randn(s, generator=generator) for s in SHAPES]
    grads = _grads(SHAPES, 8, generator)
    hyper = {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "eps": 1e-6}
    got, _ = _run(
        lambda ps: BlockFisher(ps, block_size=block_size, update_every=update_every, **hyper),
        params0,
        grads,
    )
    want, _ = _run(lambda ps: torch.optim.AdamW(ps, **hyper), params0, grads)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


def test_failed_roots_fall_back_to_adam_and_are_counted(generator):
    """λ = 0 and gradients on one coordinate per block: F_b = diag(x, 0, 0, 0)
    exactly, so the root is infinite; every refresh fails and p moves as AdamW."""
    p = torch.nn.Parameter(torch.randn(12, generator=generator))
    q = torch.nn.Parameter(torch.randn(12, generator=generator))
    opt = BlockFisher([p, q], lr=0.01, block_size=4, damping=0.0, update_every=2, graft=None)
    twin = torch.nn.Parameter(p.detach().clone())
    adam = torch.optim.AdamW([twin], lr=0.01, eps=1e-8)
    mask = torch.zeros(12)
    mask[::4] = 1.0
    for _ in range(4):
        g = torch.randn(12, generator=generator) * mask
        p.grad, twin.grad = g.clone(), g.clone()
        q.grad = torch.randn(12, generator=generator)
        opt.step()
        adam.step()
    assert int(opt.state[p]["root_failures"]) == 3 * 2  # 3 blocks, refreshed at steps 2 and 4
    assert opt.state[p]["root_status"].tolist() == [ops.ROOT_NONFINITE_OUTPUT] * 3
    assert opt.root_failures == 6 + int(opt.state[q]["root_failures"])
    torch.testing.assert_close(p.detach(), twin.detach(), rtol=1e-6, atol=1e-7)


def test_nonfinite_statistic_falls_back_per_block(generator):
    p = torch.nn.Parameter(torch.randn(8, generator=generator))
    opt = BlockFisher([p], lr=0.01, block_size=4, update_every=1)
    p.grad = torch.randn(8, generator=generator)
    opt.step()
    opt.state[p]["fisher"][1, 0, 0] = float("inf")
    p.grad = torch.randn(8, generator=generator)
    before = p.detach().clone()
    opt.step()
    assert opt.state[p]["root_status"].tolist() == [ops.ROOT_OK, ops.ROOT_NONFINITE_INPUT]
    assert opt.root_failures == 1 and torch.isfinite(p).all() and not torch.equal(p, before)


def test_state_dict_round_trip_resumes_bit_identically(generator):
    shapes = [(9, 5), (3,)]
    params0 = [torch.randn(s, generator=generator) for s in shapes]
    grads = _grads(shapes, 10, generator)
    hyper = {"lr": 0.01, "block_size": 8, "update_every": 3, "weight_decay": 0.01}
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = BlockFisher(params, **hyper)
    for step in grads[:5]:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
    saved_state = copy.deepcopy(opt.state_dict())
    saved_params = [p.detach().clone() for p in params]
    for step in grads[5:]:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
    resumed = [torch.nn.Parameter(p.clone()) for p in saved_params]
    opt2 = BlockFisher(resumed, **hyper)
    opt2.load_state_dict(saved_state)
    for step in grads[5:]:
        for p, g in zip(resumed, step, strict=True):
            p.grad = g.clone()
        opt2.step()
    for a, b in zip(params, resumed, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(opt.state[params[0]]["root"], opt2.state[resumed[0]]["root"])


def test_memory_bytes_counts_statistics_roots_and_moments(generator):
    p = torch.nn.Parameter(torch.randn(37, generator=generator))
    opt = BlockFisher([p], block_size=16)
    assert opt.memory_bytes() == 0
    p.grad = torch.randn(37, generator=generator)
    opt.step()
    blocks = 3  # 16 + 16 + 5
    want = (
        2 * blocks * 16 * 16 * 4 + 2 * 37 * 4 + blocks * 4 + 4 + 8
    )  # F, R, m, v, status, step, count
    assert opt.memory_bytes() == want


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_other_parameter_dtypes(dtype, generator):
    params0 = [torch.randn(s, generator=generator) for s in SHAPES]
    grads = _grads(SHAPES, 4, generator)
    hyper = {"lr": 0.01, "block_size": 8, "update_every": 2, "damping": 1e-2}
    got, _ = _run(
        lambda ps: BlockFisher(ps, **hyper), [p.to(dtype) for p in params0],
        [[g.to(dtype) for g in s] for s in grads],
    )  # fmt: skip
    want = reference.block_fisher_steps(params0, grads, betas=(0.9, 0.999), graft="diag", **hyper)
    tol = 1e-5 if dtype == torch.float64 else 0.05  # 16-bit parameters round every step
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), w, rtol=tol, atol=tol)


def test_params_without_grad_and_empty_params_are_skipped(generator):
    p, q, e = (torch.nn.Parameter(torch.randn(n, generator=generator)) for n in (5, 5, 0))
    opt = BlockFisher([p, q, e], lr=0.1, block_size=4)
    p.grad, e.grad = torch.randn(5, generator=generator), torch.zeros(0)
    q_before = q.detach().clone()
    opt.step()
    assert torch.equal(q, q_before) and q not in opt.state
    assert opt.state[e]["fisher"].shape == (0, 4, 4)


def test_sparse_gradients_are_rejected():
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.ones(4).to_sparse()
    with pytest.raises(RuntimeError, match="BlockFisher does not support sparse gradients"):
        BlockFisher([p]).step()


def test_registered():
    entry = registry.get("block")
    assert entry.fisher == "block"
    opt = registry.build("block", [torch.nn.Parameter(torch.ones(3))])
    assert isinstance(opt, fp.optim.BlockFisher)


# ------------------------------------------------------ where blocks pay off
def _regression(d=32, b=16, n=512, rho=0.99):
    """Least squares whose features are equicorrelated (ρ) within blocks of b:
    condition ~ bρ/(1−ρ) ≈ 1600 inside each block, which a diagonal
    preconditioner cannot undo."""
    g = torch.Generator().manual_seed(0)
    cov = torch.full((b, b), rho) + (1 - rho) * torch.eye(b)
    z = torch.randn(n, d // b, b, generator=g)
    x = (z @ torch.linalg.cholesky(cov).T).reshape(n, d)
    y = x @ torch.randn(d, generator=g) + 0.01 * torch.randn(n, generator=g)
    return x, y


def _steps_to(make, threshold, max_steps=300):
    x, y = _regression()
    g = torch.Generator().manual_seed(1)
    w = torch.nn.Parameter(torch.zeros(x.shape[1]))
    opt = make([w])
    for step in range(1, max_steps + 1):
        idx = torch.randint(0, x.shape[0], (32,), generator=g)
        opt.zero_grad()
        ((x[idx] @ w - y[idx]) ** 2).mean().backward()
        opt.step()
        with torch.no_grad():
            if ((x @ w - y) ** 2).mean() < threshold:
                return step
    return math.inf


def test_block_fisher_beats_adam_on_within_block_correlation():
    threshold = 0.05
    block = _steps_to(
        lambda ps: BlockFisher(ps, lr=0.1, block_size=16, update_every=1, damping=1e-6),
        threshold,
    )
    adam = min(
        _steps_to(lambda ps, lr=lr: torch.optim.Adam(ps, lr=lr), threshold)
        for lr in (0.01, 0.03, 0.1, 0.3)
    )
    assert block < 150 and block < adam, (block, adam)
