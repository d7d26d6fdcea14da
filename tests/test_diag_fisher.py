"""fisher.Diag beyond the shared contract, and fisher.empirical."""

from __future__ import annotations

import pytest
import torch

import fisherprec as fp
from tests import reference


def test_diag_low_precision_gradients_and_float32_state(generator):
    g = torch.randn(6, 50, generator=generator)
    for dtype in (torch.bfloat16, torch.float16):
        est = fp.fisher.Diag(50, dtype=torch.float32).update(g.to(dtype))
        want = reference.empirical_fisher([g.to(dtype)]).diagonal()
        torch.testing.assert_close(est.diagonal(), want, rtol=2.0**-23, atol=0)
    assert fp.fisher.Diag(50, dtype=torch.float32).memory_bytes() == 200
    assert fp.fisher.Diag(50).memory_bytes() == 400
    with pytest.raises(TypeError, match="float32 or float64"):
        fp.fisher.Diag(5, dtype=torch.float16)


def test_diag_ema_counts_a_batch_as_one_step(generator):
    est = fp.fisher.Diag(4, beta=0.5)
    batch = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    est.update(batch)
    # One EMA step from zero, bias-corrected: exactly the batch mean of g².
    torch.testing.assert_close(est.diagonal(), batch.square().mean(0), rtol=1e-15, atol=0)


def test_empirical_diag_matches_dense_diagonal(generator):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = torch.randn(9, 3, generator=generator)
    y = torch.randn(9, 2, generator=generator)
    loss = torch.nn.functional.mse_loss
    diag = fp.fisher.empirical(model, loss, x, y, kind="diag", damping=1e-3)
    dense = fp.fisher.empirical(model, loss, x, y, kind="full")
    assert isinstance(diag, fp.fisher.Diag) and isinstance(dense, fp.fisher.Dense)
    assert diag.damping == 1e-3 and diag.num_observations == 9
    torch.testing.assert_close(diag.to_dense(), reference.diag_of(dense.to_dense()))
    grads = fp.fisher.per_sample_grads(model, loss, x, y)
    torch.testing.assert_close(diag.diagonal(), grads.double().square().mean(0))


def test_empirical_unknown_kind_is_a_clear_error():
    model = torch.nn.Linear(2, 1)
    x, y = torch.randn(3, 2), torch.randn(3, 1)
    with pytest.raises(
        ValueError,
        match="Invalid kind value: 'kron-ish'; available: block, dense, diag, full, kron, lowrank",
    ):
        fp.fisher.empirical(model, torch.nn.functional.mse_loss, x, y, kind="kron-ish")
