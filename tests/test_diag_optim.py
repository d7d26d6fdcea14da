"""DiagFisher: equivalence with torch.optim.AdamW / RMSprop, checkpoints, policies."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import fisherprec as fp
from fisherprec.optim import DiagFisher, registry

# Tiny tensors: one thread is fastest, and immune to a loaded machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 33), torch.nn.Tanh(), torch.nn.Linear(33, 3), torch.nn.Tanh()
    )
    return model.to(dtype)


def _train(model, opt, steps, *, seed=1, scheduler=None, start=0):
    generator = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    for i in range(start + steps):
        x = torch.randn(16, 10, generator=generator).to(dtype)
        y = torch.randn(16, 3, generator=generator).to(dtype)
        if i < start:  # replay the data stream up to `start`
            continue
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return model


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in model.parameters()])


def _rel(a, b) -> float:
    return float((_flat(a) - _flat(b)).abs().max() / _flat(b).abs().max())


CONFIGS = [
    {"lr": 1e-3},
    {"lr": 1e-2, "weight_decay": 0.1},
    {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01},
    {"lr": 1e-3, "maximize": True},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c))
def test_trajectory_matches_adamw(config):
    kw = {"weight_decay": 0.0} | config  # AdamW's default weight decay is 1e-2, ours 0
    ours = _train(_model(), None, 0)
    ours_opt = DiagFisher(ours.parameters(), **kw)
    theirs = _model()
    theirs_opt = torch.optim.AdamW(theirs.parameters(), **kw)
    _train(ours, ours_opt, 100)
    _train(theirs, theirs_opt, 100)
    assert _rel(ours, theirs) <= 1e-6
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        a, b = ours_opt.state[p], theirs_opt.state[q]
        assert a["step"].dtype == torch.float32 and a["step"].shape == () and a["step"] == 100
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=1e-4, atol=1e-7)


def test_rmsprop_update_rule():
    ours, theirs = _model(), _model()
    opt = DiagFisher(
        ours.parameters(), lr=1e-2, betas=(0.0, 0.99), bias_correction=False, weight_decay=0.0
    )
    _train(ours, opt, 100)
    _train(theirs, torch.optim.RMSprop(theirs.parameters(), lr=1e-2, alpha=0.99), 100)
    assert _rel(ours, theirs) <= 1e-6


def test_float64_and_strided_parameters_take_the_torch_path():
    ours, theirs = _model(torch.float64), _model(torch.float64)
    opt = DiagFisher(ours.parameters(), lr=1e-2, weight_decay=0.1)
    _train(ours, opt, 20)
    _train(theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1), 20)
    assert _rel(ours, theirs) <= 1e-12
    assert opt.state[next(ours.parameters())]["exp_avg"].dtype == torch.float64
    # A transposed (non-contiguous) float32 parameter.
    p = torch.nn.Parameter(torch.randn(5, 3).T)
    q = torch.nn.Parameter(p.detach().clone())
    for param, cls in ((p, DiagFisher), (q, torch.optim.AdamW)):
        o = cls([param], lr=0.1, weight_decay=0.0)
        for k in range(3):
            param.grad = torch.full_like(param, 0.5 * (k + 1))
            o.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)


def test_low_precision_parameters_keep_float32_moments():
    model = _model(torch.bfloat16)
    opt = DiagFisher(model.parameters(), lr=1e-2)
    reference = _model()  # float32 master copy of the same start
    ref_opt = DiagFisher(reference.parameters(), lr=1e-2)
    _train(model, opt, 5)
    _train(reference, ref_opt, 5)
    state = opt.state[next(model.parameters())]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    assert next(model.parameters()).dtype == torch.bfloat16
    assert _rel(model, reference) < 0.1  # bf16 parameters track the float32 run


def _save(opt) -> dict:
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_checkpoint_resume_is_bit_identical():
    straight = _model()
    opt = DiagFisher(straight.parameters(), lr=1e-2, weight_decay=0.05)
    _train(straight, opt, 60)

    first = _model()
    opt1 = DiagFisher(first.parameters(), lr=1e-2, weight_decay=0.05)
    _train(first, opt1, 30)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), _save(opt1)
    resumed = _model()
    resumed.load_state_dict(saved_model)
    opt2 = DiagFisher(resumed.parameters(), lr=1.0)  # hyper-parameters come from the checkpoint
    opt2.load_state_dict(saved_opt)
    _train(resumed, opt2, 30, start=30)
    assert torch.equal(_flat(resumed), _flat(straight))


@pytest.mark.parametrize("direction", ["adamw->diag", "diag->adamw"])
def test_checkpoints_interchange_with_adamw(direction):
    kw = {"lr": 1e-2, "weight_decay": 0.05}
    straight = _model()
    _train(straight, torch.optim.AdamW(straight.parameters(), **kw), 60)
    first_cls, second_cls = (
        (torch.optim.AdamW, DiagFisher)
        if direction == "adamw->diag"
        else (DiagFisher, torch.optim.AdamW)
    )
    model = _model()
    opt1 = first_cls(model.parameters(), **kw)
    _train(model, opt1, 30)
    opt2 = second_cls(model.parameters(), **kw)
    opt2.load_state_dict(_save(opt1))
    _train(model, opt2, 30, start=30)
    assert _rel(model, straight) <= 1e-6


def test_bfloat16_adamw_checkpoint_is_widened_on_load():
    model = _model(torch.bfloat16)
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, adamw, 3)
    opt = DiagFisher(model.parameters(), lr=1e-2)
    opt.load_state_dict(_save(adamw))
    state = opt.state[next(model.parameters())]
    assert state["exp_avg"].dtype == torch.float32 and state["step"].device.type == "cpu"
    _train(model, opt, 2)
    assert state["step"] == 5


def test_bad_checkpoints_are_clear_errors():
    model = _model()
    adam = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1)  # L2, not decoupled
    _train(model, adam, 1)
    with pytest.raises(ValueError, match="decoupled weight decay"):
        DiagFisher(model.parameters()).load_state_dict(_save(adam))
    ams = torch.optim.AdamW(model.parameters(), amsgrad=True)
    _train(model, ams, 1)
    with pytest.raises(ValueError, match="AMSGrad"):
        DiagFisher(model.parameters()).load_state_dict(_save(ams))
    opt = DiagFisher(model.parameters())
    _train(model, opt, 1)
    bad = _save(opt)
    bad["state"][0]["exp_avg"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"state\['exp_avg'\] of parameter 0 has shape \(3,\)"):
        DiagFisher(model.parameters()).load_state_dict(bad)


def test_lr_scheduler_and_tensor_lr():
    ours, theirs = _model(), _model()
    opt = DiagFisher(ours.parameters(), lr=1e-2)
    ref = torch.optim.AdamW(theirs.parameters(), lr=1e-2)  # the same defaults: a literal swap
    _train(ours, opt, 30, scheduler=torch.optim.lr_scheduler.StepLR(opt, 10, gamma=0.5))
    _train(theirs, ref, 30, scheduler=torch.optim.lr_scheduler.StepLR(ref, 10, gamma=0.5))
    assert opt.param_groups[0]["lr"] == pytest.approx(1.25e-3)
    assert _rel(ours, theirs) <= 1e-6
    tensor_lr = _model()
    _train(tensor_lr, DiagFisher(tensor_lr.parameters(), lr=torch.tensor(1e-2)), 10)
    plain = _model()
    _train(plain, DiagFisher(plain.parameters(), lr=float(torch.tensor(1e-2))), 10)
    assert torch.equal(_flat(tensor_lr), _flat(plain))


def test_closure_param_groups_and_zero_grad():
    model = _model()
    opt = DiagFisher(
        [
            {"params": model[0].parameters()},
            {"params": model[2].parameters(), "lr": 0.0, "power": 1.0},
        ],
        lr=1e-2,
    )
    frozen = [p.detach().clone() for p in model[2].parameters()]
    x, y = torch.randn(4, 10), torch.randn(4, 3)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor)
    assert all(
        torch.equal(a, b.detach()) for a, b in zip(frozen, model[2].parameters(), strict=True)
    )
    assert opt.param_groups[1]["power"] == 1.0 and opt.param_groups[0]["power"] == 0.5
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_power_one_is_a_diagonal_natural_gradient_step():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = DiagFisher([p], lr=0.1, betas=(0.0, 0.0), eps=0.0, power=1.0, bias_correction=False)
    p.grad = torch.tensor([1.0, 2.0, -4.0, 0.5])
    opt.step()  # m = g, v = g², u = g / g² = 1 / g
    torch.testing.assert_close(p.detach(), -0.1 / p.grad)


def test_parameters_without_gradients_are_left_alone():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = DiagFisher([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert b not in opt.state and torch.equal(b.detach(), torch.ones(3))
    assert opt.memory_bytes() == 3 * 4 * 2 + 4


def test_sparse_gradients_and_shared_memory_are_rejected():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        DiagFisher([p]).step()
    base = torch.zeros(6)
    with pytest.raises(ValueError, match="share memory"):
        DiagFisher([torch.nn.Parameter(base[:4]), torch.nn.Parameter(base[2:])])


def test_registry_entry():
    entry = registry.get("diag")
    assert entry.factory is DiagFisher and entry.fisher == "diag"
    assert isinstance(registry.build("diag", _model().parameters()), DiagFisher)
    assert fp.optim.DiagFisher is DiagFisher


def test_step_counts_are_per_parameter():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = DiagFisher([a, b], lr=0.1)
    ref = torch.optim.AdamW([c := torch.nn.Parameter(torch.ones(3)), d := torch.nn.Parameter(torch.ones(2))],
                            lr=0.1)  # fmt: skip
    for grads in ([1, 1], [1, 0], [1, 0], [1, 1], [0, 1]):
        for p, q, has in ((a, c, grads[0]), (b, d, grads[1])):
            p.grad = torch.full_like(p, 0.5) if has else None
            q.grad = torch.full_like(q, 0.5) if has else None
        opt.step()
        ref.step()
    assert opt.state[a]["step"] == 4 and opt.state[b]["step"] == 3
    assert float(ref.state[c]["step"]) == 4 and float(ref.state[d]["step"]) == 3
    torch.testing.assert_close(a.detach(), c.detach())
    torch.testing.assert_close(b.detach(), d.detach())
    saved = _save(opt)["state"]
    assert [float(saved[i]["step"]) for i in (0, 1)] == [4.0, 3.0]


def test_bfloat16_checkpoint_resume_keeps_float32_moments_exactly():
    straight = _model(torch.bfloat16)
    _train(straight, DiagFisher(straight.parameters(), lr=1e-2), 20)
    first = _model(torch.bfloat16)
    opt1 = DiagFisher(first.parameters(), lr=1e-2)
    _train(first, opt1, 10)
    saved = _save(opt1)
    opt2 = DiagFisher(first.parameters(), lr=1e-2)
    opt2.load_state_dict(saved)  # torch alone would round the moments to bfloat16
    for p in first.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt2.state[p][key].dtype == torch.float32
            assert torch.equal(opt2.state[p][key], opt1.state[p][key])
    _train(first, opt2, 10, start=10)
    assert torch.equal(_flat(first), _flat(straight))
