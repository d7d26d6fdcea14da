"""The shared optimizer machinery, on a minimal variant (preconditioner F = I)."""

import pytest
import torch

from fisherprec.optim import FisherOptimizer, registry


class _Plain(FisherOptimizer):
    def __init__(self, params, lr=0.1, **kw):
        super().__init__(params, {"lr": lr, **kw})

    def _step_group(self, group, params, grads):
        sign = -1.0 if group["maximize"] else 1.0
        for p, g in zip(params, grads, strict=True):
            self.state[p]["calls"] = self.state[p].get("calls", 0) + 1
            p.add_(g, alpha=-sign * group["lr"])


def _param(values):
    p = torch.nn.Parameter(torch.tensor(values))
    p.grad = torch.ones_like(p)
    return p


def test_step_moves_and_maximize_reverses():
    p, q = _param([1.0, 2.0]), _param([1.0])
    opt = _Plain([{"params": [p]}, {"params": [q], "maximize": True}])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, 1.9]))
    torch.testing.assert_close(q.detach(), torch.tensor([1.1]))


def test_closure_is_called_with_grad_enabled():
    p = _param([1.0])
    opt = _Plain([p])

    def closure():
        assert torch.is_grad_enabled()
        return torch.tensor(3.0)

    assert opt.step(closure).item() == 3.0


def test_sparse_gradients_are_rejected():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        _Plain([p]).step()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_policies(bad):
    p = _param([1.0, 2.0])
    p.grad[1] = bad
    before = p.detach().clone()
    with pytest.raises(FloatingPointError, match=r"parameter 0 of shape \(2,\)"):
        _Plain([p], nonfinite="raise").step()
    opt = _Plain([p], nonfinite="skip")
    opt.step()
    assert torch.equal(p.detach(), before) and opt.skipped_steps == 1 and not opt.state
    _Plain([p], nonfinite="propagate").step()
    assert not torch.isfinite(p.detach()).all()


def test_bad_hyperparameters_are_clear_errors():
    p = _param([1.0])
    with pytest.raises(ValueError, match="Invalid learning rate"):
        _Plain([p], lr=-1.0)
    with pytest.raises(ValueError, match="Invalid nonfinite policy"):
        _Plain([p], nonfinite="ignore")


def test_memory_bytes_counts_state_tensors():
    p = _param([1.0, 2.0])
    opt = _Plain([p])
    opt.state[p]["buf"] = torch.zeros(5)
    assert opt.memory_bytes() == 20


def test_registry_builds_baselines_and_rejects_unknown_names():
    model = torch.nn.Linear(2, 1)
    assert isinstance(registry.build("sgd", model.parameters()), torch.optim.SGD)
    with pytest.raises(ValueError, match="unknown optimizer 'nope'; available: sgd, adamw"):
        registry.get("nope")
