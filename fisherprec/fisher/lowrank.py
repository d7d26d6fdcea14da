"""Low-rank empirical Fisher over a window of recent gradients (docs/theory.md, "Exact inverse roots for each structure").

F = Σ_j σ_j² g_j g_jᵀ / Σ_j σ_j² over the last k = min(N, rank) observations
g_j (σ_j = decay^age; decay = 1 gives the plain mean (1/k) G Gᵀ). The window
G is an (rank, P) ring buffer; K = GᵀG (r×r, float64) is kept up to date one
row per inserted gradient, from the inner products computed in the same pass
that stores it. Products with F and (F + λI)^(-p) need only r×r work besides
two passes over G (``ops.lowrank_dots``: Gᵀv; ``ops.lowrank_combine``: G c).
"""

from __future__ import annotations

import torch

from fisherprec import ops
from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.registry import register


def small_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh of a small (r ≤ 256) matrix. On the CPU it runs on one
    thread: LAPACK's threaded path costs more in wake-ups than an r×r problem
    takes (measured 0.07 ms on one thread vs 0.5–86 ms on two for r = 32).

    A matrix holding NaN or Inf has no eigendecomposition: the result is then
    all NaN (propagated, as torch.optim propagates a non-finite gradient)
    instead of LAPACK's error."""
    if matrix.device.type != "meta" and not bool(torch.isfinite(matrix).all()):
        nan = torch.full_like(matrix, float("nan"))
        return nan[..., 0], nan
    if matrix.device.type != "cpu" or torch.get_num_threads() == 1:
        return torch.linalg.eigh(matrix)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(matrix)
    finally:
        torch.set_num_threads(threads)


def ring_position(inserted: int, rank: int) -> tuple[int, int]:
    """Where the next gradient goes in a ring-buffer window of `rank` columns
    after `inserted` have been written, and how many columns are filled then:
    (slot, k) = (inserted mod rank, min(inserted + 1, rank)). Columns fill
    slots 0, 1, … in order, then replace the oldest."""
    return inserted % rank, min(inserted + 1, rank)


def window_insert(
    gram: torch.Tensor, weights: torch.Tensor, slot: int, k: int, dots: torch.Tensor, decay: float
) -> None:
    """Record a gradient g written to column `slot` of the window G (the
    bookkeeping `LowRank` and `fisherprec.optim.LowRankFisher` share; each
    computes the dot products its own way). `dots` is Gᵀg over the k filled
    columns (g's own squared norm at `slot`): row and column `slot` of the Gram
    matrix K = GᵀG become `dots`, every column weight σ_j is multiplied by
    `decay` and g's is 1."""
    gram[slot, :k] = dots
    gram[:k, slot] = dots
    weights.mul_(decay)
    weights[slot] = 1.0


def window_root_coefficients(
    eigvals: torch.Tensor, normalizer: float | torch.Tensor, damping: float, power: float
) -> torch.Tensor:
    """f(s²) = ((s²/n + λ)^(-p) − λ^(-p)) / s² for each eigenvalue s² > 0 of the
    weighted Gram matrix (0 elsewhere), computed without cancellation:
    λ^(-p) · expm1(−p · log1p(s² / (nλ))) / s²."""
    positive = eigvals > 0
    safe = torch.where(positive, eigvals, torch.ones_like(eigvals))
    ratio = safe / (normalizer * damping)
    f = damping ** (-power) * torch.expm1(-power * torch.log1p(ratio)) / safe
    return torch.where(positive, f, torch.zeros_like(f))


