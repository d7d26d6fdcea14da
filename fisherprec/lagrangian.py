"""The learning Lagrangian (docs/theory.md, "The learning Lagrangian and F^(-p) updates"; paper §3.3, Insight 4).

Sign conventions: ℓ(θ; x) is a log-likelihood and loss = −ℓ; g = ∇θ(loss)
(the sign of g does not matter in the quadratic kinetic term); F is the
Fisher information, here any :class:`fisherprec.fisher.FisherEstimator`
(applied as (F + λI)⁻¹ with the estimator's damping λ).

- kinetic energy   T = (1/2P) gᵀ F⁻¹ g      (= ½ m ‖θ̇‖² along θ̇ = F^{-1/2} g, m = 1/P)
- Lagrangian       L = T − ℓ = T + loss     (kinetic − potential, potential = ℓ)
- action           S = Σ_k L_k Δt            over a recorded trajectory
- stationarity     s(θ) = (1/P) tr(F⁻¹ H), H the Hessian of the mean loss: 1 at
  the maximum-likelihood estimate of a well-specified model (the
  information-matrix equality F = H), off 1 under misspecification.

Fisher structures may be given by name: ``"full"`` (:class:`~fisherprec.fisher.Dense`,
the exact empirical Fisher), ``"diag"``, ``"block"``, ``"lowrank"``, ``"kron"`` — any
name of :mod:`fisherprec.fisher.registry`, the one table of structures.

Example:
    >>> import torch, fisherprec as fp
    >>> F = fp.fisher.Dense(2, damping=1e-12).update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    >>> g = torch.tensor([1.0, 1.0])
    >>> round(fp.lagrangian.kinetic(g, F), 6)  # (1/4)(1/2 + 1/(1/2))
    0.625
    >>> round(fp.lagrangian.lagrangian(loss=0.5, grad=g, fisher=F), 6)
    1.125
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call, grad, jvp, vmap

from fisherprec.fisher import FisherEstimator, per_sample_grads
from fisherprec.fisher import registry as fisher_registry

__all__ = [
    "Recorder",
    "Step",
    "action",
    "kinetic",
    "lagrangian",
    "make_estimator",
    "stationarity_ratio",
]


def make_estimator(structure: str, num_params: int, **kwargs: Any) -> FisherEstimator:
    """A fresh estimator of the named structure (a name in :mod:`fisherprec.fisher.registry`).

    Keyword arguments go to the estimator (``damping``, ``beta``, ``block_size``,
    ``rank``, …).

    Raises:
        ValueError: for an unknown name.
    """
    cls = fisher_registry.get(structure)
    if kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu":
        kwargs.pop("device")  # the default: works with estimators that take no device argument
    return cls(num_params, **kwargs)


def _flat(grad_: torch.Tensor | Iterable[torch.Tensor | None], name: str = "grad") -> torch.Tensor:
    """One flat (P,) vector from a tensor or a sequence of tensors (None entries skipped)."""
    if isinstance(grad_, torch.Tensor):
        flat = grad_.detach().reshape(-1)
    else:
        parts = [t.detach().reshape(-1) for t in grad_ if t is not None]
        if not parts:
            raise ValueError(f"{name} holds no tensors")
        flat = torch.cat([p.to(parts[0].dtype) for p in parts])
    if not flat.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {flat.dtype}")
    if flat.numel() == 0:
        raise ValueError(f"{name} is empty (P = 0)")
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return flat


def kinetic(
    grad: torch.Tensor | Iterable[torch.Tensor | None], fisher: FisherEstimator | None
) -> float:
    """T = (1/2P) gᵀ (F + λI)⁻¹ g with any estimator (λ its damping).

    ``grad`` is the loss gradient as one (P,) tensor or a sequence of tensors
    (e.g. ``[p.grad for p in model.parameters()]``, flattened in order).
    ``fisher=None`` means F = I (plain SGD's metric): T = ‖g‖² / (2P).
    """
    g = _flat(grad)
    if fisher is None:
        return float(g.double().square().sum()) / (2 * g.numel())
    if not isinstance(fisher, FisherEstimator):
        raise TypeError(f"fisher must be a FisherEstimator or None, got {type(fisher).__name__}")
    if fisher.num_params != g.numel():
        raise ValueError(
            f"grad has {g.numel()} entries but fisher has num_params={fisher.num_params}"
        )
    g64 = g.to(device=fisher.device, dtype=torch.float64)
    return float(g64 @ fisher.inv_root_mv(g64, power=1.0)) / (2 * g.numel())


def lagrangian(
    loss: float | torch.Tensor,
    grad: torch.Tensor | Iterable[torch.Tensor | None],
    fisher: FisherEstimator | None,
) -> float:
    """L = T − ℓ = (1/2P) gᵀF⁻¹g + loss (kinetic − potential, ℓ = −loss).

    ``loss`` is the (mean) negative log-likelihood at θ; ``grad`` its gradient.
    """
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise ValueError(f"loss must be finite, got {value}")
    return kinetic(grad, fisher) + value


@dataclass(frozen=True)
class Step:
    """One recorded optimizer step: loss, kinetic energy T and L = T + loss."""

    step: int
    loss: float
    kinetic: float
    lagrangian: float


def action(trajectory: Recorder | Sequence[Step] | Sequence[float], dt: float = 1.0) -> float:
    """S = Σ_k L_k Δt over a recorded trajectory (rectangle rule, one term per step).

    ``trajectory`` is a :class:`Recorder`, a sequence of :class:`Step`, or the
    Lagrangian values themselves.

    Example:
        >>> import fisherprec as fp
        >>> fp.lagrangian.action([1.0, 0.5, 0.25], dt=0.5)
        0.875
    """
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"Invalid dt value: {dt}")
    steps = trajectory.steps if isinstance(trajectory, Recorder) else list(trajectory)
    values = [s.lagrangian if isinstance(s, Step) else float(s) for s in steps]  # type: ignore[arg-type]
    return math.fsum(values) * dt


class Recorder:
    """Records loss, kinetic energy and the Lagrangian at every optimizer step.

    Call :meth:`record` after ``loss.backward()`` (and before or after
    ``optimizer.step()``; the gradients are read from ``p.grad``). Each call
    first adds the step's gradient to the Fisher estimate (unless
    ``update_fisher=False``), then evaluates T = (1/2P) gᵀ(F + λI)⁻¹g.

    Args:
        params: the parameters whose gradients form g (order = flat order).
        fisher: an estimator (used as is), a structure name (see
            :mod:`fisherprec.fisher.registry`), or None for the default: ``"full"`` when
            P ≤ 512 (an O(P³) eigendecomposition per step), else ``"diag"``.
        beta: EMA factor for a named structure (None: running mean over steps).
            The default 0.99 tracks F along the trajectory, as Adam/RMSprop do.
        damping: λ for a named structure.
        update_fisher: add each step's gradient to the estimate.

    Example:
        >>> import torch, fisherprec as fp
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> rec = fp.lagrangian.Recorder(model.parameters(), fisher="full")
        >>> x, y = torch.randn(32, 3), torch.randn(32, 1)
        >>> for _ in range(5):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     step = rec.record(loss)
        ...     opt.step()
        >>> len(rec.steps), rec.action() > 0
        (5, True)
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        fisher: FisherEstimator | str | None = None,
        *,
        beta: float | None = 0.99,
        damping: float = 1e-8,
        update_fisher: bool = True,
    ) -> None:
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("params is empty")
        num_params = sum(p.numel() for p in self.params)
        if fisher is None:
            fisher = "full" if num_params <= 512 else "diag"
        if isinstance(fisher, str):
            fisher = make_estimator(
                fisher, num_params, beta=beta, damping=damping, device=self.params[0].device
            )
        if not isinstance(fisher, FisherEstimator):
            raise TypeError(f"fisher must be an estimator, a name or None, got {fisher!r}")
        if fisher.num_params != num_params:
            raise ValueError(
                f"fisher has num_params={fisher.num_params} but params hold {num_params} values"
            )
        self.fisher = fisher
        self.update_fisher = update_fisher
        self.steps: list[Step] = []

    def record(self, loss: float | torch.Tensor) -> Step:
        """Record the current step from ``loss`` and the parameters' ``.grad``."""
        if any(p.grad is None for p in self.params):
            raise RuntimeError("a parameter has no .grad: call record() after loss.backward()")
        if any(p.grad.is_sparse for p in self.params):  # type: ignore[union-attr]
            raise RuntimeError("Recorder does not support sparse gradients")
        g = _flat([p.grad for p in self.params])
        if self.update_fisher:
            self.fisher.update(g.to(self.fisher.device))
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        kin = kinetic(g, self.fisher)
        step = Step(len(self.steps), value, kin, kin + value)
        self.steps.append(step)
        return step

    @property
    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]

    @property
    def kinetics(self) -> list[float]:
        return [s.kinetic for s in self.steps]

    @property
    def lagrangians(self) -> list[float]:
        return [s.lagrangian for s in self.steps]

    def action(self, dt: float = 1.0) -> float:
        """S = Σ_k L_k Δt over the steps recorded so far."""
        return action(self.steps, dt)

    def __len__(self) -> int:
        return len(self.steps)


