"""fisherprec.kinematics against float64 definitions (docs/theory.md, "Information kinematics and efficiency metrics")."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

import fisherprec as fp
from fisherprec.kinematics import Curve

kin = fp.kinematics


# Tiny tensors: one thread is fastest, and immune to a loaded machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _nll(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64) * 3


# ---------------------------------------------------------------- basics
@pytest.mark.parametrize("T", [1, 2, 7, 33])
def test_single_stream_definitions(generator: torch.Generator, T: int) -> None:
    nll = _nll(generator, (T,))
    v = kin.velocity(nll)
    assert torch.equal(v, nll)
    pos = kin.position(nll)
    expected = torch.tensor([math.fsum(nll[: t + 1].tolist()) for t in range(T)])
    torch.testing.assert_close(pos, expected.double())
    acc = kin.acceleration(nll)
    assert acc.shape == (T - 1,)
    torch.testing.assert_close(
        acc, torch.tensor([nll[t + 1] - nll[t] for t in range(T - 1)]).double()
    )
    # Position is the integral of velocity; velocity the integral of acceleration.
    if T > 1:
        torch.testing.assert_close(nll[0] + acc.cumsum(0), nll[1:])


@pytest.mark.parametrize(("N", "T"), [(2, 5), (9, 1), (16, 31)])
def test_many_streams_mean_and_stderr(generator: torch.Generator, N: int, T: int) -> None:
    nll = _nll(generator, (N, T))
    for fn, per_stream in (
        (kin.velocity, nll),
        (kin.position, nll.cumsum(1)),
        (kin.acceleration, nll[:, 1:] - nll[:, :-1]),
    ):
        curve = fn(nll)
        assert isinstance(curve, Curve)
        torch.testing.assert_close(curve.mean, per_stream.mean(0))
        # stderr = sample std (ddof 1) / sqrt(N), computed by hand in float64
        dev = per_stream - per_stream.mean(0)
        expected = (dev.square().sum(0) / (N - 1)).sqrt() / math.sqrt(N)
        torch.testing.assert_close(curve.stderr, expected)


def test_one_stream_in_a_matrix_has_nan_stderr(generator: torch.Generator) -> None:
    curve = kin.velocity(_nll(generator, (1, 6)))
    assert isinstance(curve, Curve)
    assert torch.isnan(curve.stderr).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logits_and_targets(generator: torch.Generator, dtype: torch.dtype) -> None:
    logits = torch.randn(3, 11, 7, generator=generator).to(dtype)
    targets = torch.randint(0, 7, (3, 11), generator=generator)
    ref = -torch.log_softmax(logits.double(), -1).gather(-1, targets[..., None])[..., 0]
    curve = kin.velocity(logits=logits, targets=targets)
    tol = {"rtol": 1e-2, "atol": 1e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(curve.mean, ref.mean(0), **tol)
    single = kin.position(logits=logits[0], targets=targets[0])
    torch.testing.assert_close(single, ref[0].cumsum(0), **tol)


def test_input_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(T,\) or \(N, T\)"):
        kin.velocity(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="not both"):
        kin.velocity(
            torch.zeros(3), logits=torch.zeros(3, 2), targets=torch.zeros(3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="both logits and targets"):
        kin.velocity(logits=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="do not match"):
        kin.velocity(logits=torch.zeros(3, 2), targets=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 2\)"):
        kin.velocity(logits=torch.zeros(3, 2), targets=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer tensor"):
        kin.velocity(logits=torch.zeros(3, 2), targets=torch.zeros(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        kin.acceleration(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="T = 0"):
        kin.position(torch.zeros(0))
    with pytest.raises(TypeError, match="floating-point"):
        kin.velocity(torch.tensor([1, 2]))


# ------------------------------------------------------- in_context_curve
class _Bigram(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        assert not self.training, "in_context_curve must evaluate in eval mode"
        return self.table(ids)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_in_context_curve_matches_direct_computation(
    generator: torch.Generator, batch_size: int
) -> None:
    model = _Bigram(6).train()
    seq = torch.randint(0, 6, (10, 9), generator=generator)
    curve = kin.in_context_curve(model, seq, batch_size=batch_size)
    assert model.training  # restored
    logits = model.table.weight.detach()[seq[:, :-1]].double()
    ref = -torch.log_softmax(logits, -1).gather(-1, seq[:, 1:, None])[..., 0]
    torch.testing.assert_close(curve.mean, ref.mean(0))
    torch.testing.assert_close(curve.stderr, ref.std(0) / math.sqrt(10))
    nll = kin.in_context_curve(model, seq, batch_size=batch_size, return_nll=True)
    torch.testing.assert_close(nll, ref)
    explicit = kin.in_context_curve(model, seq[:, :-1], targets=seq[:, 1:], return_nll=True)
    torch.testing.assert_close(explicit, ref)


def test_in_context_curve_accepts_output_objects_and_plain_callables(
    generator: torch.Generator,
) -> None:
    table = torch.randn(5, 5, generator=generator)
    seq = torch.randint(0, 5, (4, 7), generator=generator)

    def hf_like(ids: torch.Tensor) -> SimpleNamespace:  # a causal-LM output with .logits
        return SimpleNamespace(logits=table[ids], past_key_values=None)

    a = kin.in_context_curve(hf_like, seq, batch_size=3)
    b = kin.in_context_curve(lambda ids: table[ids], seq, batch_size=2)
    torch.testing.assert_close(a.mean, b.mean)


def test_in_context_curve_progress_fallback(
    generator: torch.Generator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("tqdm"):
            raise ImportError("no tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    seq = torch.randint(0, 5, (6, 4), generator=generator)
    kin.in_context_curve(lambda ids: torch.zeros(*ids.shape, 5), seq, batch_size=2, progress=True)
    assert "3/3 batches" in capsys.readouterr().err


def test_in_context_curve_errors() -> None:
    seq = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(TypeError, match=r"\.logits"):
        kin.in_context_curve(lambda ids: "nope", seq)
    with pytest.raises(ValueError, match=r"expected \(B, T, V\)"):
        kin.in_context_curve(lambda ids: torch.zeros(2, 3), seq)
    with pytest.raises(ValueError, match="Invalid batch_size"):
        kin.in_context_curve(lambda ids: torch.zeros(*ids.shape, 2), seq, batch_size=0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        kin.in_context_curve(lambda ids: torch.zeros(*ids.shape, 2), seq[:, :1])
    with pytest.raises(TypeError, match="integer tensor"):
        kin.in_context_curve(lambda ids: ids, seq.float())


# ------------------------------------------------------------ isotonic fit
def _brute_isotonic(y: list[float], w: list[float]) -> list[float]:
    """Reference: the minimum over all partitions into blocks of consecutive points
    whose weighted means are non-increasing (exponential, tiny T only)."""
    T = len(y)
    best: tuple[float, list[float]] = (math.inf, [])
    for mask in range(1 << (T - 1)):
        cuts = [0] + [i + 1 for i in range(T - 1) if mask >> i & 1] + [T]
        fit: list[float] = []
        for s, e in itertools.pairwise(cuts):
            m = sum(y[i] * w[i] for i in range(s, e)) / sum(w[s:e])
            fit += [m] * (e - s)
        if all(a >= b - 1e-12 for a, b in itertools.pairwise(fit)):
            sse = sum(wi * (yi - fi) ** 2 for yi, fi, wi in zip(y, fit, w, strict=True))
            if sse < best[0]:
                best = (sse, fit)
    return best[1]


@pytest.mark.parametrize("T", [1, 2, 5, 8])
def test_isotonic_matches_brute_force(generator: torch.Generator, T: int) -> None:
    for _ in range(5):
        y = torch.randn(T, generator=generator, dtype=torch.float64)
        w = torch.rand(T, generator=generator, dtype=torch.float64) + 0.1
        fit = kin.isotonic_decreasing(y, w)
        assert (fit[1:] <= fit[:-1] + 1e-12).all()
        torch.testing.assert_close(
            fit, torch.tensor(_brute_isotonic(y.tolist(), w.tolist())).double()
        )


def test_isotonic_errors() -> None:
    with pytest.raises(ValueError, match="finite and positive"):
        kin.isotonic_decreasing(torch.ones(3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="must match"):
        kin.isotonic_decreasing(torch.ones(3), torch.ones(2))


# ------------------------------------------------------------ deceleration
def _power_law(generator: torch.Generator, N: int, T: int, noise: float) -> torch.Tensor:
    t = torch.arange(1, T + 1, dtype=torch.float64)
    return 0.8 + 1.5 * t**-0.6 + noise * torch.randn(N, T, generator=generator, dtype=torch.float64)


def test_deceleration_on_a_decelerating_curve(generator: torch.Generator) -> None:
    nll = _power_law(generator, 128, 200, 0.5)
    report = kin.deceleration(nll)
    assert report.decelerating
    assert report.drop_significant and report.drop > 0
    assert report.isotonic_residual < 1.5
    assert report.num_streams == 128 and report.num_positions == 200
    # the floor fit is reported (fragile), and here lands near the truth
    assert 0.0 <= report.floor < 1.0
    # same verdict from the Curve form
    curve = kin.velocity(nll)
    assert kin.deceleration(curve).decelerating
    assert kin.deceleration(nll.mean(0)).decelerating  # one averaged stream, robust noise
    # JSON-able
    d = report.to_dict()
    assert isinstance(d["noise"], list) and d["decelerating"] is True
    assert "decelerating" in report.summary()


def test_deceleration_rejects_noisy_rising_curve(generator: torch.Generator) -> None:
    # Local accelerations of a noisy rising curve are mostly ≤ 0 within noise,
    # which is why the verdict does not use that fraction.
    nll = _power_law(generator, 64, 200, 0.5).flip(-1)
    report = kin.deceleration(nll)
    assert not report.decelerating
    assert report.frac_nonpositive_acceleration > 0.9
    assert report.isotonic_residual > 2.0 or not report.drop_significant


def test_deceleration_rejects_a_flat_curve(generator: torch.Generator) -> None:
    nll = 1.0 + 0.3 * torch.randn(64, 100, generator=generator, dtype=torch.float64)
    assert not kin.deceleration(nll).decelerating


def test_deceleration_rejects_a_late_rise(generator: torch.Generator) -> None:
    # Falls overall, but rises significantly at the end: not monotone within noise.
    t = torch.arange(1, 201, dtype=torch.float64)
    mean = 1.0 + 2.0 * t**-0.5 + 0.5 * (t > 150).double()
    nll = mean + 0.2 * torch.randn(256, 200, generator=generator, dtype=torch.float64)
    report = kin.deceleration(nll)
    assert report.drop_significant
    assert report.isotonic_residual > 2.0
    assert not report.decelerating


def test_deceleration_of_noiseless_curves() -> None:
    t = torch.arange(1, 50, dtype=torch.float64)
    assert kin.deceleration(1 + 1 / t).decelerating
    assert not kin.deceleration(1 + t / 50).decelerating


def test_deceleration_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 positions"):
        kin.deceleration(torch.ones(1))
    with pytest.raises(ValueError, match="Invalid z value"):
        kin.deceleration(torch.ones(5), z=0.0)
    with pytest.raises(ValueError, match="Invalid window value"):
        kin.deceleration(torch.ones(5), window=3)
    with pytest.raises(ValueError, match="Invalid max_residual"):
        kin.deceleration(torch.ones(5), max_residual=-1.0)


def test_power_law_floor_fit_recovers_parameters() -> None:
    t = torch.arange(1, 301, dtype=torch.float64)
    floor, amp, alpha, rmse = kin.fit_power_law_floor(0.7 + 2.0 * t**-0.8)
    assert abs(floor - 0.7) < 0.02 and abs(amp - 2.0) < 0.1 and abs(alpha - 0.8) < 0.05
    assert rmse < 1e-2
    # a rising curve: constraints hold (A ≥ 0, v∞ ≥ 0), the fit degenerates to a constant
    floor, amp, _, _ = kin.fit_power_law_floor(t / 300)
    assert floor >= 0 and amp >= 0


# -------------------------------------------------------- efficiency metrics
def test_time_to_threshold() -> None:
    errors = torch.tensor([1.0, 0.7, 0.5, 0.55, 0.3])
    assert kin.time_to_threshold(errors, 0.5) == 2  # at or below
    assert kin.time_to_threshold(errors, 0.49) == 4
    assert kin.time_to_threshold(errors, 0.1) is None
    assert kin.time_to_threshold(errors, 2.0) == 0
    times = [0.0, 0.1, 0.4, 0.9, 1.6]
    assert kin.time_to_threshold(errors, 0.5, times=times) == (2, 0.4)
    assert kin.time_to_threshold(errors, 0.1, times=times) == (None, None)
    curve = Curve(errors.double(), torch.zeros(5, dtype=torch.float64))
    assert kin.time_to_threshold(curve, 0.5) == 2
    with pytest.raises(ValueError, match="times has 2 entries"):
        kin.time_to_threshold(errors, 0.5, times=[0.0, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        kin.time_to_threshold(torch.ones(2, 2), 0.5)
    with pytest.raises(ValueError, match="Invalid threshold"):
        kin.time_to_threshold(errors, math.nan)


def test_learning_velocity(generator: torch.Generator) -> None:
    errors = torch.rand(9, generator=generator, dtype=torch.float64)
    tau = kin.learning_velocity(errors)
    torch.testing.assert_close(
        tau, torch.tensor([errors[n - 1] - errors[n] for n in range(1, 9)]).double()
    )
    # telescoping: Σ τ = ε(s_0) − ε(s_last)
    assert math.isclose(float(tau.sum()), float(errors[0] - errors[-1]), rel_tol=1e-12)


# ------------------------------------------------------------------ plots
def test_plot_kinematics_writes_png(tmp_path, generator: torch.Generator) -> None:
    pytest.importorskip("matplotlib")
    nll = _power_law(generator, 16, 50, 0.3)
    path = tmp_path / "fig.png"
    fig = kin.plot_kinematics(
        {"model": kin.velocity(nll), "single": nll[0]}, floor=0.8, title="t", path=str(path)
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 2
    kin.plot_kinematics({"model": kin.velocity(nll)}, floor=kin.velocity(nll))
    with pytest.raises(ValueError, match="curves is empty"):
        kin.plot_kinematics({})


# ------------------------------------------------ one curve in, never silently flattened
ONE_CURVE_FUNCTIONS = {
    "isotonic_decreasing": (kin.isotonic_decreasing, "y"),
    "fit_power_law_floor": (kin.fit_power_law_floor, "v"),
    "learning_velocity": (kin.learning_velocity, "errors"),
    "time_to_threshold": (lambda c: kin.time_to_threshold(c, 0.5), "curve"),
}


@pytest.mark.parametrize("name", sorted(ONE_CURVE_FUNCTIONS))
def test_functions_of_one_curve_refuse_2d_input_and_nan(name: str) -> None:
    # issue 15, item 11: a (N, T) input was flattened into one curve of N·T points,
    # and NaN passed straight through.
    fn, arg = ONE_CURVE_FUNCTIONS[name]
    two_d = 1.0 + torch.rand(3, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"{arg} must be one curve.*got shape \(3, 7\)"):
        fn(two_d)
    with pytest.raises(ValueError, match=rf"{arg} must be one curve"):
        fn(torch.tensor(1.0))
    curve = torch.linspace(2.0, 1.0, 9, dtype=torch.float64)
    for bad in (math.nan, math.inf):
        broken = curve.clone()
        broken[4] = bad
        with pytest.raises(ValueError, match=rf"{arg} must be finite, got {bad} at position 4"):
            fn(broken)
    fn(curve)  # one finite curve is fine


def test_weights_and_curve_objects_are_checked_too() -> None:
    curve = torch.linspace(2.0, 1.0, 9, dtype=torch.float64)
    for fn in (kin.isotonic_decreasing, kin.fit_power_law_floor):
        with pytest.raises(ValueError, match=r"weights must be one curve"):
            fn(curve, torch.ones(9, 1, dtype=torch.float64))
        with pytest.raises(ValueError, match="weights must be finite"):
            fn(curve, torch.full((9,), math.nan, dtype=torch.float64))
        with pytest.raises(ValueError, match="weights of shape"):
            fn(curve, torch.ones(8, dtype=torch.float64))
    # deceleration on a Curve: a 2-D mean is refused, a NaN stderr (one stream) is not.
    with pytest.raises(ValueError, match=r"curve\.mean must be one curve"):
        kin.deceleration(kin.Curve(torch.ones(2, 9), torch.ones(2, 9)))
    with pytest.raises(ValueError, match=r"curve\.mean must be finite"):
        kin.deceleration(kin.Curve(torch.full((9,), math.nan), torch.ones(9)))
    report = kin.deceleration(kin.Curve(curve, torch.full((9,), math.nan)))
    assert report.num_positions == 9
    with pytest.raises(ValueError, match=r"curves\['x'\] must be one curve"):
        kin.plot_kinematics({"x": torch.ones(2, 5)})


def test_acceleration_panel_slope_is_the_least_squares_slope(generator: torch.Generator) -> None:
    from fisherprec.kinematics import _bin_slope

    for n in (2, 3, 11):
        t = torch.arange(n, dtype=torch.float64)
        values = 0.3 - 0.07 * t + 0.01 * torch.randn(n, generator=generator, dtype=torch.float64)
        slope, se = _bin_slope(values, torch.full((n,), 0.5, dtype=torch.float64))
        want = torch.linalg.lstsq(torch.stack([torch.ones(n), t], 1).double(), values).solution
        assert slope == pytest.approx(float(want[1]), abs=1e-12)
        assert se == pytest.approx(0.5 / math.sqrt(float(((t - t.mean()) ** 2).sum())))
