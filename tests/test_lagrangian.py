"""fisherprec.lagrangian against float64 dense formulas (docs/theory.md, "The learning Lagrangian and F^(-p) updates")."""

from __future__ import annotations

import math

import pytest
import torch

import fisherprec as fp

lag = fp.lagrangian


# Tiny tensors: one thread is fastest, and immune to a loaded machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _dense_fisher(generator: torch.Generator, P: int, damping: float = 1e-3):
    G = torch.randn(3 * P, P, generator=generator, dtype=torch.float64)
    F = fp.fisher.Dense(P, damping=damping).update(G)
    return F, G.T @ G / G.shape[0] + damping * torch.eye(P, dtype=torch.float64)


# ------------------------------------------------------- kinetic / lagrangian
@pytest.mark.parametrize("P", [1, 5, 17])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kinetic_matches_dense_solve(generator: torch.Generator, P: int, dtype) -> None:
    F, dense = _dense_fisher(generator, P)
    g = torch.randn(P, generator=generator, dtype=torch.float64)
    expected = float(g @ torch.linalg.solve(dense, g)) / (2 * P)
    got = lag.kinetic(g.to(dtype), F)
    assert math.isclose(got, expected, rel_tol=1e-5 if dtype == torch.float32 else 1e-10)
    # a list of tensors is flattened in order
    parts = [g[: P // 2].to(dtype), g[P // 2 :].reshape(1, -1).to(dtype)]
    assert math.isclose(lag.kinetic(parts, F), got, rel_tol=1e-6)
    # F = I: SGD's metric
    assert math.isclose(lag.kinetic(g, None), float(g @ g) / (2 * P), rel_tol=1e-12)


def test_lagrangian_is_kinetic_plus_loss(generator: torch.Generator) -> None:
    F, _ = _dense_fisher(generator, 4)
    g = torch.randn(4, generator=generator, dtype=torch.float64)
    loss = torch.tensor(0.75, requires_grad=True)
    # L = T − ℓ with ℓ = −loss
    assert math.isclose(lag.lagrangian(loss, g, F), lag.kinetic(g, F) + 0.75, rel_tol=1e-12)
    with pytest.raises(ValueError, match="loss must be finite"):
        lag.lagrangian(math.inf, g, F)


def test_kinetic_errors(generator: torch.Generator) -> None:
    F, _ = _dense_fisher(generator, 4)
    with pytest.raises(ValueError, match="grad has 3 entries but fisher has num_params=4"):
        lag.kinetic(torch.ones(3), F)
    with pytest.raises(TypeError, match="FisherEstimator"):
        lag.kinetic(torch.ones(4), torch.eye(4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        lag.kinetic(torch.tensor([1.0, math.nan, 0.0, 0.0]), F)
    with pytest.raises(ValueError, match="holds no tensors"):
        lag.kinetic([None], F)
    with pytest.raises(TypeError, match="floating point"):
        lag.kinetic(torch.ones(4, dtype=torch.long), F)


def test_structure_names() -> None:
    # Every name of the one registry builds its estimator over P parameters.
    for name, cls in fp.fisher.registry.REGISTRY.items():
        estimator = lag.make_estimator(name, 6)
        assert type(estimator) is cls and estimator.num_params == 6, name
    assert isinstance(lag.make_estimator("full", 3), fp.fisher.Dense)
    with pytest.raises(ValueError, match=r"Invalid fisher value: 'kron2'; available: block, dense"):
        lag.make_estimator("kron2", 3)


# ------------------------------------------------------------ diag (after merge)
def test_kinetic_with_diag_estimator(generator: torch.Generator) -> None:
    if not hasattr(fp.fisher, "Diag"):
        pytest.skip("fisherprec.fisher.Diag is not in this build")
    G = torch.randn(10, 6, generator=generator, dtype=torch.float64)
    F = lag.make_estimator("diag", 6, damping=1e-3).update(G)
    g = torch.randn(6, generator=generator, dtype=torch.float64)
    expected = float((g.square() / (G.square().mean(0) + 1e-3)).sum()) / 12
    assert math.isclose(lag.kinetic(g, F), expected, rel_tol=1e-6)


def test_stationarity_ratio_with_diag_estimator(generator: torch.Generator) -> None:
    if not hasattr(fp.fisher, "Diag"):
        pytest.skip("fisherprec.fisher.Diag is not in this build")
    model, x, y = _logistic_mle(generator, well_specified=True)
    # At a well-specified MLE diag(F) ≈ diag(H) too, so tr(diag(F)⁻¹ H)/P ≈ 1.
    ratio = lag.stationarity_ratio(model, _bce, x, y, fisher="diag")
    assert abs(ratio - 1.0) < 0.06


# ------------------------------------------------------------------- action
def test_action_and_recorder(generator: torch.Generator) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x = torch.randn(64, 3, generator=generator)
    y = torch.randn(64, 1, generator=generator)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    P = sum(p.numel() for p in model.parameters())
    rec = lag.Recorder(model.parameters(), fisher="full", beta=None, damping=1e-4)
    reference = fp.fisher.Dense(P, damping=1e-4)
    for k in range(6):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        reference.update(g)
        step = rec.record(loss)
        assert step.step == k
        assert math.isclose(step.loss, loss.item(), rel_tol=1e-7)
        assert math.isclose(step.kinetic, lag.kinetic(g, reference), rel_tol=1e-6)
        assert math.isclose(step.lagrangian, step.kinetic + step.loss, rel_tol=1e-12)
        opt.step()
    assert len(rec) == 6 and rec.losses[0] > rec.losses[-1]
    assert math.isclose(rec.action(dt=0.5), 0.5 * math.fsum(rec.lagrangians), rel_tol=1e-12)
    assert math.isclose(lag.action(rec.steps), lag.action(rec.lagrangians), rel_tol=1e-12)
    assert rec.kinetics == [s.kinetic for s in rec.steps]


def test_recorder_with_given_estimator_and_errors(generator: torch.Generator) -> None:
    w = torch.nn.Parameter(torch.randn(3, generator=generator))
    F = fp.fisher.Dense(3, damping=1e-2).update(torch.randn(5, 3, generator=generator))
    rec = lag.Recorder([w], F, update_fisher=False)
    with pytest.raises(RuntimeError, match=r"after loss\.backward"):
        rec.record(0.0)
    (w.square().sum()).backward()
    step = rec.record(1.0)
    assert F.num_updates == 1  # not updated
    assert math.isclose(step.kinetic, lag.kinetic(2 * w.detach(), F), rel_tol=1e-12)
    with pytest.raises(ValueError, match="num_params=3 but params hold 4"):
        lag.Recorder([torch.nn.Parameter(torch.ones(4))], F)
    with pytest.raises(ValueError, match="params is empty"):
        lag.Recorder([])
    with pytest.raises(ValueError, match="Invalid dt"):
        lag.action([1.0], dt=0.0)


# ------------------------------------------------------------- stationarity
def _bce(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(out, target)


def _logistic_mle(generator: torch.Generator, *, well_specified: bool, n: int = 6000, d: int = 4):
    """Logistic regression fitted by Newton's method (float64) to data drawn from
    the model itself (well specified) or from one with an omitted quadratic term."""
    if not well_specified:
        d = 2  # fewer coordinates that the misspecification does not touch
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    beta = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    logit = x @ beta + 0.3
    if not well_specified:
        # P(y = 1 | x) rises with |x_0|: no linear logit fits it; at the fitted p
        # the score variance exceeds the curvature along x_0 (F ≻ H there).
        logit = 6.0 * (x[:, 0] ** 2 - 1.0)
    y = (torch.rand(n, generator=generator, dtype=torch.float64) < torch.sigmoid(logit)).double()
    X = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    w = torch.zeros(d + 1, dtype=torch.float64)
    for _ in range(30):
        p = torch.sigmoid(X @ w)
        step = torch.linalg.solve((X.T * (p * (1 - p))) @ X, X.T @ (p - y))
        w -= step
        if float(step.abs().max()) < 1e-13:
            break
    model = torch.nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(w[:d])
        model.bias.copy_(w[d:])
    return model, x, y[:, None]


def _reference_ratio(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    X = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    p = torch.sigmoid(model(x)).detach()
    G = (p - y) * X  # per-sample gradients of the BCE loss
    F = G.T @ G / len(x)
    H = (X.T * (p * (1 - p)).flatten()) @ X / len(x)
    return float(torch.trace(torch.linalg.solve(F, H))) / X.shape[1]


def test_stationarity_ratio_is_one_at_a_well_specified_mle(generator: torch.Generator) -> None:
    model, x, y = _logistic_mle(generator, well_specified=True)
    exact = lag.stationarity_ratio(model, _bce, x, y, exact=True)
    assert math.isclose(exact, _reference_ratio(model, x, y), rel_tol=1e-8)
    assert abs(exact - 1.0) < 0.05  # O(1/√n) sampling error
    probes = lag.stationarity_ratio(
        model, _bce, x, y, exact=False, num_probes=400, generator=generator
    )
    assert abs(probes - exact) < 0.03
    # exact=None picks the exact path for small P
    assert lag.stationarity_ratio(model, _bce, x, y) == exact


def test_stationarity_ratio_is_off_under_misspecification(generator: torch.Generator) -> None:
    model, x, y = _logistic_mle(generator, well_specified=False)
    exact = lag.stationarity_ratio(model, _bce, x, y, exact=True)
    assert math.isclose(exact, _reference_ratio(model, x, y), rel_tol=1e-8)
    assert exact < 0.9, exact  # far outside the well-specified O(1/√n) sampling error
    probes = lag.stationarity_ratio(
        model, _bce, x, y, exact=False, num_probes=400, generator=generator
    )
    assert abs(probes - exact) < 0.05


def test_stationarity_ratio_gaussian_noise_misspecified(generator: torch.Generator) -> None:
    # Linear regression with the unit-variance Gaussian NLL on data of noise σ:
    # F = σ² H at the MLE, so s = 1/σ² (1 when σ = 1).
    x = torch.randn(6000, 3, generator=generator, dtype=torch.float64)
    model = torch.nn.Linear(3, 1, bias=False).double()

    def nll(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((out - t) ** 2).mean()

    for sigma in (1.0, 2.0):
        y = x @ torch.ones(3, 1, dtype=torch.float64)
        y = y + sigma * torch.randn(6000, 1, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
        ratio = lag.stationarity_ratio(model, nll, x, y)
        assert abs(ratio - 1 / sigma**2) < 0.06 / sigma**2


def test_stationarity_ratio_with_an_estimator_object(generator: torch.Generator) -> None:
    model, x, y = _logistic_mle(generator, well_specified=True, n=2000)
    G = fp.fisher.per_sample_grads(model, _bce, x, y)
    F = fp.fisher.Dense(G.shape[1], damping=1e-12).update(G)
    assert math.isclose(
        lag.stationarity_ratio(model, _bce, x, y, fisher=F),
        lag.stationarity_ratio(model, _bce, x, y, fisher="full"),
        rel_tol=1e-6,
    )
    with pytest.raises(ValueError, match="num_params=3, the model has P=5"):
        lag.stationarity_ratio(model, _bce, x, y, fisher=fp.fisher.Dense(3))


def test_stationarity_ratio_hutchinson_on_a_small_mlp(generator: torch.Generator) -> None:
    # A nonlinear model away from any MLE: the Hutchinson estimate (with a
    # damping that keeps F + λI well conditioned) converges to the exact trace.
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    model = model.double()
    x = torch.randn(300, 2, generator=generator, dtype=torch.float64)
    y = (torch.rand(300, 1, generator=generator, dtype=torch.float64) < 0.5).double()
    kw = {"damping": 1e-2}
    exact = lag.stationarity_ratio(model, _bce, x, y, exact=True, **kw)
    approx = lag.stationarity_ratio(
        model, _bce, x, y, exact=False, num_probes=2000, generator=generator, **kw
    )
    # The exact M = (F + λI)⁻¹H, for the Rademacher variance of zᵀMz:
    # Var = ½ Σ_{i≠j} (M_ij + M_ji)² per probe.
    G = fp.fisher.per_sample_grads(model, _bce, x, y)
    params = dict(model.named_parameters())
    names = list(params)

    def mean_loss(*flat: torch.Tensor) -> torch.Tensor:
        p = dict(zip(names, flat, strict=True))
        return _bce(torch.func.functional_call(model, p, (x,)), y)

    blocks = torch.autograd.functional.hessian(mean_loss, tuple(params.values()))
    P = G.shape[1]
    H = torch.cat([torch.cat([b.reshape(p.numel(), -1) for b in row], 1)
                   for row, p in zip(blocks, params.values(), strict=True)])  # fmt: skip
    M = torch.linalg.solve(G.T @ G / len(x) + 1e-2 * torch.eye(P, dtype=torch.float64), H)
    assert math.isclose(exact, float(M.trace()) / P, rel_tol=1e-8)
    S = M + M.T
    std = math.sqrt(0.5 * float(S.square().sum() - S.diagonal().square().sum()) / 2000) / P
    assert abs(approx - exact) < 4 * std


def test_stationarity_ratio_errors(generator: torch.Generator) -> None:
    model, x, y = _logistic_mle(generator, well_specified=True, n=100)
    with pytest.raises(ValueError, match="Invalid num_probes"):
        lag.stationarity_ratio(model, _bce, x, y, exact=False, num_probes=0)
    with pytest.raises(ValueError, match="Invalid damping"):
        lag.stationarity_ratio(model, _bce, x, y, damping=-1.0)
    with pytest.raises(ValueError, match="Invalid fisher value"):
        lag.stationarity_ratio(model, _bce, x, y, fisher="nope")
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        lag.stationarity_ratio(lambda t: t, _bce, x, y)
    frozen = torch.nn.Linear(2, 1)
    frozen.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        lag.stationarity_ratio(frozen, _bce, x[:, :2].float(), y.float())
