"""The optimizer conformance suite: every check runs over every Fisher
optimizer of the registry (fisherprec.optim.registry), with the per-variant
settings and invalid inputs of tests/optimizer_infos.py. Variant-specific
behaviour (the math against tests/reference.py) stays in the per-variant files."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from fisherprec.optim import registry
from tests.optimizer_infos import COMMON_ERRORS, INFOS

FISHER_OPTIMIZERS = sorted(name for name, e in registry.REGISTRY.items() if e.fisher is not None)


def test_every_fisher_optimizer_has_an_info_row():
    assert set(INFOS) == set(FISHER_OPTIMIZERS)


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    # Odd shapes: a 5×3 matrix and its bias, a 2×5 matrix (blocks and tiles with tails).
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).to(
        dtype
    )


def _data(seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 3, generator=generator)
    return x.to(dtype), torch.randn(7, 2, generator=generator).to(dtype)


def _build(name: str, params, **kwargs) -> torch.optim.Optimizer:
    return registry.build(name, params, **{"lr": 1e-2, **INFOS[name].small, **kwargs})


def _train(model, opt, steps: int, *, first: int = 0, sign: float = 1.0) -> None:
    for k in range(first, first + steps):
        x, y = _data(k, next(model.parameters()).dtype)
        opt.zero_grad(set_to_none=True)
        (sign * torch.nn.functional.mse_loss(model(x), y)).backward()
        opt.step()


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.fixture(params=FISHER_OPTIMIZERS)
def name(request) -> str:
    return request.param


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        (name, kwargs, message)
        for name in FISHER_OPTIMIZERS
        for kwargs, message in COMMON_ERRORS + INFOS[name].errors
    ],
)
def test_bad_hyperparameters_are_clear_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        registry.build(name, _model().parameters(), **kwargs)
    opt = registry.build(name, [torch.nn.Parameter(torch.ones(3, 2))])
    with pytest.raises(ValueError, match=message):  # also in a later group, which is not kept
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2, 2))], **kwargs})
    assert len(opt.param_groups) == 1


def test_step_count_is_a_float32_tensor_as_torch_keeps_it(name):
    model = _model()
    opt = _build(name, model.parameters())
    _train(model, opt, 2)
    steps = [s["step"] for s in opt.state.values() if "step" in s]
    assert steps
    for step in steps:
        assert isinstance(step, torch.Tensor) and step.dtype == torch.float32 and step.dim() == 0
        assert step.item() == 2.0


def test_closure_runs_with_grad_enabled_and_its_loss_is_returned(name):
    model = _model()
    opt = _build(name, model.parameters())
    x, y = _data(0)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    before = _params(model)
    loss = opt.step(closure)
    assert calls == [True] and isinstance(loss, torch.Tensor)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(model), strict=True))


def test_maximize_on_a_loss_is_minimize_on_its_negative(name):
    up, down = _model(), _model()
    _train(up, _build(name, up.parameters(), maximize=True), 3, sign=-1.0)
    _train(down, _build(name, down.parameters()), 3)
    _assert_same(_params(up), _params(down))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_policies(name, bad):
    def setup(policy):
        model = _model()
        opt = _build(name, model.parameters(), nonfinite=policy)
        _train(model, opt, 2)  # state exists: a refused step must leave it as it was
        x, y = _data(5)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        model[0].weight.grad[1, 2] = bad
        return model, opt, _params(model), copy.deepcopy(opt.state_dict())

    def assert_unchanged(model, opt, params, state):
        _assert_same(_params(model), params)
        after = opt.state_dict()
        for key, saved in state["state"].items():
            for field, value in saved.items():
                now = after["state"][key][field]
                if isinstance(value, torch.Tensor):
                    assert torch.equal(now, value), field
                else:
                    assert now == value, field

    model, opt, params, state = setup("raise")
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        opt.step()
    assert_unchanged(model, opt, params, state)
    model, opt, params, state = setup("skip")
    opt.step()
    assert opt.skipped_steps == 1
    assert_unchanged(model, opt, params, state)
    model, opt, *_ = setup("propagate")
    opt.step()
    assert not all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("through", ["memory", "torch.save"])
def test_state_dict_round_trip_resumes_bit_identically(name, through):
    model = _model()
    opt = _build(name, model.parameters())
    _train(model, opt, 3)
    saved_model = copy.deepcopy(model.state_dict())
    saved = opt.state_dict()
    if through == "torch.save":
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
    else:
        saved = copy.deepcopy(saved)
    _train(model, opt, 3, first=3)
    resumed = _model(seed=1)
    resumed.load_state_dict(saved_model)
    opt2 = _build(name, resumed.parameters())
    opt2.load_state_dict(saved)
    _train(resumed, opt2, 3, first=3)
    _assert_same(_params(resumed), _params(model))


def test_a_checkpoint_with_a_python_number_step_loads(name):
    model = _model()
    opt = _build(name, model.parameters())
    _train(model, opt, 2)
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for state in saved["state"].values():
        if "step" in state:
            state["step"] = int(state["step"])
    _train(model, opt, 2, first=2)
    resumed = _model(seed=1)
    resumed.load_state_dict(saved_model)
    opt2 = _build(name, resumed.parameters())
    opt2.load_state_dict(saved)
    for state in opt2.state.values():
        if "step" in state:
            assert isinstance(state["step"], torch.Tensor)
            assert state["step"].dtype == torch.float32
    _train(resumed, opt2, 2, first=2)
    _assert_same(_params(resumed), _params(model))


def test_bfloat16_parameters_stay_bfloat16_and_learn(name):
    model = _model(dtype=torch.bfloat16)
    opt = _build(name, model.parameters())
    before = _params(model)
    _train(model, opt, 3)
    for b in _params(model):
        assert b.dtype == torch.bfloat16 and torch.isfinite(b).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(model), strict=True))


def test_param_groups_and_a_scheduler(name):
    model = _model()
    first, second = model[0], model[2]
    opt = _build(name, first.parameters())
    opt.add_param_group({"params": list(second.parameters()), "lr": 0.0, "weight_decay": 0.0})
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    frozen, moving = _params(second), _params(first)
    for k in range(2):
        _train(model, opt, 1, first=k)
        scheduler.step()
    _assert_same(_params(second), frozen)
    assert any(not torch.equal(a, b) for a, b in zip(moving, _params(first), strict=True))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)
