"""torch.compile(opt.step): graph breaks against torch's AdamW in the same
harness, no recompiles across steps, and the compiled step equal to eager, for
every Fisher optimizer (they run eagerly behind one graph break; DiagFisher's
step is traced for CUDA parameters, and here also forced traced on the CPU:
FisherOptimizer.traces_step)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo

import fisherprec as fp
from fisherprec.optim.registry import REGISTRY
from tests.optimizer_infos import INFOS

FISHER = sorted(name for name, entry in REGISTRY.items() if entry.fisher is not None)


def _build(name: str, params, **kwargs):
    return fp.optim.registry.build(name, params, lr=1e-2, **{**INFOS[name].small, **kwargs})


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _backward(model: torch.nn.Module, k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    dtype = next(model.parameters()).dtype
    x = torch.randn(9, 5, generator=generator).to(dtype)
    y = torch.randn(9, 3, generator=generator).to(dtype)
    model.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), y).backward()


def _graph_breaks(make) -> int:
    model = _model()
    opt = make(model.parameters())
    _backward(model, 0)
    opt.step()  # state exists, as in a training loop that compiles after warm-up
    _backward(model, 1)
    torch._dynamo.reset()
    return torch._dynamo.explain(opt.step)().graph_break_count


@pytest.fixture(scope="module")
def adamw_graph_breaks() -> int:
    return _graph_breaks(lambda p: torch.optim.AdamW(p, lr=1e-2))


# DiagFisher as shipped (on the CPU its step runs eagerly inside the compiled
# call) and with its traced step forced, as CUDA parameters get it.
CASES = [(name, False) for name in FISHER] + [("diag", True)]


@pytest.mark.parametrize(("name", "traced"), CASES)
def test_compiled_step_breaks_no_more_graphs_than_adamw(
    name, traced, adamw_graph_breaks, monkeypatch
):
    if traced:
        monkeypatch.setattr(fp.optim.DiagFisher, "traces_step", True)
    assert _graph_breaks(lambda p: _build(name, p)) <= adamw_graph_breaks


@pytest.mark.parametrize(
    ("name", "dtype", "traced"),
    [
        ("diag", dtype, traced)
        for dtype in (torch.float32, torch.bfloat16)
        for traced in (False, True)
    ]
    + [(name, torch.float32, False) for name in FISHER if name != "diag"],
)
def test_compiled_step_equals_eager_and_never_recompiles(name, dtype, traced, monkeypatch):
    if traced:
        monkeypatch.setattr(fp.optim.DiagFisher, "traces_step", True)
    eager = _model().to(dtype)
    traced = copy.deepcopy(eager)
    opt_eager = _build(name, eager.parameters())
    opt_traced = _build(name, traced.parameters())
    for model, opt in ((eager, opt_eager), (traced, opt_traced)):
        _backward(model, 0)
        opt.step()
    torch._dynamo.reset()
    step = torch.compile(opt_traced.step)
    for k in range(1, 5):
        _backward(eager, k)
        _backward(traced, k)
        opt_eager.step()
        if k == 1:
            step()
        else:
            with torch._dynamo.config.patch(error_on_recompile=True):
                step()
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    for a, b in zip(traced.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    first = opt_traced.state[next(traced.parameters())]  # (LowRank: the group's step)
    assert float(first["step"]) == 5.0
    for p in traced.parameters():
        assert opt_traced.state[p]["exp_avg"].dtype == torch.float32
