"""Validation and float64 linear algebra shared by the design modules: argument
checks, the second moment M (None meaning I/p), tr(B M), a Cholesky inverse
that reports singularity, and the pool checks and chunked quadratic forms
x_iᵀBx_i, x_iᵀBMBx_i that both :func:`greedy` and :func:`frank_wolfe` score
candidates with.

One place for them so that every entry point rejects bad input with the same
messages and computes ε in the same precision.
"""

from __future__ import annotations

import math

import torch

from fisherprec import ops

# Rows per chunk when quadratic forms over a large pool are computed in torch.
_CHUNK_ROWS = 1 << 15


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