@register("lowrank")
class LowRank(FisherEstimator):
    """The window of the last ``rank`` gradients and its exact inverse roots.

    F = (1/k) Σ_{last k} g gᵀ (k = min(N, rank)); ``inv_root_mv`` applies
    (F + λI)^(-p) = λ^(-p) I + U diag((s²/k + λ)^(-p) − λ^(-p)) Uᵀ exactly,
    with K = GᵀG = V diag(s²) Vᵀ and U = G V diag(1/s). A (B, P) update
    inserts its B rows in order (per-sample gradients: the window then holds
    the last ``rank`` of them). There is no EMA mode: ``beta`` is not accepted.

    Args:
        num_params: P.
        rank: window length r (1 ≤ r ≤ 256).
        damping: λ, inside the root.
        decay: weight of a column per newer insert (σ_j = decay^age,
            F = Σ σ² g gᵀ / Σ σ²); 1.0 (default) is the plain window.
        buffer_dtype: storage of G: float32 (default), float64, or bfloat16
            (half the memory; K and F then describe the rounded gradients).

    Example:
        >>> import torch, fisherprec as fp
        >>> F = fp.fisher.LowRank(4, rank=2, damping=1.0)
        >>> _ = F.update(torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]))
        >>> F.trace()
        6.5
        >>> F.inv_root_mv(torch.tensor([1.0, 1.0, 0.0, 0.0]))
        tensor([0.5774, 1.0000, 0.0000, 0.0000])
    """

    def __init__(
        self,
        num_params: int,
        rank: int = 16,
        damping: float = 1e-8,
        *,
        decay: float = 1.0,
        buffer_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_params, beta=None, damping=damping, device=device)
        if (
            isinstance(rank, bool)
            or not isinstance(rank, int)
            or not 1 <= rank <= ops.LOWRANK_MAX_RANK
        ):
            raise ValueError(
                f"Invalid rank value: {rank!r} (must be an int in [1, {ops.LOWRANK_MAX_RANK}])"
            )
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"Invalid decay value: {decay} (must be in (0, 1])")
        if buffer_dtype not in ops.LOWRANK_WINDOW_DTYPES:
            raise ValueError(f"Invalid buffer_dtype value: {buffer_dtype}")
        self.rank = rank
        self.decay = float(decay)
        self.window = torch.zeros(rank, num_params, dtype=buffer_dtype, device=self.device)
        self.gram = torch.zeros(rank, rank, dtype=torch.float64, device=self.device)
        self.weights = torch.zeros(rank, dtype=torch.float64, device=self.device)  # σ_j
        self.columns = 0  # filled rows: k = min(N, rank)
        self.inserted = 0  # rows written: the next goes to slot inserted % rank (the oldest)
        self._eig: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------- update
    def _update(self, batch: torch.Tensor, old_weight: float, new_weight: float) -> None:
        # Rows older than the last `rank` of a big batch would be overwritten anyway.
        first = max(0, batch.shape[0] - self.rank)
        for index in range(first, batch.shape[0]):
            row = batch[index]
            # Counted per written row, not per observation: the rows skipped
            # above never took a slot.
            slot, self.columns = ring_position(self.inserted, self.rank)
            dots = ops.lowrank_insert(self.window, slot, self.columns, [row])
            window_insert(self.gram, self.weights, slot, self.columns, dots, self.decay)
            self.inserted += 1
        self._eig = None

    # ----------------------------------------------------------- helpers
    def _weighted(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(σ, σσᵀ ⊙ K, n = Σσ²) over the filled columns."""
        k = self.columns
        sigma = self.weights[:k]
        return (
            sigma,
            self.gram[:k, :k] * sigma[:, None] * sigma[None, :],
            float(sigma.square().sum()),
        )

    def eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigen-decomposition (s², V) of the weighted Gram matrix σσᵀ ⊙ GᵀG (float64)."""
        if self._eig is None:
            _, weighted, _ = self._weighted()
            self._eig = small_eigh(weighted)
        return self._eig

    def _apply(self, vectors: torch.Tensor, coef_of_dots, scale: float) -> torch.Tensor:
        """Rows v ↦ scale·v + G c(Gᵀv), c = coef_of_dots(Gᵀv) in the raw window basis."""
        out = torch.empty_like(vectors)
        k = self.columns
        for v, y in zip(vectors, out, strict=True):
            dots = ops.lowrank_dots(self.window, k, [v])
            coef = torch.cat([dots.new_tensor([scale]), coef_of_dots(dots)])
            ops.lowrank_combine([y], [v], self.window, k, coef, 0.0)
        return out

    # -------------------------------------------------------------- products
    def _mv(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.columns == 0:
            return torch.zeros_like(vectors)
        sigma, _, n = self._weighted()
        return self._apply(vectors, lambda dots: sigma.square() * dots / n, 0.0)

    def _inv_root_mv(self, vectors: torch.Tensor, power: float) -> torch.Tensor:
        base = self.damping ** (-power)
        if self.columns == 0:
            return vectors * base
        sigma, _, n = self._weighted()
        eigvals, eigvecs = self.eigh()
        f = window_root_coefficients(eigvals, n, self.damping, power)

        def coef(dots: torch.Tensor) -> torch.Tensor:
            return sigma * (eigvecs @ (f * (eigvecs.T @ (sigma * dots))))

        return self._apply(vectors, coef, base)

    def trace(self) -> float:
        if self.columns == 0:
            return 0.0
        _, weighted, n = self._weighted()
        return float(weighted.diagonal().sum()) / n

    def to_dense(self) -> torch.Tensor:
        if self.columns == 0:
            return torch.zeros(
                self.num_params, self.num_params, dtype=torch.float64, device=self.device
            )
        sigma, _, n = self._weighted()
        g = self.window[: self.columns].to(torch.float64) * sigma[:, None]
        return g.T @ g / n

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.window, self.gram, self.weights))

    def __repr__(self) -> str:
        return (
            f"LowRank(num_params={self.num_params}, rank={self.rank}, damping={self.damping}, "
            f"decay={self.decay}, columns={self.columns}, num_updates={self.num_updates})"
        )


__all__ = ["LowRank", "ring_position", "small_eigh", "window_insert", "window_root_coefficients"]
