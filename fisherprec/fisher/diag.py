"""The diagonal empirical Fisher: F = diag of the mean (or EMA) of g ⊙ g
(docs/theory.md, "The learning Lagrangian and F^(-p) updates", the per-sample row of its table), updated by one fused
native pass over the per-sample gradients."""

from __future__ import annotations

import torch

from fisherprec import ops
from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.registry import register

__all__ = ["Diag"]


@register("diag")
class Diag(FisherEstimator):
    """F = diag((1/N) Σ g ⊙ g) (``beta=None``) or its bias-corrected EMA.

    O(P) memory and O(P) work per product; ``inv_root_mv`` is exact:
    (F + λI)^(-power) v = v / (diag F + λ)^power.

    Args:
        num_params: P.
        beta: ``None`` for the running mean over all observations, or the EMA
            factor in [0, 1) (a (B, P) update is one EMA step of its mean).
        damping: λ ≥ 0, added inside the root.
        device: where the state lives (the gradients must be there too).
        dtype: of the state: float64 (default, exact to 1e-12) or float32
            (half the memory).

    Example:
        >>> import torch, fisherprec as fp
        >>> F = fp.fisher.Diag(3).update(torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]]))
        >>> F.diagonal()
        tensor([5., 0., 2.], dtype=torch.float64)
        >>> F.inv_root_mv(torch.ones(3), power=1.0)
        tensor([2.0000e-01, 1.0000e+08, 5.0000e-01])
    """

    def __init__(
        self,
        num_params: int,
        beta: float | None = None,
        damping: float = 1e-8,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(num_params, beta=beta, damping=damping, device=device)
        if dtype not in ops.DIAG_STATE_DTYPES:
            raise TypeError(f"Diag state dtype must be float32 or float64, got {dtype}")
        self.state = torch.zeros(num_params, dtype=dtype, device=self.device)

    def _update(self, batch: torch.Tensor, old_weight: float, new_weight: float) -> None:
        ops.diag_fisher_update_(self.state, batch, old_weight=old_weight, new_weight=new_weight)

    def diagonal(self) -> torch.Tensor:
        """diag F as a (P,) float64 tensor (bias-corrected for an EMA)."""
        return self.state.to(torch.float64) * self.bias_correction

    def _mv(self, vectors: torch.Tensor) -> torch.Tensor:
        return (vectors.to(torch.float64) * self.diagonal()).to(vectors.dtype)

    def _inv_root_mv(self, vectors: torch.Tensor, power: float) -> torch.Tensor:
        # F is PSD: clamp rounding below 0 as the dense reference does.
        scale = (self.diagonal().clamp_min(0.0) + self.damping).pow(-power)
        return (vectors.to(torch.float64) * scale).to(vectors.dtype)

    def trace(self) -> float:
        return float(self.diagonal().sum())

    def to_dense(self) -> torch.Tensor:
        return torch.diag(self.diagonal())

    def memory_bytes(self) -> int:
        return self.state.numel() * self.state.element_size()
