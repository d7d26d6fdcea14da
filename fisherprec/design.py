r"""Fermat's principle as experimental design: A-optimal data paths (docs/theory.md, "Fermat's principle and A-optimal design").

For the linear model y = xᵀβ + e, Var e = σ², fitted by least squares on a
design X ∈ R^{n×p} (rows x_i), the expected squared error on a test point
x ~ D with second moment M = E[x xᵀ] is

.. math::
    \varepsilon(X) = \sigma^2 + \sigma^2 \operatorname{tr}\big((X^\top X)^{-1} M\big).

With unit-norm rows and M = I/p, Jensen gives ε ≥ σ² + σ²p/n, attained iff
XᵀX = (n/p) I: the optimal path to an error δ needs ⌈pσ²/(δ − σ²)⌉ samples
(p for δ = 2σ², 2p for δ = 1.5σ²), while a random path needs about twice as
many. This module computes these quantities, builds optimal designs for every
n ≥ p, and selects data A-optimally from a pool (greedy with a native O(N·p)
Sherman–Morrison step, Frank–Wolfe with a certificate, and Fisher-based active
selection for nonlinear models).

Example:
    >>> import fisherprec as fp
    >>> fp.design.min_samples(2.0, p=64, sigma2=1.0), fp.design.min_samples(1.5 * 0.7, 64, 0.7)
    (64, 128)
    >>> X = fp.design.optimal_design(70, 64)            # 70 unit rows, XᵀX = (70/64) I
    >>> round(fp.design.generalization_error(X, 1.0), 12) == round(fp.design.min_error(70, 64, 1.0), 12)
    True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fisherprec import ops

__all__ = [
    "ActiveResult",
    "DesignPath",
    "FrankWolfeResult",
    "GreedyResult",
    "fisher_active",
    "frank_wolfe",
    "generalization_error",
    "greedy",
    "min_error",
    "min_samples",
    "optimal_design",
    "path_errors",
    "plan",
    "t_sample",
]

# Relative tolerance for snapping a sample count (or a threshold comparison) that
# float rounding pushed just past an integer (or just above δ): 1.5·0.7 is
# 1.0499999999999998, which makes pσ²/(δ − σ²) = 2p·(1 + 4e-16). Rounding of the
# inputs is ~1e-16 relative, amplified by δ/(δ − σ²) in the subtraction; 1e-9
# covers that for δ − σ² down to ~1e-6·σ² while moving no genuine answer.
_RTOL = 1e-9
# Rows per chunk when quadratic forms over a large pool are computed in torch.
_CHUNK_ROWS = 1 << 15


# ------------------------------------------------------------------ checks
def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"Invalid {name} value: {value} (must be >= {minimum})")
    return value


def _check_real(name: str, value: object, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" and >= {minimum}"
        raise ValueError(f"Invalid {name} value: {value} (must be finite{bound})")
    return value


def _as_matrix(name: str, x: object) -> torch.Tensor:
    """A finite 2-D float tensor (arrays and nested lists are converted)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a tensor or array of numbers: {err}") from None
    if x.is_sparse or x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {x.layout}")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; expected a floating dtype")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows are points), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _second_moment(m: object, p: int, device: torch.device) -> torch.Tensor | None:
    """None (isotropic I/p) or a validated symmetric PSD (p, p) float64 matrix."""
    if m is None:
        return None
    m = _as_matrix("second_moment", m).to(device=device, dtype=torch.float64)
    if m.shape != (p, p):
        raise ValueError(f"second_moment has shape {tuple(m.shape)}, expected ({p}, {p})")
    scale = float(m.abs().max()) or 1.0
    if float((m - m.T).abs().max()) > 1e-10 * scale:
        raise ValueError("second_moment must be symmetric")
    if float(torch.linalg.eigvalsh(m).min()) < -1e-10 * scale:
        raise ValueError("second_moment must be positive semi-definite")
    return (m + m.T) / 2


