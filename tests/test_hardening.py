"""Regression tests for the failures a fuzzing campaign found (one test per
finding; each failed before its fix). The generic cases live in test_fuzz.py."""

from __future__ import annotations

import copy

import pytest
import torch

import fisherprec as fp
from fisherprec import ops
from fisherprec.optim.registry import REGISTRY

# Every registered fisherprec optimizer (the torch baselines are not ours to harden).
FISHER_OPTIMIZERS = sorted(name for name, entry in REGISTRY.items() if entry.fisher is not None)


def _build(name, params, **overrides):
    entry = REGISTRY[name]
    kwargs = {**entry.defaults, **overrides}
    if "update_every" in kwargs:
        kwargs["update_every"] = 1  # roots and windows from the first step
    return entry.factory(params, **kwargs)


def _params(generator, dtype=torch.float32):
    shapes = [(7, 5), (5,), (3, 4)]
    return [torch.nn.Parameter(torch.randn(s, generator=generator, dtype=dtype)) for s in shapes]


def _set_grads(params, generator):
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)


def _snapshot(opt):
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    return params, copy.deepcopy(opt.state_dict())


def _assert_unchanged(opt, snapshot):
    params, state = snapshot
    now = [p.detach() for g in opt.param_groups for p in g["params"]]
    for a, b in zip(params, now, strict=True):
        assert torch.equal(a, b)
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    assert after["state"].keys() == state["state"].keys()
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            got = after["state"][pid][key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(got, value), key
            else:
                assert got == value, key


# 1. out-of-range CSR indices reached the native Bellman kernel (segfault)
def test_bellman_backup_has_no_public_way_to_skip_the_structure_check():
    args = (
        torch.tensor([0, 1, 2]),
        torch.tensor([1, 10**9]),
        torch.ones(2, dtype=torch.float64),
        torch.zeros(2, 1, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        0.9,
    )
    with pytest.raises(ValueError, match="indices must lie in"):
        ops.bellman_backup(*args)
    with pytest.raises(TypeError, match="check_structure"):
        ops.bellman_backup(*args, check_structure=False)


# 2. a written buffer overlapping a read one (exp_avg_sqs) was accepted
def test_block_fisher_step_refuses_a_written_buffer_aliasing_any_other(generator):
    n, b = 10, 4
    p = torch.randn(n, generator=generator)
    g = torch.randn(n, generator=generator)
    m = torch.zeros(n)
    roots = torch.zeros(ops.block_shape(n, b))
    status = torch.zeros(ops.block_shape(n, b)[0], dtype=torch.int32)
    kwargs = dict(
        block_size=b, beta1=0.9, beta2=0.99, step_size=0.1, inv_c2_root=1.0, eps=1e-8, decay=1.0
    )
    # exp_avg_sqs aliasing the root storage (both float32): v is written, R read.
    alias = roots.view(-1)[:n]
    with pytest.raises(ValueError, match="share memory"):
        ops.block_fisher_step_([p], [g], [m], [alias], [roots], [status], **kwargs)
    with pytest.raises(ValueError, match="share memory"):
        ops.block_fisher_step_([p], [g], [m], [m], [roots], [status], **kwargs)
    # Two reads of one buffer are harmless and allowed.
    ops.block_fisher_step_([p], [g], [m], [torch.zeros(n)], [roots], [status], **kwargs)


# 3. nonfinite="raise" stepped earlier groups before raising for a later one
@pytest.mark.parametrize("name", FISHER_OPTIMIZERS)
def test_raise_with_several_groups_modifies_nothing(name, generator):
    first, second = _params(generator)[:2], _params(generator)[2:]
    opt = _build(name, [{"params": first}, {"params": second}], nonfinite="raise")
    _set_grads(first + second, generator)
    opt.step()  # state exists
    _set_grads(first + second, generator)
    second[0].grad[0, 0] = float("nan")
    snapshot = _snapshot(opt)
    with pytest.raises(FloatingPointError, match="nothing was modified"):
        opt.step()
    _assert_unchanged(opt, snapshot)


@pytest.mark.parametrize("name", FISHER_OPTIMIZERS)
def test_skip_is_per_group_and_counts_once(name, generator):
    first, second = _params(generator)[:2], _params(generator)[2:]
    opt = _build(name, [{"params": first}, {"params": second, "nonfinite": "skip"}])
    _set_grads(first + second, generator)
    second[0].grad[0, 0] = float("inf")
    before = [p.detach().clone() for p in first + second]
    opt.step()
    assert opt.skipped_steps == 1
    assert not torch.equal(before[0], first[0].detach())  # the first group stepped
    assert torch.equal(before[-1], second[0].detach())  # the second did not


# 4. a failed load left the optimizer half-loaded; cross-variant loads were accepted
@pytest.mark.parametrize("name", FISHER_OPTIMIZERS)
def test_failed_load_leaves_the_optimizer_as_it_was(name, generator):
    params = _params(generator)
    opt = _build(name, params)
    _set_grads(params, generator)
    opt.step()
    other = [
        torch.nn.Parameter(torch.randn(s, generator=generator)) for s in [(6, 5), (5,), (3, 4)]
    ]
    donor = _build(name, other)
    _set_grads(other, generator)
    donor.step()
    snapshot = _snapshot(opt)
    with pytest.raises(ValueError, match=r"shape|keys"):
        opt.load_state_dict(donor.state_dict())
    _assert_unchanged(opt, snapshot)
    for p in params:  # a zero-gradient step after the failed load moves nothing foreign
        p.grad = torch.zeros_like(p)
    reference = _build(name, [torch.nn.Parameter(p.detach().clone()) for p in params])
    reference.load_state_dict(copy.deepcopy(snapshot[1]))
    for p, q in zip(reference.param_groups[0]["params"], params, strict=True):
        p.grad = torch.zeros_like(q)
    opt.step()
    reference.step()
    for p, q in zip(reference.param_groups[0]["params"], params, strict=True):
        assert torch.equal(p.detach(), q.detach())


@pytest.mark.parametrize(
    ("source", "target"),
    [(a, b) for a in FISHER_OPTIMIZERS for b in FISHER_OPTIMIZERS if a != b],
)
def test_cross_variant_load_is_refused(source, target, generator):
    params = _params(generator)
    donor = _build(source, params)
    _set_grads(params, generator)
    donor.step()
    opt = _build(target, params)
    opt.step()
    snapshot = _snapshot(opt)
    with pytest.raises(ValueError, match=r"another optimizer|shape|Invalid"):
        opt.load_state_dict(donor.state_dict())
    _assert_unchanged(opt, snapshot)


def test_diag_still_loads_a_torch_adamw_checkpoint(generator):
    params = _params(generator)
    adamw = torch.optim.AdamW(params, lr=1e-2)
    _set_grads(params, generator)
    adamw.step()
    opt = fp.optim.DiagFisher(params, lr=1e-2)
    opt.load_state_dict(adamw.state_dict())
    assert torch.equal(opt.state[params[0]]["exp_avg"], adamw.state[params[0]]["exp_avg"])


# 5. invalid per-group settings were accepted (and failed at step time)
BAD_GROUP_SETTINGS = {
    "lr": -1.0,
    "betas": (1.5, 0.9),
    "graft": "bogus",
    "damping": -1.0,
    "decay": 5.0,
    "rcond": -1.0,
    "update_every": 0,
    "rank": 0,
    "block_size": 0,
    "eps": float("nan"),
    "weight_decay": -0.1,
    "power": 0.0,
    "nonfinite": "ignore",
}


def _settings_of(name):
    return _build(name, [torch.nn.Parameter(torch.zeros(1))]).defaults


@pytest.mark.parametrize(
    ("name", "key"),
    [(n, k) for n in FISHER_OPTIMIZERS for k in sorted(BAD_GROUP_SETTINGS) if k in _settings_of(n)],
)
def test_invalid_group_settings_are_refused_when_added(name, key, generator):
    entry = REGISTRY[name]
    opt = _build(name, _params(generator)[:1])
    extra = torch.nn.Parameter(torch.randn(3, generator=generator))
    with pytest.raises(ValueError, match=f"Invalid|{key}"):
        opt.add_param_group({"params": [extra], key: BAD_GROUP_SETTINGS[key]})
    assert len(opt.param_groups) == 1  # the bad group was not kept
    with pytest.raises(ValueError, match=f"Invalid|{key}"):
        entry.factory([extra], **{**entry.defaults, key: BAD_GROUP_SETTINGS[key]})


# 6. LowRankFisher: one NaN gradient made the next `rank` steps raise mid-step
def test_lowrank_propagates_a_nan_gradient_without_raising(generator):
    params = _params(generator)
    opt = fp.optim.LowRankFisher(params, lr=1e-2, rank=4)
    _set_grads(params, generator)
    opt.step()
    _set_grads(params, generator)
    params[0].grad[0, 0] = float("nan")
    opt.step()
    for _ in range(5):
        _set_grads(params, generator)
        opt.step()  # propagates (as torch.optim does), does not raise
    assert torch.isnan(params[0]).any()


# 7. fisher.LowRank: a batch with B > rank, B not a multiple of rank, raised
@pytest.mark.parametrize(("batch", "rank"), [(4, 3), (20, 16), (7, 2), (3, 5)])
def test_lowrank_estimator_keeps_the_last_rank_rows_of_any_batch(batch, rank, generator):
    g = torch.randn(batch, 6, generator=generator, dtype=torch.float64)
    F = fp.fisher.LowRank(6, rank=rank, buffer_dtype=torch.float64).update(g)
    last = g[-rank:]
    torch.testing.assert_close(F.to_dense(), last.T @ last / last.shape[0])
    more = torch.randn(2, 6, generator=generator, dtype=torch.float64)
    F.update(more)  # the ring keeps replacing the oldest row
    last = torch.cat([g, more])[-rank:]
    torch.testing.assert_close(F.to_dense(), last.T @ last / last.shape[0])


def test_empirical_lowrank_at_batch_twenty(generator):
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(20, 3, generator=generator), torch.randn(20, 2, generator=generator)
    F = fp.fisher.empirical(model, torch.nn.functional.mse_loss, x, y, kind="lowrank", rank=16)
    assert F.columns == 16


# 8. BlockFisher(graft=None, damping=0): nearly singular blocks passed as good roots
def test_block_without_damping_falls_back_on_singular_blocks(generator):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    x, y = torch.randn(64, 8, generator=generator), torch.randn(64, 1, generator=generator)
    opt = fp.optim.BlockFisher(
        model.parameters(), lr=1e-2, graft=None, damping=0.0, block_size=16, update_every=1
    )
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        largest = max(
            float((p.detach() - b).abs().max())
            for p, b in zip(model.parameters(), before, strict=True)
        )
        assert largest < 0.05  # Adam's step is at most ~lr; noise roots gave 7.4
    assert opt.root_failures > 0


@pytest.mark.parametrize("seed", range(3))
def test_block_root_treats_eigenvalues_below_rounding_noise_as_zero(seed):
    """A float32 block with eigenvalues 2e-7·λ_max (below √b·ε32 ≈ 4.8e-7, so
    within its rounding error) has no trustworthy root without damping; the
    same spectrum in float64 storage is far above its noise and has one."""
    b = 16
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(b, b, generator=g, dtype=torch.float64))
    spectrum = torch.cat([torch.ones(3), torch.full((b - 3,), 2e-7)]).double()
    block = ((q * spectrum) @ q.T)[None]
    for dtype, expected in (
        (torch.float32, ops.ROOT_NONFINITE_OUTPUT),
        (torch.float64, ops.ROOT_OK),
    ):
        F = block.to(dtype).contiguous()
        R, status = torch.empty_like(F), torch.empty(1, dtype=torch.int32)
        ops.block_inv_root_([F], [R], [status], [b], b, damping=0.0)
        assert int(status[0]) == expected, dtype
    want = (q * spectrum.rsqrt()) @ q.T
    torch.testing.assert_close(R[0], want, rtol=1e-6, atol=1e-6 * float(want.abs().max()))


# 9. meta tensors: "share memory" from data_ptr() == 0
@pytest.mark.parametrize("name", FISHER_OPTIMIZERS)
def test_optimizers_build_and_step_on_meta_parameters(name):
    params = [
        torch.nn.Parameter(torch.empty(5, 3, device="meta")),
        torch.nn.Parameter(torch.empty(7, device="meta")),
    ]
    opt = _build(name, params)
    for p in params:
        p.grad = torch.empty_like(p)
    opt.step()
    opt.step()


def test_dtensor_like_subclasses_never_reach_the_kernels():
    from torch.distributed.tensor import DTensor  # noqa: F401 (the class the check names)

    class Wrapper(torch.Tensor):  # a traceable wrapper subclass, as DTensor is
        @staticmethod
        def __new__(cls, inner):
            return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype)

        def __init__(self, inner):
            self.inner = inner

        def __tensor_flatten__(self):
            return ["inner"], None

        @staticmethod
        def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
            return Wrapper(inner_tensors["inner"])

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            raise NotImplementedError(func)

    with pytest.raises(TypeError, match="tensor subclass"):
        ops.sum_of_squares([Wrapper(torch.ones(3))])


