"""Per-sample gradients with torch.func (vmap over grad), the input of every
per-sample (empirical) Fisher estimate: F = (1/B) Σ_i g_i g_iᵀ."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call, grad, vmap


def per_sample_grads(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    flatten: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Gradients of the loss of each sample with respect to the trainable parameters.

    Args:
        model: any module; its parameters with ``requires_grad`` are differentiated,
            in ``named_parameters()`` order (the order of a flat parameter vector).
        loss_fn: ``loss_fn(outputs, targets)`` for a batch; it is called on batches
            of one sample, so a mean reduction gives that sample's loss.
        inputs, targets: batches with the same leading size B.
        flatten: return one (B, P) tensor (default) or a dict name → (B, *shape).
        chunk_size: vmap over at most this many samples at once (bounds memory).

    Example:
        >>> import torch, fisherprec as fp
        >>> model = torch.nn.Linear(3, 1)
        >>> g = fp.fisher.per_sample_grads(model, torch.nn.functional.mse_loss,
        ...                                torch.randn(8, 3), torch.randn(8, 1))
        >>> g.shape
        torch.Size([8, 4])
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, value in (("inputs", inputs), ("targets", targets)):
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise ValueError(f"{name} must be a batched tensor (leading batch dimension)")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs has {inputs.shape[0]} samples but targets has {targets.shape[0]}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size}")
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"module {name or type(module).__name__} ({type(module).__name__}) is in train "
                "mode: it normalises by batch statistics, so a sample's loss depends on the "
                "whole batch and per-sample gradients are undefined; call model.eval() first "
                "(running statistics) or use LayerNorm/GroupNorm"
            )
    batch = inputs.shape[0]
    if batch == 0:  # vmap needs a sample; the answer is empty
        if not flatten:
            return {k: v.new_zeros((0, *v.shape)) for k, v in params.items()}
        return torch.cat([v.new_zeros(0, v.numel()) for v in params.values()], dim=1)
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def sample_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    grads = vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk_size)(
        params, inputs, targets
    )
    if not flatten:
        return grads
    return torch.cat([g.reshape(batch, -1) for g in grads.values()], dim=1)
