"""The full empirical Fisher as a dense P×P matrix: the reference structure
(and the exact F for small models, e.g. ``lagrangian.stationarity_ratio``)."""

from __future__ import annotations

import torch

from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.registry import register


@register("full", "dense")
class Dense(FisherEstimator):
    """F = mean (or EMA) of g gᵀ, stored in float64; O(P²) memory, O(P³) roots.

    Example:
        >>> import torch, fisherprec as fp
        >>> F = fp.fisher.Dense(3).update(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
        >>> F.trace()
        2.5
    """

    def __init__(
        self,
        num_params: int,
        *,
        beta: float | None = None,
        damping: float = 1e-8,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_params, beta=beta, damping=damping, device=device)
        self.state = torch.zeros(num_params, num_params, dtype=torch.float64, device=self.device)

    def _update(self, batch: torch.Tensor, old_weight: float, new_weight: float) -> None:
        g = batch.to(torch.float64)
        new = torch.addmm(self.state, g.T, g, beta=old_weight, alpha=new_weight)
        if not bool(torch.isfinite(new).all()):  # e.g. gradients of 1e200: g gᵀ ~ 1e400
            raise ValueError(
                "the Fisher of these gradients overflows float64 (largest |g| = "
                f"{float(batch.abs().amax()):.3g}); rescale the loss. The estimator is unchanged"
            )
        self.state = new

    def _fisher(self) -> torch.Tensor:
        return self.state * self.bias_correction

    def _mv(self, vectors: torch.Tensor) -> torch.Tensor:
        return (vectors.to(torch.float64) @ self._fisher()).to(vectors.dtype)

    def _inv_root_mv(self, vectors: torch.Tensor, power: float) -> torch.Tensor:
        eigvals, eigvecs = torch.linalg.eigh(self._fisher())
        scale = (eigvals.clamp_min(0.0) + self.damping).pow(-power)  # F is PSD: clamp rounding
        out = ((vectors.to(torch.float64) @ eigvecs) * scale) @ eigvecs.T
        return out.to(vectors.dtype)

    def trace(self) -> float:
        return float(self._fisher().diagonal().sum())

    def to_dense(self) -> torch.Tensor:
        return self._fisher().clone()

    def memory_bytes(self) -> int:
        return self.state.numel() * self.state.element_size()