# ---------------------------------------------------------- stationarity
def stationarity_ratio(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    fisher: str | FisherEstimator = "full",
    exact: bool | None = None,
    num_probes: int = 64,
    *,
    damping: float | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> float:
    """s(θ) = (1/P) tr(F⁻¹ H) at the model's current parameters.

    F is the empirical Fisher of the per-sample gradients,
    F = (1/B) Σ_i g_i g_iᵀ with g_i = ∇θ loss_i (or its structured
    approximation), and H = ∇²θ of the mean loss over the batch. At the
    maximum-likelihood estimate of a well-specified model F ≈ H, so s ≈ 1
    (to O(1/√B)); under misspecification s drifts away from 1 (e.g. < 1 when
    the data are noisier than the model believes). ``loss_fn`` must be a
    proper negative log-likelihood (mean over the batch), or the identity
    fails for a trivial reason (e.g. ``mse_loss`` is 2× the Gaussian NLL of
    unit variance, giving s = ½ at a well-specified MLE).

    Args:
        model, loss_fn, inputs, targets: ``loss_fn(model(inputs), targets)`` is
            the mean loss; all trainable parameters count (P of them).
        fisher: ``"full"`` (the exact empirical Fisher, O(P²) memory), another
            structure name (``"diag"``, ``"block"``, ``"lowrank"``), or an
            estimator already updated with the per-sample gradients (it is then
            used as is, and ``damping`` does not apply).
        exact: True forms H (P×P) and F⁻¹H exactly; False estimates the trace
            with ``num_probes`` Rademacher probes z (tr M ≈ mean zᵀMz, far lower
            variance than Gaussian probes) and Hessian-vector products
            (torch.func, no P×P Hessian); None = exact when P ≤ 1000.
        damping: λ in (F + λI)⁻¹ for a named structure; default 1e-10 · tr(F)/P.
            F must be well conditioned (B ≫ P) for the ratio to mean anything.
        generator: for the probes.
        chunk_size: bounds the vmap over samples and over Hessian-vector
            products (memory; default: all samples at once, 32 HVPs at once).

    Example:
        >>> import torch, fisherprec as fp
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(4000, 2, generator=g, dtype=torch.float64)
        >>> y = x @ torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
        >>> y = y + torch.randn(4000, 1, generator=g, dtype=torch.float64)
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
        >>> nll = lambda out, t: 0.5 * ((out - t) ** 2).mean()  # Gaussian NLL, unit variance
        >>> round(fp.lagrangian.stationarity_ratio(model, nll, x, y), 1)
        1.0
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"Invalid num_probes value: {num_probes}")
    if damping is not None and not (math.isfinite(damping) and damping > 0):
        raise ValueError(f"Invalid damping value: {damping}")
    names = [k for k, v in model.named_parameters() if v.requires_grad]
    if not names:
        raise ValueError("model has no trainable parameters")
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    P = sum(sizes)
    theta = torch.cat([params[k].reshape(-1) for k in names])
    if exact is None:
        exact = P <= 1000

    # The Fisher estimate.
    if isinstance(fisher, FisherEstimator):
        if fisher.num_params != P:
            raise ValueError(f"fisher has num_params={fisher.num_params}, the model has P={P}")
        estimator = fisher
    else:
        G = per_sample_grads(model, loss_fn, inputs, targets, chunk_size=chunk_size)
        assert isinstance(G, torch.Tensor)
        if not bool(torch.isfinite(G).all()):
            raise ValueError("per-sample gradients contain NaN or infinite values")
        G = G.to(torch.float64)
        if damping is None:
            mean_sq = float(G.square().sum(1).mean()) / P  # tr(F) / P
            damping = 1e-10 * mean_sq if mean_sq > 0 else 1e-12
        estimator = make_estimator(fisher, P, damping=damping, device=theta.device)
        estimator.update(G)

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        p = {k: t.reshape(s) for k, t, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(functional_call(model, (p, buffers), (inputs,)), targets)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return jvp(grad(mean_loss), (theta,), (v,))[1]

    # Each HVP holds a forward/backward over the whole batch: bound how many run at once.
    hvp_chunk = chunk_size if chunk_size is not None else 32
    if exact:
        # H = [H e_1, …, H e_P]: P HVPs at once, no second-order autograd graph kept.
        H = vmap(hvp, chunk_size=hvp_chunk)(torch.eye(P, dtype=theta.dtype, device=theta.device))
        H = 0.5 * (H + H.T)
        # Rows of H F⁻¹ (F⁻¹ symmetric, H symmetric): tr(H F⁻¹) = tr(F⁻¹ H).
        solved = estimator.inv_root_mv(H.to(torch.float64), power=1.0)
        return float(solved.diagonal().sum()) / P
    probes = torch.randint(0, 2, (num_probes, P), generator=generator, dtype=torch.int64)
    probes = (2 * probes - 1).to(dtype=theta.dtype, device=theta.device)
    Hz = vmap(hvp, chunk_size=hvp_chunk)(probes)
    solved = estimator.inv_root_mv(Hz.to(torch.float64), power=1.0)
    return float((solved * probes.to(torch.float64)).sum(1).mean()) / P