# 10. uneven op validation: beta1=1e20 / beta2=1 accepted by the block step
@pytest.mark.parametrize(
    ("beta1", "beta2"), [(1e20, 0.9), (0.9, 1.0), (-0.1, 0.9), (float("nan"), 0.9)]
)
def test_block_step_validates_betas_like_the_diag_step(beta1, beta2):
    n, b = 6, 4
    shape = ops.block_shape(n, b)
    with pytest.raises((ValueError, TypeError), match="beta"):
        ops.block_fisher_step_(
            [torch.ones(n)],
            [torch.ones(n)],
            [torch.zeros(n)],
            [torch.zeros(n)],
            [torch.zeros(shape)],
            [torch.zeros(shape[0], dtype=torch.int32)],
            block_size=b,
            beta1=beta1,
            beta2=beta2,
            step_size=0.1,
            inv_c2_root=1.0,
            eps=1e-8,
            decay=1.0,
        )


def test_block_fisher_steps_non_contiguous_parameters_like_contiguous_ones(generator):
    base = torch.randn(6, 5, generator=generator)
    strided = torch.nn.Parameter(base.t())  # (5, 6), not contiguous
    dense = torch.nn.Parameter(base.t().contiguous())
    a = fp.optim.BlockFisher([strided], lr=1e-2, block_size=4, update_every=1)
    b = fp.optim.BlockFisher([dense], lr=1e-2, block_size=4, update_every=1)
    for _ in range(3):
        grad = torch.randn(5, 6, generator=generator)
        strided.grad, dense.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    assert not strided.is_contiguous()
    assert torch.equal(strided.detach(), dense.detach())