def _trace_with(b: torch.Tensor, m: torch.Tensor | None) -> float:
    """tr(B M) with M = I/p when m is None."""
    if m is None:
        return float(b.diagonal().sum()) / b.shape[0]
    return float((b * m).sum())


def _inverse_if_invertible(g: torch.Tensor, rcond: float = 0.0) -> torch.Tensor | None:
    """G⁻¹ for symmetric PSD G, or None when G is singular (Cholesky fails or
    λ_min ≤ rcond·λ_max)."""
    factor, info = torch.linalg.cholesky_ex(g)
    if int(info) != 0:
        return None
    if rcond > 0:
        eig = torch.linalg.eigvalsh(g)
        if float(eig[0]) <= rcond * float(eig[-1]):
            return None
    return torch.cholesky_inverse(factor)


# ------------------------------------------------------------- closed forms
def generalization_error(
    X: torch.Tensor, sigma2: float, second_moment: torch.Tensor | None = None
) -> float:
    """ε(X) = σ² + σ² tr((XᵀX)⁻¹ M) of least squares on design X (docs/theory.md, "Fermat's principle and A-optimal design").

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


# ------------------------------------------------------------------- greedy
def _quadratic_forms(
    x: torch.Tensor, b: torch.Tensor, m: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """s_i = x_iᵀ B x_i and t_i = x_iᵀ B M B x_i for every row (float64, chunked)."""
    n, p = x.shape
    s = torch.empty(n, dtype=torch.float64, device=x.device)
    t = torch.empty(n, dtype=torch.float64, device=x.device)
    for start in range(0, n, _CHUNK_ROWS):
        rows = x[start : start + _CHUNK_ROWS].to(torch.float64)
        y = rows @ b
        s[start : start + rows.shape[0]] = torch.linalg.vecdot(y, rows)
        ty = torch.linalg.vecdot(y, y) / p if m is None else torch.linalg.vecdot(y @ m, y)
        t[start : start + rows.shape[0]] = ty
    return s, t


def _row_sq_norms(x: torch.Tensor) -> torch.Tensor:
    """‖x_i‖² accumulated in float64, in one pass."""
    return torch.linalg.vector_norm(x, dim=1, dtype=torch.float64).square()


def _check_pool(pool: object) -> tuple[torch.Tensor, float]:
    """The validated pool and its native Σ‖x_i‖² (float64), which also screens for
    NaN/inf: a finite sum means finite entries (the full check runs only otherwise)."""
    pool = ops.check_tensor("pool", pool, dtypes=ops.FLOATING_DTYPES, ndim=2)
    if pool.shape[0] == 0 or pool.shape[1] == 0:
        raise ValueError(f"pool must be non-empty, got shape {tuple(pool.shape)}")
    total = float(ops.sum_of_squares([pool]))
    if not math.isfinite(total) and not bool(torch.isfinite(pool).all()):
        raise ValueError("pool contains NaN or inf")
    return pool, total


@dataclass(frozen=True)
class GreedyResult:
    """Result of :func:`greedy`.

    Attributes:
        indices: (n,) int64, distinct rows of the pool in the order chosen.
        errors: (n,) float64, ε after each choice (float64: exact inverse when
            the chosen rows first span R^p, Sherman–Morrison updates after); ``inf``
            while they do not yet span R^p.
        ridge: the absolute ridge λ used for scoring while XᵀX was singular.
    """

    indices: torch.Tensor
    errors: torch.Tensor
    ridge: float

    def t_sample(self, threshold: float) -> int | None:
        return t_sample(self.errors, threshold)


def greedy(
    pool: torch.Tensor,
    n: int,
    sigma2: float = 1.0,
    second_moment: torch.Tensor | None = None,
    *,
    ridge: float = 1e-6,
    rcond: float = 1e-10,
) -> GreedyResult:
    """Sequential A-optimal selection of n distinct rows of `pool`.

    Each step adds the candidate that most decreases tr(B M), B = (XᵀX)⁻¹, i.e.
    the one with the smallest ε after the step. With b = B x_k for the chosen
    x_k, Sherman–Morrison gives B' = B − b bᵀ/(1 + x_kᵀ b), and every candidate's
    s_i = x_iᵀBx_i and t_i = x_iᵀBMBx_i follow from two dot products, so a step
    is one native O(N·p) pass over the pool (:func:`fisherprec.ops.design_score_step`,
    OpenMP on the CPU, CUDA on the GPU) that also returns the best score Δ_i = t_i/(1+s_i).

    While XᵀX is singular (fewer than p independent points), scores use
    A = XᵀX + λI with λ = ``ridge`` × the mean squared row norm of the pool:
    every step then favours the candidate with the largest component outside the
    span of the chosen points. Once the chosen rows span R^p (λ_min(XᵀX) >
    ``rcond``·λ_max), B is recomputed as the exact (XᵀX)⁻¹ and every s_i, t_i
    once in O(N·p²); from then on the greedy is exact (λ = 0).

    Args:
        pool: (N, p) candidates (float32/float64/bfloat16/float16, CPU or CUDA).
        n: number of points to choose, 1 ≤ n ≤ N.
        sigma2: noise variance σ² (scales the reported errors only).
        second_moment: M = E[x xᵀ] of the test inputs, (p, p); default I/p.
        ridge: relative ridge while XᵀX is singular (> 0).
        rcond: relative eigenvalue below which XᵀX counts as singular.

    Returns:
        :class:`GreedyResult` with the chosen indices and ε after each choice.

    Example:
        >>> import torch, fisherprec as fp
        >>> g = torch.Generator().manual_seed(0)
        >>> pool = torch.nn.functional.normalize(torch.randn(1000, 8, generator=g), dim=1)
        >>> result = fp.design.greedy(pool, 16)
        >>> result.indices.unique().numel(), bool(result.errors[-1] < 1.6)
        (16, True)
    """
    return _greedy(pool, n, sigma2, second_moment, ridge, rcond, ops.design_score_step)


def _greedy(
    pool: torch.Tensor,
    n: int,
    sigma2: float,
    second_moment: torch.Tensor | None,
    ridge: float,
    rcond: float,
    score_step: Callable[..., torch.Tensor],
) -> GreedyResult:
    """:func:`greedy` with the scoring step as a parameter (the benchmark swaps in torch)."""
    pool, total = _check_pool(pool)
    # The choices are invariant under pool → pool/c while XᵀX scales by c⁻²:
    # select on a pool of unit scale (c a power of two, so dividing is exact)
    # so that neither XᵀX nor its inverse leaves float64 for a pool scaled
    # by 1e±200, and convert ε and λ back to the pool's own units.
    scale = _power_of_two_scale(pool)
    if scale != 1.0:
        pool = pool / scale
        total = float(ops.sum_of_squares([pool]))
    num, p = pool.shape
    n = _check_int("n", n, 1)
    if n > num:
        raise ValueError(f"Invalid n value: {n} (the pool has only {num} candidates)")
    sigma2 = _check_real("sigma2", sigma2, minimum=0.0)
    ridge = _check_real("ridge", ridge, minimum=0.0)
    if ridge == 0.0:
        raise ValueError("Invalid ridge value: 0.0 (must be > 0)")
    rcond = _check_real("rcond", rcond, minimum=0.0)
    device = pool.device
    m = _second_moment(second_moment, p, device)

    # Phase 1: ridge-regularised scoring, B = (XᵀX + λI)⁻¹ starting from I/λ.
    mean_sq = total / num
    lam = ridge * (mean_sq if 0 < mean_sq < math.inf else 1.0)
    b_mat = torch.eye(p, dtype=torch.float64, device=device) / lam
    if m is None:
        s = _row_sq_norms(pool) / lam
        t = s / (p * lam)
    else:
        s, t = _quadratic_forms(pool, b_mat, m)
    defined = False

    mask = torch.zeros(num, dtype=torch.bool, device=device)
    out = torch.empty(2, dtype=torch.float64, device=device)
    zeros = torch.zeros(p, dtype=torch.float64, device=device)
    b, c, beta, gamma = zeros, zeros, 0.0, 0.0
    gram = torch.zeros(p, p, dtype=torch.float64, device=device)
    indices = torch.empty(n, dtype=torch.int64)
    errors = torch.full((n,), math.inf, dtype=torch.float64)
    for k in range(n):
        score_step(pool, b, c, beta, gamma, 1.0, s, t, mask, out)
        index = int(out[1])
        if index < 0:  # cannot happen for n <= N with finite inputs
            raise RuntimeError("greedy: no candidate left to score")
        indices[k] = index
        mask[index] = True
        x = pool[index].to(torch.float64)
        gram += torch.outer(x, x)
        # Sherman–Morrison for the next step's pending update.
        b = b_mat @ x
        beta = 1.0 / (1.0 + float(x @ b))
        mb = b / p if m is None else m @ b  # M b
        c = b_mat @ mb  # B M b, with the B before this update
        gamma = float(b @ mb)
        b_mat -= beta * torch.outer(b, b)
        if not defined and k + 1 >= p:
            inverse = _inverse_if_invertible(gram, rcond)
            if inverse is not None:  # Phase 2: exact B = (XᵀX)⁻¹, λ = 0 from here on
                defined = True
                b_mat = inverse
                s, t = _quadratic_forms(pool, b_mat, m)
                b, c, beta, gamma = zeros, zeros, 0.0, 0.0
        if defined:  # B is exact at the switch, then kept by Sherman–Morrison (λ = 0)
            # tr(B M) of the original pool is tr(B' M)/c²; inf only if it
            # exceeds float64 itself.
            errors[k] = sigma2 * (1.0 + _trace_with(b_mat, m) / scale / scale)
    return GreedyResult(indices=indices, errors=errors, ridge=lam * scale * scale)


def _power_of_two_scale(pool: torch.Tensor) -> float:
    """2^⌊log2 max|x_ij|⌋ (1.0 for an all-zero pool)."""
    largest = float(pool.abs().amax())
    return 2.0 ** math.floor(math.log2(largest)) if largest > 0 else 1.0


# ------------------------------------------------------------- Frank-Wolfe
@dataclass(frozen=True)
class FrankWolfeResult:
    """Result of :func:`frank_wolfe`.

    Attributes:
        weights: (N,) float64 design weights on the simplex.
        objective: φ(w) = tr(A(w)⁻¹ M) of the returned weights, A(w) = Σ w_i x_i x_iᵀ.
        gap: the equivalence-theorem certificate max_i x_iᵀA⁻¹MA⁻¹x_i − φ(w) ≥ 0;
            φ(w) − φ* ≤ gap, and gap = 0 iff w is A-optimal.
        objectives, gaps: (iterations + 1,) float64 histories (before each step).
    """

    weights: torch.Tensor
    objective: float
    gap: float
    objectives: torch.Tensor
    gaps: torch.Tensor

    @property
    def lower_bound(self) -> float:
        """φ(w) − gap ≤ φ*: no design on this pool does better."""
        return self.objective - self.gap

    def error(self, n: int, sigma2: float = 1.0) -> float:
        """ε ≈ σ²(1 + φ/n) of n observations spread as the weights say (exact when n·w is integral)."""
        return sigma2 * (1.0 + self.objective / _check_int("n", n, 1))


def _line_search(phi: float, d: float, s: float, iters: int = 100) -> float:
    """argmin over α ∈ [0, 1) of φ((1−α)w + α e_j) = (φD − αd)/((1−α)D), D = 1 + α(s − 1),
    where d = x_jᵀA⁻¹MA⁻¹x_j and s = x_jᵀA⁻¹x_j (Sherman–Morrison). Convex in α:
    golden-section search."""

    def f(alpha: float) -> float:
        denom = 1.0 + alpha * (s - 1.0)
        return (phi * denom - alpha * d) / ((1.0 - alpha) * denom)

    lo, hi = 0.0, 1.0 - 1e-12
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    alpha = (lo + hi) / 2.0
    return alpha if f(alpha) < phi else 0.0


def frank_wolfe(
    pool: torch.Tensor,
    iters: int,
    *,
    second_moment: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    tol: float = 0.0,
    refresh_every: int = 50,
) -> FrankWolfeResult:
    """Continuous A-optimal design weights on a pool, by Frank–Wolfe with exact line search.

    Minimises φ(w) = tr(A(w)⁻¹ M), A(w) = Σ_i w_i x_i x_iᵀ, over the simplex.
    The gradient is ∂φ/∂w_i = −d_i with d_i = x_iᵀA⁻¹MA⁻¹x_i and Σ w_i d_i = φ,
    so the Frank–Wolfe duality gap is max_i d_i − φ: by the Kiefer–Wolfowitz
    equivalence theorem it is ≥ 0, zero exactly at the A-optimal design, and
    bounds the suboptimality, φ(w) − φ* ≤ gap. Each iteration moves weight to
    the vertex argmax d_i with the exact line-search step; A⁻¹ is kept by
    Sherman–Morrison and d_i by the same native O(N·p) step as :func:`greedy`
    (η = 0). Every ``refresh_every`` iterations A⁻¹ and every d_i are recomputed
    from the weights (O(N·p²)), which bounds rounding drift.

    Args:
        pool: (N, p) candidates spanning R^p.
        iters: number of Frank–Wolfe steps (≥ 0).
        second_moment: M, default I/p.
        weights: initial weights (N,), non-negative, summing to 1; default uniform.
        tol: stop early once gap ≤ tol·φ.
        refresh_every: recompute A⁻¹ and the d_i from the weights this often.

    Example:
        >>> import torch, fisherprec as fp
        >>> g = torch.Generator().manual_seed(0)
        >>> pool = torch.nn.functional.normalize(torch.randn(500, 4, generator=g), dim=1)
        >>> res = fp.design.frank_wolfe(pool, 200)
        >>> bool(res.gaps[-1] < res.gaps[0]), res.lower_bound <= res.objective
        (True, True)
    """
    pool, _ = _check_pool(pool)
    num, p = pool.shape
    iters = _check_int("iters", iters, 0)
    tol = _check_real("tol", tol, minimum=0.0)
    refresh_every = _check_int("refresh_every", refresh_every, 1)
    device = pool.device
    m = _second_moment(second_moment, p, device)
    if weights is None:
        w = torch.full((num,), 1.0 / num, dtype=torch.float64, device=device)
    else:
        w = ops.check_tensor("weights", weights, shape=(num,)).to(torch.float64).clone()
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights must be finite and non-negative")
        if abs(float(w.sum()) - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to 1, got {float(w.sum())}")

    def refresh() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        info = torch.zeros(p, p, dtype=torch.float64, device=device)
        for start in range(0, num, _CHUNK_ROWS):
            rows = pool[start : start + _CHUNK_ROWS].to(torch.float64)
            info += rows.T @ (rows * w[start : start + rows.shape[0], None])
        inverse = _inverse_if_invertible(info)
        if inverse is None:
            raise ValueError("the weighted pool does not span R^p: A(w) is singular, φ is infinite")
        s, t = _quadratic_forms(pool, inverse, m)
        return inverse, s, t

    # A⁻¹ = scale · B with B updated by Sherman–Morrison (the (1 − α) factors go to `scale`).
    b_mat, s, t = refresh()
    scale = 1.0
    mask = torch.zeros(num, dtype=torch.bool, device=device)
    out = torch.empty(2, dtype=torch.float64, device=device)
    zeros = torch.zeros(p, dtype=torch.float64, device=device)
    b, c, beta, gamma = zeros, zeros, 0.0, 0.0
    objectives: list[float] = []
    gaps: list[float] = []
    for it in range(iters + 1):
        ops.design_score_step(pool, b, c, beta, gamma, 0.0, s, t, mask, out)
        j = int(out[1])
        phi = scale * _trace_with(b_mat, m)
        gap = max(scale * scale * float(out[0]) - phi, 0.0)
        objectives.append(phi)
        gaps.append(gap)
        if it == iters or gap <= tol * phi:
            break
        alpha = _line_search(phi, scale * scale * float(t[j]), scale * float(s[j]))
        b, c, beta, gamma = zeros, zeros, 0.0, 0.0
        if alpha <= 0.0:
            continue
        w.mul_(1.0 - alpha)
        w[j] += alpha
        if (it + 1) % refresh_every == 0:
            b_mat, s, t = refresh()
            scale = 1.0
            continue
        # (1−α)A + α x xᵀ = (1−α)(A + κ x xᵀ), κ = α/(1−α); A⁻¹ = scale·B.
        kappa = alpha / (1.0 - alpha)
        x = pool[j].to(torch.float64)
        b = b_mat @ x
        beta = kappa * scale / (1.0 + kappa * scale * float(x @ b))
        mb = b / p if m is None else m @ b
        c = b_mat @ mb
        gamma = float(b @ mb)
        b_mat -= beta * torch.outer(b, b)
        scale /= 1.0 - alpha
    return FrankWolfeResult(
        weights=w.cpu(),
        objective=objectives[-1],
        gap=gaps[-1],
        objectives=torch.tensor(objectives, dtype=torch.float64),
        gaps=torch.tensor(gaps, dtype=torch.float64),
    )


# ------------------------------------------------------ Fisher active design
# Names accepted by fisher_active, resolved on fisherprec.fisher at call time
# (so estimators added later are found without an edit here).
_ESTIMATORS = {
    "full": "Dense",
    "dense": "Dense",
    "diag": "Diag",
    "block": "Block",
    "lowrank": "LowRank",
}


def _resolve_estimator(fisher: object) -> type:
    from fisherprec import fisher as fisher_module

    if isinstance(fisher, str):
        key = fisher.lower()
        if key not in _ESTIMATORS:
            raise ValueError(
                f"Invalid fisher value: {fisher!r} (choose from {', '.join(sorted(_ESTIMATORS))}, "
                "or pass a FisherEstimator subclass)"
            )
        cls = getattr(fisher_module, _ESTIMATORS[key], None)
        if cls is None:
            raise ValueError(
                f"fisher={fisher!r} needs fisherprec.fisher.{_ESTIMATORS[key]}, which this build "
                "does not have; use fisher='full' or pass a FisherEstimator subclass"
            )
        return cls
    if isinstance(fisher, type) and issubclass(fisher, fisher_module.FisherEstimator):
        return fisher
    raise TypeError(
        f"fisher must be a name or a FisherEstimator subclass, got {type(fisher).__name__}"
    )


def _fisher_factors(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    chunk_size: int | None,
) -> torch.Tensor:
    """(B, C, P) float64 rows U_x with F_x = U_xᵀ U_x, the Fisher contribution of each input."""
    from fisherprec.fisher import per_sample_grads

    def grads(y: torch.Tensor) -> torch.Tensor:
        return per_sample_grads(model, loss_fn, inputs, y, chunk_size=chunk_size).to(torch.float64)

    if targets is not None:  # empirical Fisher of the given labels: g gᵀ
        return grads(targets)[:, None, :]
    with torch.no_grad():
        outputs = model(inputs)
    batch = inputs.shape[0]
    if outputs.dim() == 0 or outputs.shape[0] != batch:
        raise ValueError(
            f"model outputs of shape {tuple(outputs.shape)} do not have the batch size {batch} first"
        )
    if outputs.dim() == 2 and outputs.shape[1] >= 2:  # logits over C classes
        probs = torch.softmax(outputs.to(torch.float64), dim=1)
        rows = [
            grads(torch.full((batch,), k, dtype=torch.long, device=inputs.device))
            * probs[:, k, None].sqrt()
            for k in range(outputs.shape[1])
        ]
        return torch.stack(rows, dim=1)
    if outputs.dim() == 1 or (outputs.dim() == 2 and outputs.shape[1] == 1):  # binary logit
        prob = torch.sigmoid(outputs.to(torch.float64)).reshape(batch, 1)
        one = torch.ones_like(outputs)
        return torch.stack(
            (grads(one) * prob.sqrt(), grads(torch.zeros_like(one)) * (1 - prob).sqrt()), dim=1
        )
    raise ValueError(
        f"cannot infer a predictive distribution from model outputs of shape {tuple(outputs.shape)} "
        "(expected (B, C) logits or (B,)/(B, 1) binary logits); pass pool_targets"
    )


@dataclass(frozen=True)
class ActiveResult:
    """Result of :func:`fisher_active`.

    Attributes:
        indices: (n,) int64 distinct pool rows in the order chosen.
        criterion: (n,) float64, tr((I_S + λI)⁻¹) after each choice, I_S the
            information of the labelled and chosen points as the estimator sees it.
        damping: the λ used.
    """

    indices: torch.Tensor
    criterion: torch.Tensor
    damping: float


def fisher_active(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pool_inputs: torch.Tensor,
    n: int,
    fisher: str | type = "diag",
    *,
    pool_targets: torch.Tensor | None = None,
    labeled_inputs: torch.Tensor | None = None,
    labeled_targets: torch.Tensor | None = None,
    damping: float | None = None,
    fisher_kwargs: dict[str, Any] | None = None,
    chunk_size: int | None = None,
) -> ActiveResult:
    """Choose the n pool points that most reduce tr(F⁻¹) of a nonlinear model (A-optimality).

    The information of a set S of inputs is I_S = Σ_{x∈S} F_x (at the model's
    current parameters). For classification, F_x is the *expected* Fisher under
    the model's predictive distribution, F_x = Σ_c p(c|x) g_c g_cᵀ with g_c the
    per-sample gradient of ``loss_fn`` for label c (so no labels are needed):
    model outputs of shape (B, C) are read as logits over C classes, (B,) or
    (B, 1) as binary logits (labels 1. and 0.); ``loss_fn`` must then be the
    negative log-likelihood (cross-entropy / BCE with logits). When
    ``pool_targets`` are given, F_x = g_y g_yᵀ (empirical Fisher of those labels),
    which is also the way to use regression losses.

    I_S is estimated by a package estimator (``fisher``: "diag", "full", "block",
    "lowrank", or a :class:`fisherprec.fisher.FisherEstimator` subclass) fed with
    the per-sample rows √(C p_c)·g_c, so that |S|·F̂ estimates I_S. Greedily, each
    step adds the candidate minimising tr((I_S + F_x + λI)⁻¹) as the estimator's
    structure gives it: closed forms for "diag" (Σ_i 1/(d_i + λ)) and "full"
    (Woodbury, a C×C solve per candidate); other estimators are evaluated by
    updating a copy per candidate (O(N·P³) per step, small models only).

    Args:
        model, loss_fn: as for :func:`fisherprec.fisher.per_sample_grads`.
        pool_inputs: (N, …) candidate inputs.
        n: points to choose (distinct), 1 ≤ n ≤ N.
        fisher: estimator structure, default "diag".
        pool_targets: labels for an empirical Fisher instead of the expected one.
        labeled_inputs, labeled_targets: points already observed (their
            information is the starting I_S; expected Fisher unless targets are given).
        damping: λ, a prior precision that keeps tr finite before I_S is full rank;
            default 1e-3 × the mean diagonal of the candidates' F_x.
        fisher_kwargs: extra keyword arguments for the estimator (e.g. block_size).
        chunk_size: passed to per_sample_grads.

    Example:
        >>> import torch, fisherprec as fp
        >>> g = torch.Generator().manual_seed(0)
        >>> model = torch.nn.Linear(3, 1)
        >>> pool = torch.randn(50, 3, generator=g)
        >>> res = fp.design.fisher_active(model, torch.nn.functional.binary_cross_entropy_with_logits,
        ...                               pool, 5, fisher="full")
        >>> res.indices.unique().numel()
        5
    """
    from fisherprec import fisher as fisher_module

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(pool_inputs, torch.Tensor) or pool_inputs.dim() == 0:
        raise ValueError("pool_inputs must be a batched tensor (leading batch dimension)")
    num = pool_inputs.shape[0]
    n = _check_int("n", n, 1)
    if n > num:
        raise ValueError(f"Invalid n value: {n} (the pool has only {num} candidates)")
    if damping is not None:
        damping = _check_real("damping", damping, minimum=0.0)
        if damping == 0.0:
            raise ValueError("Invalid damping value: 0.0 (must be > 0)")
    cls = _resolve_estimator(fisher)

    # Scores are computed on the CPU in float64 (P is small for these models).
    factors = _fisher_factors(model, loss_fn, pool_inputs, pool_targets, chunk_size).cpu()
    labeled = None
    if labeled_inputs is not None:
        labeled = _fisher_factors(model, loss_fn, labeled_inputs, labeled_targets, chunk_size).cpu()
        # Every point contributes the same number of rows (zero rows pad), so that
        # the estimator's mean over rows, times that number, is the mean F_x.
        rows = max(factors.shape[1], labeled.shape[1])
        factors = torch.nn.functional.pad(factors, (0, 0, 0, rows - factors.shape[1]))
        labeled = torch.nn.functional.pad(labeled, (0, 0, 0, rows - labeled.shape[1]))
    _, rows_per_point, params = factors.shape
    if not bool(torch.isfinite(factors).all()):
        raise ValueError("per-sample gradients of the pool contain NaN or inf")
    lam = damping
    if lam is None:
        mean_diag = float(factors.square().sum()) / (num * params)
        lam = 1e-3 * mean_diag if mean_diag > 0 else 1e-3
    estimator = cls(params, **(fisher_kwargs or {}))
    weight = math.sqrt(rows_per_point)

    count = 0
    if labeled is not None and labeled.shape[0]:
        estimator.update((labeled * weight).reshape(-1, params).to(estimator.device))
        count = labeled.shape[0]
    chosen = torch.zeros(num, dtype=torch.bool)
    indices = torch.empty(n, dtype=torch.int64)
    criterion = torch.empty(n, dtype=torch.float64)
    eye = torch.eye(params, dtype=torch.float64)
    dense_type = type(estimator) is fisher_module.Dense
    diag_cls = getattr(fisher_module, "Diag", None)
    diag_type = diag_cls is not None and type(estimator) is diag_cls
    for k in range(n):
        if dense_type or diag_type:
            if count:
                info = (
                    estimator.to_dense().cpu()
                    if dense_type
                    else torch.diag(
                        estimator.mv(
                            torch.ones(params, dtype=torch.float64, device=estimator.device)
                        )
                        .to(torch.float64)
                        .cpu()
                    )
                ) * count
            else:
                info = torch.zeros(params, params, dtype=torch.float64)
            if dense_type:
                inverse = torch.linalg.inv(info + lam * eye)
                ub = factors @ inverse  # (N, C, P)
                kernel = torch.eye(rows_per_point, dtype=torch.float64) + ub @ factors.mT
                gains = torch.linalg.solve(kernel, ub @ ub.mT).diagonal(dim1=1, dim2=2).sum(1)
                after = float(inverse.diagonal().sum()) - gains
            else:
                d = info.diagonal() + lam
                after = (1.0 / (d + factors.square().sum(1))).sum(1)
        else:
            after = torch.full((num,), math.inf, dtype=torch.float64)
            for i in range(num):
                if chosen[i]:
                    continue
                trial = copy.deepcopy(estimator)
                trial.update((factors[i] * weight).to(trial.device))
                info = trial.to_dense().cpu().to(torch.float64) * (count + 1)
                after[i] = float(torch.linalg.inv(info + lam * eye).diagonal().sum())
        after = after.masked_fill(chosen, math.inf)
        best = int(torch.argmin(after))
        indices[k] = best
        criterion[k] = float(after[best])
        chosen[best] = True
        estimator.update((factors[best] * weight).to(estimator.device))
        count += 1
    return ActiveResult(indices=indices, criterion=criterion, damping=lam)
