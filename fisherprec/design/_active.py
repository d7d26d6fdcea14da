r"""Fisher-based active selection for nonlinear models (:func:`fisher_active`):
greedy A-optimality on tr(F⁻¹), with F the (expected or empirical) Fisher
information of the chosen inputs as a :mod:`fisherprec.fisher` estimator
structures it.

Apart from the linear-model modules because it depends on the model, the loss
and the estimators (per-sample gradients, resolved lazily from
:mod:`fisherprec.fisher`), not on a fixed design matrix.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fisherprec.design._common import _check_int, _check_real


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
    from fisherprec.fisher import registry as fisher_registry

    cls = fisher_registry.resolve(fisher)

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