# 11. smaller findings
@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e-30])
def test_greedy_design_does_not_depend_on_the_pool_scale(scale, generator):
    pool = torch.randn(120, 5, generator=generator, dtype=torch.float64)
    want = fp.design.greedy(pool, 12)
    got = fp.design.greedy(pool * scale, 12)
    assert got.indices.tolist() == want.indices.tolist()
    defined = torch.isfinite(want.errors)
    # ε = σ²(1 + tr(B M)) with tr(B M) ∝ 1/scale²: where that still fits float64, it follows.
    excess = (want.errors[defined] - 1.0) / scale / scale
    if torch.isfinite(excess).all():
        torch.testing.assert_close(got.errors[defined] - 1.0, excess, rtol=1e-9, atol=0.0)


def test_per_sample_grads_of_an_empty_batch_is_empty():
    model = torch.nn.Linear(3, 2)
    g = fp.fisher.per_sample_grads(
        model, torch.nn.functional.mse_loss, torch.empty(0, 3), torch.empty(0, 2)
    )
    assert g.shape == (0, 8)
    with pytest.raises(ValueError, match="no observations"):
        fp.fisher.empirical(
            model, torch.nn.functional.mse_loss, torch.empty(0, 3), torch.empty(0, 2)
        )


def test_dense_refuses_an_overflowing_fisher_and_stays_unchanged(generator):
    F = fp.fisher.Dense(4).update(torch.randn(3, 4, generator=generator, dtype=torch.float64))
    before = F.to_dense()
    with pytest.raises(ValueError, match="overflows float64"):
        F.update(torch.randn(3, 4, generator=generator, dtype=torch.float64) * 1e200)
    assert torch.equal(F.to_dense(), before) and F.num_observations == 3


