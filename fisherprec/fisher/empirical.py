"""``empirical``: build a Fisher estimator of a given structure from a batch's
per-sample gradients, F = (1/B) Σ_i g_i g_iᵀ restricted to that structure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fisherprec.fisher import registry
from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.per_sample import per_sample_grads

__all__ = ["empirical", "estimator_class"]


def estimator_class(kind: str) -> type[FisherEstimator]:
    """The estimator class of a structure name (see :mod:`fisherprec.fisher.registry`)."""
    return registry.get(kind, argument="kind")


def empirical(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kind: str = "diag",
    *,
    chunk_size: int | None = None,
    **kwargs: Any,
) -> FisherEstimator:
    """The empirical Fisher of `model` on one batch, as an estimator of `kind`.

    Computes the (B, P) per-sample gradients (``per_sample_grads``, parameters
    in ``named_parameters()`` order) and feeds them to ``estimator_class(kind)(P,
    device=..., **kwargs)`` as one update: with the default ``beta=None`` the
    result is F = (1/B) Σ_i g_i g_iᵀ restricted to the structure.

    Args:
        kind: ``"full"`` (``Dense``), ``"diag"`` (``Diag``), ``"block"``,
            ``"lowrank"``, ``"kron"`` (``Kron`` over the parameters' shapes).
        chunk_size: vmap over at most this many samples at once.
        **kwargs: the estimator's options (``damping``, ``beta``, ``block_size``, …).

    Example:
        >>> import torch, fisherprec as fp
        >>> model = torch.nn.Linear(3, 1)
        >>> F = fp.fisher.empirical(model, torch.nn.functional.mse_loss,
        ...                         torch.randn(16, 3), torch.randn(16, 1), kind="diag")
        >>> F.num_params, F.num_observations
        (4, 16)
    """
    cls = estimator_class(kind)
    grads = per_sample_grads(model, loss_fn, inputs, targets, chunk_size=chunk_size)
    assert isinstance(grads, torch.Tensor)
    structure: object = grads.shape[1]
    if getattr(cls, "structured_by_shapes", False):  # Kron: one block structure per tensor
        structure = [tuple(v.shape) for _, v in model.named_parameters() if v.requires_grad]
    estimator = cls(structure, device=grads.device, **kwargs)
    return estimator.update(grads)
