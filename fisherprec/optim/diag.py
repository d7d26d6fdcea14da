"""DiagFisher: θ ← θ − α F^{-power} g with the diagonal EMA Fisher (docs/theory.md, "The learning Lagrangian and F^(-p) updates").

With its defaults it is AdamW (same state layout, same trajectory to float32
rounding; its defaults are AdamW's, weight_decay=1e-2 included, so a literal
swap changes nothing); with ``betas=(0, β2), bias_correction=False,
weight_decay=0`` it is RMSprop's
update rule. One fused native call per (device, dtype, step) bucket.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from fisherprec import ops
from fisherprec.optim._base import (
    FisherOptimizer,
    check_betas,
    check_nonnegative,
    check_power,
    local,
)
from fisherprec.optim.registry import OptimizerEntry, register

__all__ = ["DiagFisher"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)
_MOMENTS = ("exp_avg", "exp_avg_sq")


def _state_dtype(param: torch.Tensor) -> torch.dtype:
    """Moments are float32 for float32/bfloat16/float16 parameters (float64 stays float64)."""
    return torch.float32 if param.dtype in ops.DIAG_PARAM_DTYPES else param.dtype


class DiagFisher(FisherOptimizer):
    r"""Diagonal empirical-Fisher preconditioning: Adam/AdamW/RMSprop in one
    fused native step.

    .. math::
       \begin{aligned}
       &\textbf{input}: \gamma \text{ (lr)},\ \beta_1, \beta_2 \text{ (betas)},\
           \epsilon \text{ (eps)},\ \lambda \text{ (weight decay)},\ p \text{ (power)},\
           \theta_0,\ f(\theta) \text{ (objective)} \\
       &\textbf{initialize}: m_0 \leftarrow 0,\ v_0 \leftarrow 0 \\
       &\textbf{for}\ t = 1, 2, \ldots\ \textbf{do} \\
       &\quad g_t \leftarrow \pm\nabla_\theta f_t(\theta_{t-1})
           \quad (- \text{ if maximize}) \\
       &\quad \theta_t \leftarrow \theta_{t-1} (1 - \gamma\lambda) \\
       &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
       &\quad v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2
           \quad (\text{diagonal EMA Fisher}) \\
       &\quad c_1 \leftarrow 1 - \beta_1^t,\ c_2 \leftarrow 1 - \beta_2^t
           \quad (c_1 = c_2 = 1 \text{ without bias correction}) \\
       &\quad \theta_t \leftarrow \theta_t - \frac{\gamma}{c_1}
           \, m_t \big/ \big( v_t^{\,p} / c_2^{\,p} + \epsilon \big) \\
       &\textbf{return}\ \theta_t
       \end{aligned}

    ``power=0.5`` is the F^{-1/2} flow (docs/theory.md, "The learning Lagrangian and F^(-p) updates"), Adam; ``power=1``
    gives a diagonal natural-gradient step. ε is added *outside* the root, as
    in Adam.

    Equivalences (tested):

    - defaults, any ``weight_decay``: ``torch.optim.AdamW`` (decoupled decay),
      to float32 rounding; the state (``"step"`` as a 0-dim float32 tensor,
      ``"exp_avg"``, ``"exp_avg_sq"``) has AdamW's layout, so checkpoints load
      in either direction.
    - ``betas=(0, β2), bias_correction=False, weight_decay=0``: ``torch.optim.RMSprop`` with
      ``alpha=β2`` (and no momentum/centering/weight decay): θ ← θ − γ g /
      (√v + ε). RMSprop also puts ε outside the square root, so the rules are
      identical; with β1 = 0 the momentum buffer equals g exactly.

    Precision: float32, bfloat16 and float16 parameters run in the fused
    native kernel with float32 moments (more precise than torch's
    low-precision states; a torch checkpoint's bfloat16 moments are widened on
    load). float64 parameters, other devices, and non-contiguous parameters or
    gradients take a plain-torch path with the same operation order.

    Non-finite gradients (``nonfinite``): ``"propagate"`` (default, as
    torch.optim: NaN/Inf flow into the moments and parameters, no extra
    cost); ``"raise"`` (``FloatingPointError`` before anything changes);
    ``"skip"`` (the group's step is skipped entirely, ``skipped_steps``
    counts it — the policy of AMP's GradScaler).

    Args:
        params: parameters or param groups.
        lr: learning rate γ (a float, or a 1-element tensor read each step).
        betas: (β1, β2), each in [0, 1).
        eps: ε ≥ 0, added to the root of the second moment.
        weight_decay: decoupled weight decay λ ≥ 0 (θ ← θ(1 − γλ)); 1e-2 as AdamW
            (0 gives Adam without weight decay).
        bias_correction: divide the moments by 1 − β^t (Adam) or not (RMSprop).
        power: p > 0, the exponent of the preconditioner F^{-p}.
        maximize: ascend the objective.
        nonfinite: ``"propagate"``, ``"raise"`` or ``"skip"``.

    Example:
        >>> import torch, fisherprec as fp
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = fp.optim.DiagFisher(model.parameters(), lr=1e-2, weight_decay=0.01)
        >>> loss = model(torch.randn(8, 4)).square().mean()
        >>> loss.backward()
        >>> opt.step()
        >>> sorted(opt.state[model.weight])
        ['exp_avg', 'exp_avg_sq', 'step']

    Sources: Kingma & Ba, "Adam" (2015); Loshchilov & Hutter, "Decoupled
    Weight Decay Regularization" (2019); Guo & Schölkopf, "Physics of
    Learning" (2025), §3.3.
    """

    steps_dtensor_shards = True  # element-wise: a shard's step is the step of its slice

    @property
    def traces_step(self) -> bool:  # type: ignore[override]
        """Whether torch.compile traces the step (its counts and lr stay tensors:
        ``_step_group_traced``) instead of running it eagerly behind one graph
        break. Traced only for CUDA parameters, where it keeps the compiled
        region whole. On the CPU the native step costs less than the compiled
        call's guards: on the gpt task, traced 2.1-2.5× the eager step, run
        eagerly 0.99-1.06× (docs/benchmarks.md, "compiled DiagFisher step").
        Set ``DiagFisher.traces_step = True`` (or False) to choose."""
        return any(p.device.type == "cuda" for g in self.param_groups for p in g["params"])

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        bias_correction: bool = True,
        power: float = 0.5,
        *,
        maximize: bool = False,
        nonfinite: str = "propagate",
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "bias_correction": bool(bias_correction),
            "power": power,
            "maximize": maximize,
            "nonfinite": nonfinite,
        }
        super().__init__(params, defaults)
        self._step_views: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}

    @classmethod
    def _check_group(cls, group: dict[str, Any]) -> None:
        super()._check_group(group)
        check_betas(group["betas"])
        check_nonnegative("epsilon", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_power(group["power"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_step_views", {})
        for group in self.param_groups:
            group.setdefault("bias_correction", True)
            group.setdefault("power", 0.5)
            # A torch.optim.Adam/AdamW checkpoint: reject what we cannot follow.
            if group.get("amsgrad", False):
                raise ValueError("DiagFisher cannot resume an AMSGrad checkpoint (amsgrad=True)")
            if group.get("decoupled_weight_decay") is False and group["weight_decay"] != 0:
                raise ValueError(
                    "DiagFisher uses decoupled weight decay (AdamW); this checkpoint is from "
                    "torch.optim.Adam with L2 weight_decay="
                    f"{group['weight_decay']}: load it into torch.optim.Adam instead"
                )

    def _load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super()._load_state_dict(state_dict)  # checks keys and shapes, keeps saved dtypes
        # Bring loaded state to the layout each step trusts.
        for param, state in self.state.items():
            if not state:
                continue
            for key in _MOMENTS:
                state[key] = state[key].to(
                    dtype=_state_dtype(param),
                    device=param.device,
                    memory_format=torch.contiguous_format,
                )

    def _new_state(
        self, group: dict[str, Any], params: Sequence[torch.Tensor]
    ) -> list[dict[str, Any]]:
        # AdamW's layout; "step" is a CPU float32 scalar (as non-fused torch).
        return [
            {
                "step": torch.tensor(0.0, dtype=torch.float32),
                **{
                    key: torch.zeros_like(
                        p, dtype=_state_dtype(p), memory_format=torch.contiguous_format
                    )
                    for key in _MOMENTS
                },
            }
            for p in params
        ]

    def _step_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        lr = group["lr"]
        if torch.compiler.is_compiling():
            # Traced by torch.compile: the step counts stay tensors, so that
            # nothing is read back to the host (no graph break, no recompile).
            self._step_group_traced(group, params, grads)
            return
        hyper = self._hyper(group, float(lr) if isinstance(lr, torch.Tensor) else lr)
        native: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        fallback: list[int] = []
        steps: list[torch.Tensor] = []
        moments: list[tuple[torch.Tensor, torch.Tensor]] = []
        all_state = self.state
        shards, shard_grads = [], []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            state = all_state[p]
            if not state:
                state.update(self._new_state(group, [p])[0])
            # A DTensor parameter (FSDP2) and its gradient and moments (DTensors
            # like it) step as their local shards: the update is element-wise.
            p, g = local(p), local(g)
            shards.append(p)
            shard_grads.append(g)
            m, v = local(state["exp_avg"]), local(state["exp_avg_sq"])
            steps.append(state["step"])
            moments.append((m, v))
            # State was validated when created or loaded (load_state_dict);
            # numel guards against a parameter whose .data was swapped since.
            if (
                p.dtype in ops.DIAG_PARAM_DTYPES
                and p.is_contiguous()
                and g.is_contiguous()
                and m.numel() == p.numel()
                and p.device.type in ("cpu", "cuda")
            ):
                native[(p.device, p.dtype)].append(i)
            else:
                fallback.append(i)
        step_values = self._increment_steps(group, params, steps)
        params, grads = shards, shard_grads

        for (device, _), idx in native.items():
            ops.check_device(f"parameter of shape {tuple(params[idx[0]].shape)}", device)
            by_step: dict[float, list[int]] = defaultdict(list)
            for i in idx:  # normally one step count for the whole bucket
                by_step[step_values[i]].append(i)
            for step, sub in by_step.items():
                ops.diag.diag_step_unchecked_(
                    [params[i] for i in sub],
                    [grads[i] for i in sub],
                    [moments[i][0] for i in sub],
                    [moments[i][1] for i in sub],
                    step=step,
                    **hyper,
                )
        for i in fallback:
            self._step_reference(params[i], grads[i], *moments[i], step_values[i], **hyper)

    @staticmethod
    def _hyper(group: dict[str, Any], lr: float | torch.Tensor) -> dict[str, Any]:
        """The step's scalars, in the order of fisherprec::diag_step_counted's
        arguments after the step counts (the traced step passes them positionally)."""
        beta1, beta2 = group["betas"]
        return {
            "lr": lr,
            "beta1": beta1,
            "beta2": beta2,
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
            "power": group["power"],
            "bias_correction": group["bias_correction"],
            "maximize": group["maximize"],
        }

    def _step_group_traced(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        """The step torch.compile traces: the step counts stay tensors. The fused
        kernel runs as one opaque op per (device, dtype) bucket that reads them
        inside; what it does not take (float64, strided) and a tensor lr go
        through plain torch ops."""
        lr = group["lr"]
        hyper = self._hyper(group, lr)
        native: dict[tuple[torch.device, torch.dtype], list[tuple]] = defaultdict(list)
        for p, g in zip(params, grads, strict=True):
            state = self.state[p]
            if not state:
                state.update(self._new_state(group, [p])[0])
            state["step"] += 1
            work = (local(p), local(g), local(state["exp_avg"]), local(state["exp_avg_sq"]))
            if (
                not isinstance(lr, torch.Tensor)
                and work[0].dtype in ops.DIAG_PARAM_DTYPES
                and work[0].is_contiguous()
                and work[1].is_contiguous()
                and work[0].device.type in ("cpu", "cuda")
            ):
                native[(work[0].device, work[0].dtype)].append((*work, state["step"]))
            else:
                self._step_reference(*work, state["step"], **hyper)
        for bucket in native.values():
            p_, g_, m_, v_, steps = (list(column) for column in zip(*bucket, strict=True))
            torch.ops.fisherprec.diag_step_counted(
                p_, g_, m_, v_, torch.stack(steps), *hyper.values()
            )

    def _increment_steps(
        self, group: dict[str, Any], params: list[torch.Tensor], steps: list[torch.Tensor]
    ) -> list[float]:
        """step += 1 for every parameter of the step; returns the new counts.

        The "step" tensors of a group are 0-dim views of one float32 vector, so
        the increment is one op instead of one per tensor (torch's
        ``_foreach_add_`` over 200 CPU scalars costs as much as the fused step
        over 200×5k elements). Each is still an ordinary 0-dim float32 tensor
        in the state (checkpoints keep AdamW's layout); when the views no longer
        match (first step, a parameter without gradient, a loaded checkpoint)
        they are rebuilt.
        """
        cached = self._step_views.get(id(group))
        if cached is not None:
            views, base = cached
            if len(views) == len(steps) and all(a is b for a, b in zip(views, steps, strict=True)):
                base.add_(1.0)
                return base.tolist()
        base = torch.stack([s.to(dtype=torch.float32, device="cpu") for s in steps]).add_(1.0)
        views = list(base.unbind())
        for p, view in zip(params, views, strict=True):
            self.state[p]["step"] = view
        self._step_views[id(group)] = (views, base)
        return base.tolist()

    @staticmethod
    def _step_reference(
        param: torch.Tensor,
        grad: torch.Tensor,
        exp_avg: torch.Tensor,
        exp_avg_sq: torch.Tensor,
        step: float | torch.Tensor,
        *,
        lr: float | torch.Tensor,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        power: float,
        bias_correction: bool,
        maximize: bool,
    ) -> None:
        """The same step in plain torch ops (float64, other devices, strided
        tensors, and the step torch.compile traces, where `step` and `lr` may be
        tensors)."""
        if exp_avg.shape != param.shape:
            raise RuntimeError(
                f"DiagFisher state has shape {tuple(exp_avg.shape)} but its parameter has "
                f"{tuple(param.shape)}; was the parameter's .data replaced?"
            )
        work = param if param.dtype == exp_avg.dtype else param.to(exp_avg.dtype)
        g = grad.to(exp_avg.dtype)
        if maximize:
            g = -g
        c1 = 1.0 - beta1**step if bias_correction else 1.0
        c2 = 1.0 - beta2**step if bias_correction else 1.0
        work.mul_(1.0 - lr * weight_decay)
        exp_avg.lerp_(g, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        root = exp_avg_sq.sqrt() if power == 0.5 else exp_avg_sq.pow(power)
        denom = root.div_(c2**power).add_(eps)
        step_size = lr / c1
        if isinstance(step_size, torch.Tensor):  # addcdiv_ takes a Python number only
            work.sub_(exp_avg / denom * step_size)
        else:
            work.addcdiv_(exp_avg, denom, value=-step_size)
        if work is not param:
            param.copy_(work)


register(
    OptimizerEntry(
        "diag",
        DiagFisher,
        {"lr": 1e-3},
        fisher="diag",
        description="diagonal EMA Fisher, F^{-1/2} (AdamW/RMSprop) in one fused native step",
    )
)
