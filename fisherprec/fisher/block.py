"""The block-diagonal empirical Fisher: the diagonal b×b blocks of the mean
(or EMA) of g gᵀ over contiguous coordinates (docs/theory.md, "Exact inverse roots for each structure")."""

from __future__ import annotations

import torch

from fisherprec import ops
from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.registry import register


@register("block")
class Block(FisherEstimator):
    """F = blockdiag(F_1, …, F_K), F_k the mean (or EMA) of g_k g_kᵀ over the
    k-th run of ``block_size`` coordinates of the flat vector (the last block
    may be shorter). Statistics are float64 (K·b² numbers); roots come from the
    native batched eigensolver (``fisherprec.ops.block_inv_root_``) and are
    cached until the next update.

    Args:
        num_params: P.
        block_size: b, in [1, 256].
        beta: ``None`` for the running mean, else the EMA factor (with bias correction).
        damping: λ in (F + λI)^(-power).

    Example:
        >>> import torch, fisherprec as fp
        >>> F = fp.fisher.Block(5, block_size=2).update(torch.arange(5.0))
        >>> F.to_dense()[:2, :2]
        tensor([[0., 0.],
                [0., 1.]], dtype=torch.float64)
        >>> F.trace()
        30.0
    """

    def __init__(
        self,
        num_params: int,
        block_size: int = 64,
        *,
        beta: float | None = None,
        damping: float = 1e-8,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_params, beta=beta, damping=damping, device=device)
        self.block_size = ops.block.check_block_size(block_size)
        shape = ops.block_shape(num_params, self.block_size)
        self.num_blocks = shape[0]
        self.state = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self._root: tuple[tuple[int, float], torch.Tensor, torch.Tensor] | None = None

    def _update(self, batch: torch.Tensor, old_weight: float, new_weight: float) -> None:
        ops.block_outer_update_([self.state], [batch], self.block_size, old_weight, new_weight)
        self._root = None

    def _blocked(self, vectors: torch.Tensor) -> torch.Tensor:
        """(K, P) → (num_blocks, K, b) float64, zero-padded."""
        k, pad = vectors.shape[0], self.num_blocks * self.block_size - self.num_params
        padded = torch.nn.functional.pad(vectors.to(torch.float64), (0, pad))
        return padded.reshape(k, self.num_blocks, self.block_size).transpose(0, 1)

    def _unblocked(self, blocks: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        flat = blocks.transpose(0, 1).reshape(like.shape[0], -1)[:, : self.num_params]
        return flat.to(like.dtype)

    def _mv(self, vectors: torch.Tensor) -> torch.Tensor:
        out = torch.bmm(self._blocked(vectors), self.state) * self.bias_correction
        return self._unblocked(out, vectors)

    def roots(self, power: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, status): R[k] = (F_k + λI)^(-power) per block (float64, zero
        padding) and the int32 outcome per block (0 = ok, see ``fisherprec.ops``)."""
        key = (self.num_updates, float(power))
        if self._root is None or self._root[0] != key:
            root = torch.empty_like(self.state)
            status = torch.empty(self.num_blocks, dtype=torch.int32, device=self.device)
            ops.block_inv_root_(
                [self.state],
                [root],
                [status],
                [self.num_params],
                self.block_size,
                scale=self.bias_correction,
                damping=self.damping,
                power=power,
            )
            self._root = (key, root, status)
        return self._root[1], self._root[2]

    def _inv_root_mv(self, vectors: torch.Tensor, power: float) -> torch.Tensor:
        # A failed block (non-finite statistic) has a NaN root: NaN propagates.
        root, _ = self.roots(power)
        return self._unblocked(torch.bmm(self._blocked(vectors), root), vectors)

    def trace(self) -> float:
        return float(self.state.diagonal(dim1=1, dim2=2).sum()) * self.bias_correction

    def to_dense(self) -> torch.Tensor:
        dense = torch.block_diag(*(self.state * self.bias_correction).unbind(0))
        return dense[: self.num_params, : self.num_params].clone()

    def memory_bytes(self) -> int:
        total = self.state.numel() * self.state.element_size()
        if self._root is not None:
            total += sum(t.numel() * t.element_size() for t in self._root[1:])
        return total

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", block_size={self.block_size})"
