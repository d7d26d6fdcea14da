"""Information kinematics (docs/theory.md, "Information kinematics and efficiency metrics"; paper §2, Insight 1).

For a token stream x_1, x_2, … and a predictive model p, with ℓ a
log-likelihood and loss = −ℓ (all quantities in nats):

- velocity      v(t) = −log p(x_t | x_<t)   (the per-token loss)
- position      I(x≤t) = −log p(x_1..x_t) = Σ_{i≤t} v(i)
- acceleration  a(t) = v(t+1) − v(t)

Positions are 0-based here: ``velocity(nll)[t]`` is the loss of the (t+1)-th
predicted token, and ``acceleration`` has one entry fewer than ``velocity``.
Insight 1 says the *expected* in-context velocity E[v(t)] is non-increasing
and bounded below (by the data's entropy), so learning decelerates;
:func:`deceleration` tests that claim on a measured curve, with its noise.

Inputs are per-token negative log-likelihoods shaped (T,) (one stream) or
(N, T) (N streams, e.g. held-out sequences); logits (…, T, V) with integer
targets (…, T) are accepted instead. For (N, T) every quantity is computed per
stream and averaged, and the standard error of that mean comes with it as a
:class:`Curve`.

Sample and compute efficiency (paper eq. 5): :func:`time_to_threshold` gives
T_sample(δ) (and T_compute(δ) with wall-clock times); :func:`learning_velocity`
gives τ_n = ε(s_{n−1}) − ε(s_n).

Example:
    >>> import torch, fisherprec as fp
    >>> nll = torch.tensor([3.0, 2.0, 1.5, 1.25])
    >>> fp.kinematics.position(nll)
    tensor([3.0000, 5.0000, 6.5000, 7.7500], dtype=torch.float64)
    >>> fp.kinematics.acceleration(nll)
    tensor([-1.0000, -0.5000, -0.2500], dtype=torch.float64)
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "Curve",
    "DecelerationReport",
    "acceleration",
    "deceleration",
    "in_context_curve",
    "isotonic_decreasing",
    "learning_velocity",
    "nll_from_logits",
    "plot_kinematics",
    "position",
    "time_to_threshold",
    "velocity",
]


class Curve(NamedTuple):
    """A mean curve over N streams and the standard error of that mean.

    ``stderr`` is the sample standard deviation over streams divided by √N
    (NaN where N = 1: one stream carries no noise estimate).
    """

    mean: torch.Tensor
    stderr: torch.Tensor


# ---------------------------------------------------------------- inputs
def nll_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL −log softmax(logits)[target] in nats, float64, shaped like ``targets``.

    ``logits`` is (…, T, V) and ``targets`` (…, T) of integer class indices.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point tensor of shape (..., T, V)")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex():
        raise TypeError("targets must be an integer tensor of shape (..., T)")
    if logits.dim() < 2 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} do not match targets of shape "
            f"{tuple(targets.shape)}: expected logits (..., T, V) and targets (..., T)"
        )
    vocab = logits.shape[-1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(f"targets must lie in [0, {vocab}) (the logits' last dimension)")
    flat = logits.reshape(-1, vocab)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()  # log-softmax in half precision loses the small losses
    nll = F.cross_entropy(flat, targets.reshape(-1).long(), reduction="none")
    return nll.to(torch.float64).reshape(targets.shape)


def _per_token(
    nll: torch.Tensor | None, logits: torch.Tensor | None, targets: torch.Tensor | None
) -> torch.Tensor:
    """The (T,) or (N, T) float64 NLL matrix from either input form."""
    if nll is not None:
        if logits is not None or targets is not None:
            raise ValueError("pass either nll, or logits and targets, not both")
        if not isinstance(nll, torch.Tensor):
            nll = torch.as_tensor(nll)
        if not (nll.is_floating_point()):
            raise TypeError(f"nll must be a floating-point tensor, got dtype {nll.dtype}")
        if nll.dim() not in (1, 2):
            raise ValueError(f"nll must have shape (T,) or (N, T), got {tuple(nll.shape)}")
        out = nll.detach().to(torch.float64)
    else:
        if logits is None or targets is None:
            raise ValueError("pass nll, or both logits and targets")
        if targets.dim() not in (1, 2):
            raise ValueError(f"targets must have shape (T,) or (N, T), got {tuple(targets.shape)}")
        out = nll_from_logits(logits.detach(), targets)
    if out.shape[-1] == 0:
        raise ValueError("nll holds no tokens (T = 0)")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("nll contains NaN or infinite values")
    return out


def _one_curve(name: str, values: Any, *, allow_nan: bool = False) -> torch.Tensor:
    """``values`` as a float64 (T,) tensor: exactly one curve, finite (or NaN
    where ``allow_nan``, e.g. the standard error of a single stream)."""
    try:
        out = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a 1-D sequence of numbers: {err}") from err
    if out.dim() != 1:
        raise ValueError(
            f"{name} must be one curve, a 1-D tensor of shape (T,), got shape "
            f"{tuple(out.shape)}; for several streams pass one at a time or their mean"
        )
    bad = torch.isinf(out) if allow_nan else ~torch.isfinite(out)
    if bool(bad.any()):
        t = int(bad.nonzero()[0])
        raise ValueError(f"{name} must be finite, got {float(out[t])} at position {t}")
    return out.detach()


def _mean_and_stderr(per_stream: torch.Tensor) -> torch.Tensor | Curve:
    if per_stream.dim() == 1:
        return per_stream
    n = per_stream.shape[0]
    if n == 0:
        raise ValueError("nll holds no streams (N = 0)")
    mean = per_stream.mean(dim=0)
    if n == 1 or mean.numel() == 0:
        return Curve(mean, torch.full_like(mean, math.nan))
    return Curve(mean, per_stream.std(dim=0, correction=1) / math.sqrt(n))


# ------------------------------------------------------------ kinematics
def velocity(
    nll: torch.Tensor | None = None,
    *,
    logits: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
) -> torch.Tensor | Curve:
    """v(t) = −log p(x_t | x_<t): the per-token loss in nats (float64).

    (T,) input → a (T,) tensor; (N, T) input → :class:`Curve` (mean over the N
    streams and its standard error).
    """
    return _mean_and_stderr(_per_token(nll, logits, targets))


def position(
    nll: torch.Tensor | None = None,
    *,
    logits: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
) -> torch.Tensor | Curve:
    """I(x≤t) = −log p(x_1..x_t) = Σ_{i≤t} v(i): cumulative information in nats.

    (T,) input → a (T,) tensor; (N, T) input → :class:`Curve`.
    """
    return _mean_and_stderr(_per_token(nll, logits, targets).cumsum(dim=-1))


def acceleration(
    nll: torch.Tensor | None = None,
    *,
    logits: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
) -> torch.Tensor | Curve:
    """a(t) = v(t+1) − v(t), length T − 1 (negative while learning proceeds).

    Differences are taken per stream before averaging, so the standard error of
    an (N, T) input accounts for the correlation between neighbouring tokens.
    """
    return _mean_and_stderr(torch.diff(_per_token(nll, logits, targets), dim=-1))


# ------------------------------------------------------- in-context curve
class _ProgressBar:
    """A progress bar: tqdm when installed, else a plain line on stderr."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.total, self.enabled, self.desc = total, enabled, desc
        self.done = 0
        self._bar = None
        self._last = 0.0
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=desc, unit="batch", leave=False)

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= 1.0 or self.done == self.total:
            self._last = now
            print(f"\r{self.desc}: {self.done}/{self.total} batches", end="", file=sys.stderr)
            if self.done == self.total:
                print(file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _logits_of(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", output)  # Hugging Face ModelOutput, or a tensor
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            "model must return a logits tensor (B, T, V) or an object with a .logits "
            f"tensor, got {type(output).__name__}"
        )
    return logits


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def in_context_curve(
    model: Callable[[torch.Tensor], Any],
    sequences: torch.Tensor,
    batch_size: int = 32,
    *,
    targets: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    return_nll: bool = False,
) -> Curve | torch.Tensor:
    """Per-position mean NLL v(t) of a next-token model over many sequences.

    Args:
        model: any callable mapping token ids (B, T) to logits (B, T, V), or to
            an object with a ``.logits`` tensor (e.g. a Hugging Face causal LM;
            duck-typed, transformers is not needed). An ``nn.Module`` is run in
            eval mode (its mode is restored afterwards) under no_grad.
        sequences: (N, T + 1) integer tokens: inputs are ``sequences[:, :-1]``
            and targets ``sequences[:, 1:]``. With ``targets`` given,
            ``sequences`` (N, T) are the inputs themselves.
        batch_size: sequences per forward call.
        device: where to run the model (default: where ``sequences`` are).
        progress: show a progress bar (tqdm if installed, else a plain line on
            stderr); None shows one for runs of 20 or more batches on a terminal.
        return_nll: return the (N, T) float64 per-token NLL matrix instead of
            its mean curve.

    Returns:
        :class:`Curve` of the mean per-position loss (nats) and its standard
        error over the N sequences; or the (N, T) matrix with ``return_nll``.
        Position t = 0 is the first predicted token (context of one token).

    Example:
        >>> import torch, fisherprec as fp
        >>> model = lambda ids: torch.zeros(*ids.shape, 4)  # uniform over 4 tokens
        >>> curve = fp.kinematics.in_context_curve(model, torch.randint(0, 4, (8, 6)))
        >>> torch.allclose(curve.mean, torch.full((5,), float(torch.log(torch.tensor(4.0)))).double())
        True
    """
    if batch_size < 1:
        raise ValueError(f"Invalid batch_size value: {batch_size}")
    if not isinstance(sequences, torch.Tensor) or sequences.is_floating_point():
        raise TypeError("sequences must be an integer tensor of token ids")
    if sequences.dim() != 2:
        raise ValueError(f"sequences must have shape (N, T), got {tuple(sequences.shape)}")
    if targets is None:
        if sequences.shape[1] < 2:
            raise ValueError("sequences need at least 2 tokens (an input and a target)")
        inputs, targets = sequences[:, :-1], sequences[:, 1:]
    else:
        if targets.shape != sequences.shape:
            raise ValueError(
                f"targets of shape {tuple(targets.shape)} must match sequences of shape "
                f"{tuple(sequences.shape)}"
            )
        inputs = sequences
    if inputs.shape[0] == 0:
        raise ValueError("sequences holds no sequences (N = 0)")
    n = inputs.shape[0]
    num_batches = -(-n // batch_size)
    if progress is None:
        progress = num_batches >= 20 and sys.stderr.isatty()
    bar = _ProgressBar(num_batches, bool(progress), "in-context curve")
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module is not None and module.training
    if module is not None and was_training:
        module.eval()
    rows = []
    try:
        with torch.no_grad():
            for part in _batches(n, batch_size):
                x, y = inputs[part], targets[part]
                if device is not None:
                    x, y = x.to(device), y.to(device)
                logits = _logits_of(model(x))
                if logits.shape[:2] != x.shape:
                    raise ValueError(
                        f"model returned logits of shape {tuple(logits.shape)} for inputs of "
                        f"shape {tuple(x.shape)}: expected (B, T, V)"
                    )
                rows.append(nll_from_logits(logits, y).cpu())
                bar(1)
    finally:
        bar.close()
        if module is not None and was_training:
            module.train()
    nll = torch.cat(rows)
    if return_nll:
        return nll
    curve = velocity(nll)
    assert isinstance(curve, Curve)
    return curve


# ---------------------------------------------------------- deceleration
def _curve_weights(weights: Any, curve: torch.Tensor, name: str) -> torch.Tensor:
    if weights is None:
        return torch.ones_like(curve)
    w = _one_curve("weights", weights)
    if w.shape != curve.shape:
        raise ValueError(
            f"weights of shape {tuple(w.shape)} must match {name} of shape {tuple(curve.shape)}"
        )
    if bool((w <= 0).any()):
        raise ValueError("weights must be finite and positive")
    return w


def isotonic_decreasing(y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted least-squares non-increasing fit of ``y`` (pool adjacent violators).

    Minimises Σ w_t (y_t − f_t)² over non-increasing f; float64, O(T).

    Example:
        >>> import torch, fisherprec as fp
        >>> fp.kinematics.isotonic_decreasing(torch.tensor([3.0, 1.0, 2.0, 0.0]))
        tensor([3.0000, 1.5000, 1.5000, 0.0000], dtype=torch.float64)
    """
    y = _one_curve("y", y)
    w = _curve_weights(weights, y, "y")
    # Stack of blocks (mean, weight, length), kept non-increasing in mean.
    means: list[float] = []
    wsum: list[float] = []
    lengths: list[int] = []
    for value, weight in zip(y.tolist(), w.tolist(), strict=True):
        means.append(value)
        wsum.append(weight)
        lengths.append(1)
        while len(means) > 1 and means[-2] < means[-1]:  # violator: pool the two blocks
            m2, w2, n2 = means.pop(), wsum.pop(), lengths.pop()
            total = wsum[-1] + w2
            means[-1] = (means[-1] * wsum[-1] + m2 * w2) / total
            wsum[-1] = total
            lengths[-1] += n2
    return torch.repeat_interleave(
        torch.tensor(means, dtype=torch.float64), torch.tensor(lengths, dtype=torch.long)
    )


@dataclass
class DecelerationReport:
    """What :func:`deceleration` found on a velocity curve v(t) (nats per token).

    Attributes:
        num_positions: T.
        num_streams: N (1 for a single stream or a given :class:`Curve`'s unknown N).
        noise: per-position standard error used as the noise scale (from the N
            streams; for one stream, a robust estimate from the spread of its
            first differences).
        frac_nonpositive_acceleration: fraction of t with a(t) ≤ z·se(a(t)) —
            local and noisy: it cannot tell a noisy rising curve from a falling
            one, so the verdict does not use it.
        isotonic_fit: the weighted least-squares non-increasing fit of v.
        isotonic_residual: mean of ((v − fit)/noise)², the residual of that fit
            relative to the noise (≲ 1 when v is non-increasing within noise).
        max_violation_z: largest (v − fit)/noise, the worst local rise in units of noise.
        drop: mean v over the first tenth of positions minus the last tenth.
        drop_stderr, drop_z: its standard error and drop / drop_stderr.
        drop_significant: drop_z > z.
        floor, amplitude, exponent, floor_fit_rmse: the constrained fit
            v(t) ≈ floor + amplitude · (t+1)^(−exponent) with amplitude ≥ 0,
            floor ≥ 0 (NaN when it failed). Fragile on noisy curves: reported,
            never used for the verdict.
        decelerating: the curve supports Insight 1 — the isotonic fit explains it
            within noise (isotonic_residual ≤ max_residual) and the overall drop
            is significant.
    """

    num_positions: int
    num_streams: int
    z: float
    noise: torch.Tensor
    frac_nonpositive_acceleration: float
    isotonic_fit: torch.Tensor
    isotonic_residual: float
    max_violation_z: float
    drop: float
    drop_stderr: float
    drop_z: float
    drop_significant: bool
    floor: float
    amplitude: float
    exponent: float
    floor_fit_rmse: float
    decelerating: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tensors as lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                out[key] = value.tolist()
        return out

    def summary(self) -> str:
        verdict = "decelerating" if self.decelerating else "NOT decelerating"
        return (
            f"{verdict}: drop {self.drop:.4f} nats (z = {self.drop_z:.1f}), isotonic residual "
            f"{self.isotonic_residual:.2f}× noise², worst rise {self.max_violation_z:.1f}σ, "
            f"a(t) ≤ 0 within noise at {100 * self.frac_nonpositive_acceleration:.0f}% of t, "
            f"fitted floor v∞ = {self.floor:.4f}"
        )


def _robust_noise(v: torch.Tensor) -> float:
    """Noise σ of one stream from its first differences (MAD, Gaussian-consistent)."""
    if v.numel() < 3:
        return 0.0
    d = torch.diff(v)
    mad = (d - d.median()).abs().median()
    return float(1.4826 * mad / math.sqrt(2.0))


def fit_power_law_floor(
    v: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[float, float, float, float]:
    """Constrained fit v(t) ≈ v∞ + A·(t+1)^(−α), A ≥ 0, v∞ ≥ 0, α ∈ [0.02, 4].

    A grid over α (log-spaced) with, for each α, the exact constrained weighted
    least squares in (v∞, A) (a 2-variable non-negative least squares: the
    unconstrained solution, else the best with one of them at 0).

    Returns:
        (v∞, A, α, weighted RMS residual); NaNs when fewer than 3 points.
    """
    v = _one_curve("v", v)
    w = _curve_weights(weights, v, "v")
    if v.numel() < 3:
        return (math.nan,) * 4  # type: ignore[return-value]
    t = torch.arange(1, v.numel() + 1, dtype=torch.float64)
    best = (math.inf, math.nan, math.nan, math.nan)
    for alpha in torch.logspace(math.log10(0.02), math.log10(4.0), 120, dtype=torch.float64):
        x = t.pow(-alpha)
        # Unconstrained weighted least squares in (floor, A).
        sw, sx, sxx = float(w.sum()), float((w * x).sum()), float((w * x * x).sum())
        sy, sxy = float((w * v).sum()), float((w * x * v).sum())
        det = sw * sxx - sx * sx
        candidates: list[tuple[float, float]] = []
        if det > 1e-300:
            floor = (sxx * sy - sx * sxy) / det
            amp = (sw * sxy - sx * sy) / det
            if floor >= 0 and amp >= 0:
                candidates.append((floor, amp))
        candidates.append((0.0, max(0.0, sxy / sxx)))  # floor at 0
        candidates.append((max(0.0, sy / sw), 0.0))  # amplitude at 0
        for floor, amp in candidates:
            sse = float((w * (v - floor - amp * x) ** 2).sum())
            if sse < best[0]:
                best = (sse, floor, amp, float(alpha))
    sse, floor, amp, alpha = best
    rmse = math.sqrt(sse / float(w.sum()))
    return floor, amp, alpha, rmse


def _as_curve(curve: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(mean, stderr or None, per-stream matrix or None) from any accepted input."""
    if isinstance(curve, Curve):
        mean = _one_curve("curve.mean", curve.mean)
        se = _one_curve("curve.stderr", curve.stderr, allow_nan=True)
        if se.shape != mean.shape:
            raise ValueError("curve.stderr must have the shape of curve.mean")
        return mean, se, None
    per = _per_token(torch.as_tensor(curve), None, None)
    if per.dim() == 1:
        return per, None, None
    return per.mean(dim=0), None, per


def deceleration(
    curve: torch.Tensor | Curve,
    *,
    z: float = 2.0,
    max_residual: float = 2.0,
    window: int | None = None,
) -> DecelerationReport:
    """Does a velocity curve decelerate (Insight 1)? A report with its noise.

    Args:
        curve: per-token NLLs (T,) of one stream or (N, T) of N streams, or a
            :class:`Curve` (mean and standard error, e.g. from
            :func:`in_context_curve`). v(t) is a loss in nats.
        z: how many standard errors count as significant.
        max_residual: the largest isotonic residual (in units of noise²) still
            called non-increasing.
        window: positions averaged at each end for the overall drop
            (default max(1, T // 10)).

    The verdict (``decelerating``) needs both a non-increasing fit that explains
    the curve within noise and a significant overall drop; the local count of
    non-positive accelerations and the power-law floor are reported only.

    Example:
        >>> import torch, fisherprec as fp
        >>> g = torch.Generator().manual_seed(0)
        >>> t = torch.arange(1, 201, dtype=torch.float64)
        >>> nll = 1.0 + 2.0 * t ** -0.5 + 0.3 * torch.randn(64, 200, generator=g, dtype=torch.float64)
        >>> fp.kinematics.deceleration(nll).decelerating
        True
        >>> fp.kinematics.deceleration(nll.flip(-1)).decelerating  # a rising curve
        False
    """
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"Invalid z value: {z}")
    if not (math.isfinite(max_residual) and max_residual > 0):
        raise ValueError(f"Invalid max_residual value: {max_residual}")
    mean, se, per = _as_curve(curve)
    T = mean.numel()
    if T < 2:
        raise ValueError(f"deceleration needs at least 2 positions, got {T}")
    w_len = window if window is not None else max(1, T // 10)
    if not (1 <= w_len <= T // 2):
        raise ValueError(f"Invalid window value: {window} (must be in [1, T // 2 = {T // 2}])")
    num_streams = 1 if per is None else per.shape[0]

    # Noise per position, and the same for accelerations and the drop.
    if per is not None and num_streams > 1:
        se = per.std(dim=0, correction=1) / math.sqrt(num_streams)
        acc = torch.diff(per, dim=-1)
        acc_mean, acc_se = acc.mean(0), acc.std(0, correction=1) / math.sqrt(num_streams)
        drops = per[:, :w_len].mean(1) - per[:, -w_len:].mean(1)
        drop, drop_se = float(drops.mean()), float(drops.std(correction=1) / math.sqrt(num_streams))
    else:
        if se is None or not bool(torch.isfinite(se).all()):
            se = torch.full_like(mean, _robust_noise(mean))
        acc_mean = torch.diff(mean)
        acc_se = torch.sqrt(se[1:] ** 2 + se[:-1] ** 2)
        drop = float(mean[:w_len].mean() - mean[-w_len:].mean())
        # Independent-noise approximation for the two window means.
        drop_se = float(
            torch.sqrt((se[:w_len] ** 2).sum() / w_len**2 + (se[-w_len:] ** 2).sum() / w_len**2)
        )
    # A noiseless curve (exact expectations) still needs a positive scale.
    scale_floor = 1e-12 + 1e-9 * float(mean.abs().max())
    se = se.clamp_min(scale_floor)
    drop_se = max(drop_se, scale_floor)

    frac_nonpos = float((acc_mean <= z * acc_se).double().mean())
    fit = isotonic_decreasing(mean, weights=se.pow(-2))
    standardized = (mean - fit) / se
    residual = float(standardized.pow(2).mean())
    max_violation = float(standardized.abs().max())
    drop_z = drop / drop_se
    drop_significant = drop_z > z
    floor, amp, alpha, rmse = fit_power_law_floor(mean, weights=se.pow(-2))
    return DecelerationReport(
        num_positions=T,
        num_streams=num_streams,
        z=z,
        noise=se,
        frac_nonpositive_acceleration=frac_nonpos,
        isotonic_fit=fit,
        isotonic_residual=residual,
        max_violation_z=max_violation,
        drop=drop,
        drop_stderr=drop_se,
        drop_z=drop_z,
        drop_significant=drop_significant,
        floor=floor,
        amplitude=amp,
        exponent=alpha,
        floor_fit_rmse=rmse,
        decelerating=bool(residual <= max_residual and drop_significant),
    )


# ------------------------------------------------ sample/compute efficiency
def _errors_1d(errors: Any, name: str) -> torch.Tensor:
    if isinstance(errors, Curve):
        errors = errors.mean
    return _one_curve(name, errors)


def time_to_threshold(
    curve: torch.Tensor | Sequence[float] | Curve,
    threshold: float,
    times: torch.Tensor | Sequence[float] | None = None,
) -> int | tuple[int | None, float | None] | None:
    """T_sample(δ): the first index at which the error is ≤ δ, or None if never.

    ``curve[n]`` is the generalization error ε after n observations (a
    :class:`Curve` uses its mean). With ``times`` (wall-clock or FLOPs at each
    index, same length) it returns ``(T_sample, T_compute)`` with
    ``T_compute = times[T_sample]`` (None when never reached).

    Example:
        >>> import fisherprec as fp
        >>> fp.kinematics.time_to_threshold([1.0, 0.6, 0.4, 0.5], 0.5)
        2
        >>> fp.kinematics.time_to_threshold([1.0, 0.6, 0.4], 0.5, times=[0.0, 1.5, 3.0])
        (2, 3.0)
    """
    errors = _errors_1d(curve, "curve")
    if not math.isfinite(threshold):
        raise ValueError(f"Invalid threshold value: {threshold}")
    hits = torch.nonzero(errors <= threshold).flatten()
    index = int(hits[0]) if hits.numel() else None
    if times is None:
        return index
    t = _errors_1d(times, "times")
    if t.shape != errors.shape:
        raise ValueError(f"times has {t.numel()} entries but curve has {errors.numel()}")
    return index, (None if index is None else float(t[index]))


def learning_velocity(errors: torch.Tensor | Sequence[float] | Curve) -> torch.Tensor:
    """τ_n = ε(s_{n−1}) − ε(s_n), n = 1..len−1 (positive while the error falls).

    Note the sign: the information *velocity* v(t) is a loss, whereas the
    learning velocity τ is the decrease of the error per observation.

    Example:
        >>> import fisherprec as fp
        >>> fp.kinematics.learning_velocity([1.0, 0.6, 0.5])
        tensor([0.4000, 0.1000], dtype=torch.float64)
    """
    return -torch.diff(_errors_1d(errors, "errors"))


# ------------------------------------------------------------------- plots
def _log_bins(T: int, per_decade: int = 5) -> list[tuple[int, int]]:
    """Geometric bins [s, e) covering 0..T-1 (for smoothing a(t) on a log axis)."""
    edges = sorted(
        {0, T - 1}
        | {
            min(T - 1, round(10 ** (k / per_decade)) - 1)
            for k in range(int(per_decade * math.log10(max(T, 2))) + 1)
        }
    )
    return [(s, e) for s, e in itertools.pairwise(edges) if e > s]


def _bin_slope(values: torch.Tensor, stderr: torch.Tensor) -> tuple[float, float]:
    """Least-squares slope of ``values`` against their positions, and its standard
    error from the per-position ``stderr`` (taken as independent)."""
    t = torch.arange(values.numel(), dtype=torch.float64)
    centred = t - t.mean()
    weights = centred / centred.pow(2).sum()
    return float((weights * values).sum()), float((weights.pow(2) * stderr.pow(2)).sum().sqrt())


def plot_kinematics(
    curves: dict[str, torch.Tensor | Curve],
    *,
    floor: float | torch.Tensor | Curve | None = None,
    floor_label: str = "entropy floor",
    title: str | None = None,
    path: str | None = None,
    dpi: int = 150,
) -> Any:
    """Velocity and acceleration panels in the style of the paper's Figure 1.

    Left: v(t) = E[−log p(x_t | x_<t)] per position with ±2 standard-error
    bands (log-scaled position axis). Right: a(t) = E[v(t+1) − v(t)], averaged
    over geometric bins of positions (the least-squares slope of v over all
    positions of each bin, with its ±2 s.e. band treating positions as
    independent), against the zero line: below zero is deceleration of the
    loss, i.e. learning.

    Args:
        curves: label → (T,) velocity or :class:`Curve` (e.g. from
            :func:`in_context_curve`).
        floor: an optional reference drawn dashed in the velocity panel: a
            number (horizontal line, e.g. the data's entropy) or a per-position
            curve (e.g. the exact entropy floor of each position).
        path: save the figure there (PNG, …) when given.

    Returns:
        the matplotlib Figure (built without pyplot, so no display is needed).

    Raises:
        ImportError: when matplotlib is not installed (``pip install fisherprec[plot]``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # optional extra
        raise ImportError(
            "plot_kinematics needs matplotlib: pip install 'fisherprec[plot]'"
        ) from err
    if not curves:
        raise ValueError("curves is empty: pass at least one label → curve")
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_v, ax_a = fig.subplots(1, 2)
    all_slopes: list[float] = []
    for label, curve in curves.items():
        if isinstance(curve, Curve):
            mean = curve.mean.double()
            se = torch.nan_to_num(curve.stderr.double(), nan=0.0)
        else:
            mean = _one_curve(f"curves[{label!r}]", curve)
            se = torch.zeros_like(mean)
        t = torch.arange(1, mean.numel() + 1)
        (line,) = ax_v.plot(t.numpy(), mean.numpy(), label=label, lw=1.4)
        if bool((se > 0).any()):
            ax_v.fill_between(
                t.numpy(), (mean - 2 * se).numpy(), (mean + 2 * se).numpy(),
                color=line.get_color(), alpha=0.2, lw=0,
            )  # fmt: skip
        bins = _log_bins(mean.numel())
        if bins:
            centers = torch.tensor([math.sqrt((s + 1) * (e + 1)) for s, e in bins])
            fits = [_bin_slope(mean[s : e + 1], se[s : e + 1]) for s, e in bins]
            slope = torch.tensor([fit[0] for fit in fits])
            slope_se = torch.tensor([fit[1] for fit in fits])
            all_slopes += slope.abs().tolist()
            ax_a.plot(centers.numpy(), slope.numpy(), marker=".", color=line.get_color(),
                      label=label, lw=1.2)  # fmt: skip
            if bool((slope_se > 0).any()):
                ax_a.fill_between(
                    centers.numpy(), (slope - 2 * slope_se).numpy(),
                    (slope + 2 * slope_se).numpy(), color=line.get_color(), alpha=0.2, lw=0,
                )  # fmt: skip
    if isinstance(floor, Curve):
        floor = floor.mean
    if isinstance(floor, torch.Tensor) and floor.dim() == 1:
        t = torch.arange(1, floor.numel() + 1)
        ax_v.plot(t.numpy(), floor.double().numpy(), color="black", ls="--", lw=1.0,
                  label=floor_label)  # fmt: skip
    elif floor is not None:
        ax_v.axhline(float(floor), color="black", ls="--", lw=1.0, label=floor_label)
    ax_a.axhline(0.0, color="black", lw=0.8)
    ax_v.set_xscale("log")
    ax_a.set_xscale("log")
    # Linear near 0, logarithmic beyond: accelerations span decades as v flattens.
    nonzero = sorted(x for x in all_slopes if x > 0)
    linthresh = max(1e-8, 0.5 * nonzero[len(nonzero) // 4]) if nonzero else 1e-4
    ax_a.set_yscale("symlog", linthresh=linthresh, linscale=2.0)
    if nonzero:  # decade ticks clear of the linear band, so labels do not collide at 0
        low = math.ceil(math.log10(1.5 * linthresh))
        high = math.floor(math.log10(nonzero[-1]))
        decades = [10.0**k for k in range(low, max(low, high) + 1)]
        ax_a.set_yticks([-d for d in reversed(decades)] + [0.0] + decades)
    ax_v.set_xlabel("position t (tokens of context)")
    ax_a.set_xlabel("position t")
    ax_v.set_ylabel("velocity v(t) = E[−log p(x_t | x_<t)]  (nats)")
    ax_a.set_ylabel("acceleration a(t) = E[v(t+1) − v(t)]")
    ax_v.set_title("in-context velocity")
    ax_a.set_title("in-context acceleration (log-binned)")
    ax_v.legend(fontsize=8)
    ax_a.legend(fontsize=8)
    for ax in (ax_v, ax_a):
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