def test_per_sample_grads_names_batchnorm_in_train_mode(generator):
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)
    )
    x, y = torch.randn(6, 3, generator=generator), torch.randn(6, 2, generator=generator)
    with pytest.raises(ValueError, match=r"BatchNorm1d.*train mode"):
        fp.fisher.per_sample_grads(model, torch.nn.functional.mse_loss, x, y)
    model.eval()  # running statistics: per-sample gradients are defined
    assert fp.fisher.per_sample_grads(model, torch.nn.functional.mse_loss, x, y).shape[0] == 6


@pytest.mark.parametrize("name", FISHER_OPTIMIZERS)
def test_dtensor_parameters_are_a_clear_type_error_not_a_crash(name, tmp_path):
    """DiagFisher segfaulted on a DTensor parameter (data_ptr() is 0). Now it
    steps DTensors' local shards (tests/test_distributed.py); the optimizers
    whose preconditioner couples coordinates across shards refuse them by name."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        mesh = init_device_mesh("cpu", (1,))
        start = torch.randn(4, 3)
        p = torch.nn.Parameter(distribute_tensor(start.clone(), mesh, [Shard(0)]))
        if REGISTRY[name].factory.steps_dtensor_shards:
            plain = torch.nn.Parameter(start.clone())
            opts = [_build(name, [p]), _build(name, [plain])]
            for q, opt in zip((p, plain), opts, strict=True):
                q.grad = torch.ones_like(q)
                opt.step()
            assert torch.equal(p.to_local(), plain.detach())
        else:
            with pytest.raises(TypeError, match="DTensor"):
                _build(name, [p])
    finally:
        dist.destroy_process_group()
