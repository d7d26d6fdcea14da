r"""The linear-model theory in closed form: the generalization error
ε(X) = σ² + σ² tr((XᵀX)⁻¹ M) of a design, its lower bound σ² + σ²p/n and the
sample count that reaches a threshold, designs that attain the bound for every
n ≥ p (:func:`optimal_design`, :func:`plan`), and the error along a sequential
path with its T_sample.

No search happens here: everything is a formula or an exact construction,
which is what the data-selection algorithms (greedy, Frank–Wolfe, active) are
measured against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from fisherprec.design._common import (
    _as_matrix,
    _check_int,
    _check_real,
    _inverse_if_invertible,
    _second_moment,
    _trace_with,
)

# Relative tolerance for snapping a sample count (or a threshold comparison) that
# float rounding pushed just past an integer (or just above δ): 1.5·0.7 is
# 1.0499999999999998, which makes pσ²/(δ − σ²) = 2p·(1 + 4e-16). Rounding of the
# inputs is ~1e-16 relative, amplified by δ/(δ − σ²) in the subtraction; 1e-9
# covers that for δ − σ² down to ~1e-6·σ² while moving no genuine answer.
_RTOL = 1e-9


# ------------------------------------------------------------- closed forms
def generalization_error(
    X: torch.Tensor, sigma2: float, second_moment: torch.Tensor | None = None
) -> float:
    """ε(X) = σ² + σ² tr((XᵀX)⁻¹ M) of least squares on design X
    (docs/theory.md, "Fermat's principle and A-optimal design").

    Args:
        X: (n, p) design, rows are the observed inputs (tensor or array).
        sigma2: noise variance σ² ≥ 0.
        second_moment: M = E[x xᵀ] of the test inputs, (p, p) symmetric PSD;
            default I/p (test points uniform on the unit sphere).

    Returns:
        ε as a float (computed in float64); ``math.inf`` when XᵀX is singular
        (n < p or rows not spanning R^p): least squares is then not identified.

    Example:
        >>> import torch, fisherprec as fp
        >>> fp.design.generalization_error(torch.eye(4), sigma2=0.5)   # orthonormal: ε = 2σ²
        1.0
    """
    x = _as_matrix("X", X).to(torch.float64)
    sigma2 = _check_real("sigma2", sigma2, minimum=0.0)
    n, p = x.shape
    if p == 0:
        raise ValueError("X has no columns (p = 0)")
    m = _second_moment(second_moment, p, x.device)
    if n < p:
        return math.inf
    inverse = _inverse_if_invertible(x.T @ x)
    if inverse is None:
        return math.inf
    return sigma2 * (1.0 + _trace_with(inverse, m))


def min_error(n: int, p: int, sigma2: float) -> float:
    """min over unit-norm designs of ε = σ² + σ² p / n (attained iff XᵀX = (n/p) I).

    Returns ``math.inf`` for n < p (no design of fewer than p points identifies β).

    Example:
        >>> import fisherprec as fp
        >>> fp.design.min_error(128, 64, 1.0)
        1.5
    """
    n = _check_int("n", n, 0)
    p = _check_int("p", p, 1)
    sigma2 = _check_real("sigma2", sigma2, minimum=0.0)
    if n < p:
        return math.inf
    return sigma2 + sigma2 * p / n


def min_samples(threshold: float, p: int, sigma2: float, *, rtol: float = _RTOL) -> int:
    """Fewest observations for which some design reaches ε ≤ δ: ⌈pσ²/(δ − σ²)⌉.

    The ceiling is robust to floating-point rounding of the inputs: a quotient
    within a relative ``rtol`` (default 1e-9) of an integer counts as that integer,
    so δ = 1.5·0.7 (= 1.0499999999999998) with σ² = 0.7 gives 2p, not 2p + 1.
    The answer is at least p: below p points XᵀX is singular and ε is unbounded
    (for δ ≥ 2σ² the formula alone would go below p).

    Raises:
        ValueError: for δ ≤ σ² (the error never falls to σ²: no finite sample
            count reaches it) and for invalid p, σ².

    Example:
        >>> import fisherprec as fp
        >>> fp.design.min_samples(2.0, 10, 1.0), fp.design.min_samples(1.5, 10, 1.0)
        (10, 20)
    """
    p = _check_int("p", p, 1)
    sigma2 = _check_real("sigma2", sigma2, minimum=0.0)
    rtol = _check_real("rtol", rtol, minimum=0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError("Invalid threshold value: nan")
    if threshold <= sigma2:
        raise ValueError(
            f"Invalid threshold value: {threshold} (must exceed sigma2={sigma2}: "
            "ε = σ² + σ²·tr(...) > σ² for every finite design)"
        )
    quotient = p * sigma2 / (threshold - sigma2)
    nearest = round(quotient)
    count = nearest if abs(quotient - nearest) <= rtol * max(1.0, quotient) else math.ceil(quotient)
    return max(p, int(count))


# ---------------------------------------------------------- optimal designs
def _random_orthogonal(p: int, generator: torch.Generator | None) -> torch.Tensor:
    """A Haar-distributed orthogonal p×p matrix (QR of a Gaussian, signs fixed)."""
    g = torch.randn(p, p, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.sign(r.diagonal()) + 0.5)


def optimal_design(n: int, p: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n unit-norm rows with XᵀX = (n/p) I exactly, for every n ≥ p.

    A unit-norm tight frame (a harmonic frame): row k has, for each frequency f,
    the pair √(2/p)·(cos 2πkf/n, sin 2πkf/n), plus the constant 1/√p when p is
    odd. Frequencies are f = 1, …, (p−1)/2 for odd p and the half-integers
    f = ½, 3/2, …, (p−1)/2 for even p. Every product of two columns is a sum
    Σ_k cos(2πk m/n) with m = f ± f' a non-zero integer of size < n (or ½·n at
    most for the half-integer doubles, which also stay below n), which vanishes,
    so XᵀX = (n/p) I for all n ≥ p — not only for multiples of p, unlike stacked
    Stiefel blocks. Rows are unit norm because cos² + sin² = 1.

    Args:
        n: number of points, n ≥ p.
        p: dimension, p ≥ 1.
        generator: when given, the frame is rotated by a random (Haar) orthogonal
            matrix drawn from it: still tight and unit norm, no longer axis-aligned.

    Returns:
        (n, p) float64 tensor; ‖XᵀX − (n/p) I‖ is at float64 rounding (~1e-14·n).

    Example:
        >>> import torch, fisherprec as fp
        >>> X = fp.design.optimal_design(7, 3)
        >>> torch.allclose(X.T @ X, torch.eye(3, dtype=torch.float64) * 7 / 3, atol=1e-12)
        True
    """
    n = _check_int("n", n, 1)
    p = _check_int("p", p, 1)
    if n < p:
        raise ValueError(
            f"Invalid n value: {n} (must be >= p={p}: fewer than p points cannot make XᵀX ∝ I)"
        )
    k = torch.arange(n, dtype=torch.float64)
    if p % 2:
        freqs = torch.arange(1, (p - 1) // 2 + 1, dtype=torch.float64)
    else:
        freqs = torch.arange(1, p // 2 + 1, dtype=torch.float64) - 0.5
    # 2πkf/n with the product k·f reduced mod n first keeps the angle small (exact
    # for integer f; for half-integer f, 2kf is an integer reduced mod 2n).
    twice = torch.remainder(2 * k[:, None] * freqs[None, :], 2 * n)
    angles = math.pi * twice / n
    scale = math.sqrt(2.0 / p)
    pairs = torch.stack((torch.cos(angles), torch.sin(angles)), dim=2).reshape(n, -1) * scale
    if p % 2:
        pairs = torch.cat((torch.full((n, 1), 1.0 / math.sqrt(p), dtype=torch.float64), pairs), 1)
    if generator is not None:
        pairs = pairs @ _random_orthogonal(p, generator)
    return pairs


@dataclass(frozen=True)
class DesignPath:
    """A sequential design and the error after each observation.

    Attributes:
        X: (steps, p) float64 rows, in the order they are observed.
        errors: (steps,) float64, ε after the first m rows (``inf`` while XᵀX is singular).
        bound: (steps,) float64, min_error(m, p, σ²): the best any m-point design can do.
    """

    X: torch.Tensor
    errors: torch.Tensor
    bound: torch.Tensor

    def t_sample(self, threshold: float) -> int | None:
        """Samples to reach ε ≤ threshold along this path (see :func:`t_sample`)."""
        return t_sample(self.errors, threshold)


def plan(
    p: int, steps: int, *, sigma2: float = 1.0, generator: torch.Generator | None = None
) -> DesignPath:
    """The block-wise optimal sequential path of Insight 2: blocks of p orthonormal points.

    No single point keeps XᵀX ∝ I (rank 1 versus rank p), but each completed
    block of an orthonormal basis adds I, so after kp observations XᵀX = kI and
    ε = min_error(kp). Inside a block, after j more points of the next basis,
    XᵀX has eigenvalues k + 1 (j times) and k, so

        ε = σ² (1 + (j/(k+1) + (p − j)/k) / p),

    which is the best any j unit points can add to kI (the trace of the inverse
    is convex in the eigenvalues and rank ≤ j): each step of the path is optimal
    given the previous ones, and the path touches the lower bound at every
    multiple of p. It reaches 2σ² after p samples and 1.5σ² after 2p.

    Args:
        p: dimension.
        steps: number of observations.
        sigma2: noise variance σ².
        generator: when given, each block is a random orthonormal basis (a Stiefel
            matrix, as in the paper); otherwise the standard basis.

    Example:
        >>> import fisherprec as fp
        >>> path = fp.design.plan(4, 12, sigma2=1.0)
        >>> path.t_sample(2.0), path.t_sample(1.5)
        (4, 8)
    """
    p = _check_int("p", p, 1)
    steps = _check_int("steps", steps, 1)
    sigma2 = _check_real("sigma2", sigma2, minimum=0.0)
    blocks = -(-steps // p)
    if generator is None:
        basis = [torch.eye(p, dtype=torch.float64)] * blocks
    else:
        basis = [_random_orthogonal(p, generator) for _ in range(blocks)]
    x = torch.cat(basis)[:steps]
    m = torch.arange(1, steps + 1, dtype=torch.float64)
    full = torch.div(m, p, rounding_mode="floor")
    j = m - full * p
    trace = torch.where(full > 0, j / (full + 1) + (p - j) / full.clamp_min(1), torch.inf)
    errors = sigma2 * (1 + trace / p)
    bound = torch.where(m >= p, sigma2 * (1 + p / m), torch.inf)
    return DesignPath(X=x, errors=errors, bound=bound)


# --------------------------------------------------------- path utilities
def path_errors(
    X: torch.Tensor, sigma2: float, second_moment: torch.Tensor | None = None
) -> torch.Tensor:
    """ε after each prefix of a sequential design X (rows in observation order).

    Returns a (n,) float64 tensor: ``errors[m-1]`` = generalization_error(X[:m]),
    ``inf`` while the prefix does not span R^p. Exact (a Cholesky per prefix).

    Example:
        >>> import torch, fisherprec as fp
        >>> fp.design.path_errors(torch.eye(2), 1.0)
        tensor([inf, 2.], dtype=torch.float64)
    """
    x = _as_matrix("X", X).to(torch.float64)
    sigma2 = _check_real("sigma2", sigma2, minimum=0.0)
    n, p = x.shape
    m = _second_moment(second_moment, p, x.device)
    gram = torch.zeros(p, p, dtype=torch.float64, device=x.device)
    out = torch.full((n,), math.inf, dtype=torch.float64)
    for i in range(n):
        gram += torch.outer(x[i], x[i])
        if i + 1 >= p:
            inverse = _inverse_if_invertible(gram)
            if inverse is not None:
                out[i] = sigma2 * (1.0 + _trace_with(inverse, m))
    return out


def t_sample(
    path: Any,
    threshold: float,
    *,
    sigma2: float | None = None,
    second_moment: torch.Tensor | None = None,
    rtol: float = _RTOL,
) -> int | None:
    """T_sample(δ): the number of observations until the error first reaches ≤ δ (paper eq. 5).

    Args:
        path: one of
            - a 1-D sequence/tensor of errors, ``path[m-1]`` the error after m observations;
            - an object with an ``errors`` attribute (:class:`DesignPath`,
              :class:`GreedyResult`, …);
            - a 2-D design (rows in observation order), whose errors are computed
              with :func:`path_errors` (``sigma2`` required).
        threshold: δ.
        rtol: an error within a relative ``rtol`` above δ counts as reaching it
            (float rounding; default 1e-9, as in :func:`min_samples`).

    Returns:
        m (1-based), or ``None`` when the path never reaches δ.

    Example:
        >>> import fisherprec as fp
        >>> fp.design.t_sample([3.0, 2.5, 1.9, 2.1], 2.0)
        3
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
    if math.isnan(threshold):
        raise ValueError("Invalid threshold value: nan")
    rtol = _check_real("rtol", rtol, minimum=0.0)
    errors = getattr(path, "errors", path)
    if not isinstance(errors, torch.Tensor):
        errors = torch.as_tensor(errors, dtype=torch.float64)
    if errors.dim() == 2:
        if sigma2 is None:
            raise ValueError("t_sample of a design matrix needs sigma2")
        errors = path_errors(errors, sigma2, second_moment)
    elif errors.dim() != 1:
        raise ValueError(
            f"path must be 1-D errors or a 2-D design, got shape {tuple(errors.shape)}"
        )
    errors = errors.to(torch.float64).cpu()
    if bool(torch.isnan(errors).any()):
        raise ValueError("path errors contain NaN")
    limit = threshold + rtol * abs(threshold)
    hits = torch.nonzero(errors <= limit)
    return int(hits[0]) + 1 if hits.numel() else None
