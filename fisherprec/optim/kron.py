"""KronFisher: preconditioning with the Kronecker-factored empirical Fisher of
each weight matrix (docs/theory.md, section "Kronecker-factored empirical
Fisher"), in its exact form (``mode="kron"``) or eigenvalue-corrected, as Adam
in the factors' eigenbasis (``mode="eigen"``, the default; EKFAC / SOAP)."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import torch

from fisherprec import ops
from fisherprec.fisher.kron import (
    BlockClass,
    KronLayout,
    check_max_dim,
    lapack_threads,
    safe_eigh,
)
from fisherprec.optim._base import (
    SHARD_KEY,
    FisherOptimizer,
    check_betas,
    check_graft,
    check_nonnegative,
    check_positive_int,
    check_power,
    local,
    shard_fingerprint,
)
from fisherprec.optim._work_split import WorkSplit, work_split
from fisherprec.optim.registry import OptimizerEntry, register

__all__ = ["KronFisher", "state_bytes"]

MODES = ("eigen", "kron")
# Refreshes with a block side at least this long run LAPACK on one thread
# (fisherprec.fisher.kron.lapack_threads); below it, the ~30 ms the thread pool
# takes to come back after a change costs more than it saves.
LAPACK_ONE_THREAD_MIN_DIM = 256
REFRESHES = ("eigh", "qr")
# The most numbers in one bucket of equal-size blocks (see _Plan): a step's
# temporaries are a few bucket-sized tensors, so batching adds at most a few
# times this much (float32: 16 MiB each) to its peak memory; past that size
# the products are large enough that one call per parameter costs nothing.
BUCKET_MAX_ELEMENTS = 1 << 22


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 state for float32/bfloat16/float16 parameters; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _is_matrix(shape: Sequence[int], precondition_1d: bool) -> bool:
    """Whether a tensor of `shape` gets Kronecker factors (else the AdamW step;
    empty tensors too)."""
    if math.prod(shape) == 0:
        return False
    return len(shape) >= 2 or (len(shape) == 1 and precondition_1d)


def _needs_diag_moment(mode: str, graft: str | None) -> bool:
    # Adam's param-space second moment: for the graft's reference norm, and in
    # mode "kron" for the AdamW step of blocks that never had a decomposition.
    return graft == "diag" or mode == "kron"


def state_bytes(
    shape: Sequence[int],
    *,
    mode: str = "eigen",
    graft: str | None = "diag",
    max_dim: int = 1024,
    precondition_1d: bool = False,
    dtype: torch.dtype = torch.float32,
) -> int:
    """Bytes of KronFisher's state for one parameter of `shape` and `dtype`,
    computed without allocating (``KronFisher.memory_bytes`` of a parameter
    after its first step equals it; tested).

    AdamW route (0-D, and 1-D unless ``precondition_1d``): step + m + v.
    Matrix route: step, m, v (if grafted or in mode "kron"), per block of
    r × c the factors L, R and bases Q_L, Q_R (2·(r² + c²) numbers), the
    rotated second moment (mode "eigen", r·c) or the eigenvalues (mode "kron",
    r + c), an int32 status and a bool per block, and an int64 failure count."""
    size = torch.empty((), dtype=_state_dtype(dtype)).element_size()
    numel = math.prod(shape)
    if not _is_matrix(shape, precondition_1d):
        return 4 + 2 * numel * size
    layout = KronLayout(shape, max_dim)
    total = 4 + 8 + numel * size  # step, eig_failures, exp_avg
    if _needs_diag_moment(mode, graft):
        total += numel * size
    total += 2 * layout.factor_numel() * size  # factors and bases
    for c in layout.classes:
        total += c.count * (4 + 1)  # basis_status (int32), basis_valid (bool)
        if mode == "eigen":
            total += c.count * c.rows * c.cols * size
        else:
            total += c.count * (c.rows + c.cols) * size
    return total


class KronFisher(FisherOptimizer):
    r"""Kronecker-factored empirical Fisher preconditioning (docs/theory.md,
    section "Kronecker-factored empirical Fisher").

    Each parameter with two or more dimensions (and 1-D ones with
    ``precondition_1d=True``) is viewed as a matrix G (conv weights
    (o, i, kh, kw) as (o, i·kh·kw), other ranks as (d0, rest), 1-D as (1, n))
    and cut into blocks of at most ``max_dim`` per side
    (``fisherprec.fisher.kron.KronLayout``). Per block, at every step t, with g
    the gradient (negated when ``maximize``), c_k = 1 − β_k^t:

    .. math::
        \begin{aligned}
        L &\leftarrow \beta_2 L + (1-\beta_2)\, G G^\top, \qquad
        R \leftarrow \beta_2 R + (1-\beta_2)\, G^\top G \\
        Q_L, Q_R &\leftarrow \text{eigenbases of } L, R
            \quad (t = 1, 1+U, 1+2U, \dots;\ U = \texttt{update\_every}) \\
        m &\leftarrow \beta_1 m + (1-\beta_1)\, G \quad\text{(parameter space)} \\
        \texttt{eigen}:\quad \tilde G &= Q_L^\top G Q_R, \quad
            \tilde v \leftarrow \beta_2 \tilde v + (1-\beta_2)\, \tilde G^{2}, \quad
            D = Q_L \Big[\frac{Q_L^\top (m/c_1) Q_R}{(\tilde v/c_2)^{p} + \epsilon}\Big] Q_R^\top \\
        \texttt{kron}:\quad D &= Q_L \Big[(Q_L^\top (m/c_1) Q_R) \oslash
            (a b^\top/\mathrm{tr} L + \lambda)^{p}\Big] Q_R^\top
            = (\hat F + \lambda I)^{-p}\, \hat m \\
        \theta &\leftarrow \theta\,(1 - \alpha\,\mathrm{wd}) - \alpha\, D \cdot
            \frac{\lVert A\rVert}{\lVert D\rVert}
            \quad (\texttt{graft="diag"}: A = \hat m/(\sqrt{\hat v}+\epsilon)
            \text{ on the block, Adam's step})
        \end{aligned}

    with a, b the eigenvalues of L/c_2, R/c_2 (clamped at 0) at the last
    refresh. ``mode="eigen"`` is Adam run in the rotated coordinates (its second
    moment is the best diagonal Fisher in the Kronecker eigenbasis; ``damping``
    is not used there, ``eps`` plays its part); ``mode="kron"`` is the exact
    (F̂ + λI)^{-p} step with F̂ = (L ⊗ R)/tr L; ``power=0.25`` there is
    Shampoo's L^{-1/4} G R^{-1/4} up to a scalar, which the graft removes.

    Refreshes: the first decomposition of a block is ``torch.linalg.eigh``.
    Later ones are ``refresh="eigh"`` (default) again, or ``refresh="qr"``:
    one power-iteration step Q ← qr(L Q) from the current basis, as SOAP does.
    Measured on this project's 2-core CPU (bench/kron_refresh.py, float32,
    LAPACK on one thread): a QR refresh costs 0.65× an eigh one per 1024 × 1024
    factor and 0.87× for the whole 4 × (1024 × 1024) MLP (1.9 s against 2.2 s;
    with the decompositions side by side, see below, 0.78–0.89 s against
    0.88–1.08 s on 2026-12-03), but on a 64→256→256→10 MLP (300 steps, U = 10)
    it ended at a final loss of 0.049 against 0.044 with eigh (mean of 2
    seeds; 0.051 against 0.046 over 3 seeds in an earlier float64 run). At
    d = 1024, U = 10 the refreshes are ~15% of the amortised step (~25% before
    2026-12-03), so eigh costs a few % more time for ~10% lower loss: eigh is
    the default. Refreshes run in the state's dtype. In mode "kron" the
    eigenvalues after a QR refresh are the Rayleigh quotients diag(Qᵀ L Q),
    so that step is exact for the current factors only with eigh.

    Moments across a change of basis: the first moment lives in parameter
    space, so it needs nothing. The rotated second moment ṽ is re-projected:
    with O = Q_newᵀ Q_old per side, ṽ ← (O_L ∘ O_L) ṽ (O_R ∘ O_R)ᵀ, which is
    the diagonal of the old diagonal second moment expressed in the new basis
    (a permutation of the basis permutes ṽ; Σ ṽ is kept).

    A block whose decomposition fails (non-finite factor, no convergence,
    non-finite result) keeps its last good basis; the failure is counted in
    ``state[p]["eig_failures"]`` and :attr:`eig_failures`, and the outcome of
    the last refresh is ``state[p]["basis_status<c>"]`` (``ops.ROOT_*``). Before
    a block's first good decomposition, mode "eigen" uses the identity basis
    (plain Adam) and mode "kron" takes Adam's step.

    Other parameters (0-D, and 1-D unless ``precondition_1d``) take the AdamW
    step with the same lr, betas, eps and weight decay.

    Memory (``state_bytes``): per element m (and v when grafted), plus per
    block 2·(r² + c²)/(r·c) numbers for factors and bases and, in mode "eigen",
    ṽ: at most 8 float32 numbers per parameter at GPT-2-small shapes with the
    defaults (tested).

    Cost: per block of r × c and step, 2·rc(r + c) flops for the factors and
    6·rc(r + c) for the rotations of G and m and back (mode "eigen"); a
    refresh adds an eigh per factor and 2(r³ + c³) + 2·rc(r + c) flops to
    re-project ṽ. A step groups the blocks of equal size across the
    parameters of a group ("buckets": the gpt task's four (384, 128) qkv
    weights are one) and runs each product, EMA and decomposition once per
    bucket; the per-block state (``left0``, ``basis_left0``, …, and the
    moments of parameters that are one block) are views of the bucket's
    stacked buffers, so the state keeps its keys, shapes and dtypes
    (checkpoints of the unbatched implementation load, tested). A refresh
    runs its decompositions side by side on as many Python threads as torch
    has, each on one LAPACK thread (``_decompose_all``), then the
    re-projections on every thread. Measured on the 2-core shared CPU
    (2026-12-03, torch 2.13.0, ``python bench/kron_gpt_step.py adamw kron``,
    six runs at load average 1.3–1.8): the gpt task's step 31–41 ms median,
    46–58 ms mean with its refreshes (unbatched 36–55 and 65–91 ms), a full
    training step 1.42–1.54× AdamW's (1.60–1.72× unbatched); see
    docs/benchmarks.md. What bounds it: the products (~3.9 Gflop per step
    there, ~30 ms on 2 threads) and the eigh of the 512 × 512 factors at
    each refresh.

    Sharded parameters (FSDP2's ``fully_shard``, DTensors): each rank treats
    its local shard as the matrix (a shard of rows of a weight, as
    ``fully_shard`` cuts dim 0), so its factors are those of its own rows
    (Distributed Shampoo's choice: blocks never span ranks and a step needs no
    communication). The blocking therefore depends on the sharding: the step
    is the one-process step of the same model with each shard a parameter of
    its own (tested on 2 gloo ranks). The state is per rank and reloads at the
    same sharding only (DCP resharding is DiagFisher's).

    Args:
        params: parameters or param groups.
        lr: α (a float, or a 1-element tensor read each step).
        betas: (β1, β2); β2 also drives the EMA of the factors.
        eps: Adam's ε, in the rotated coordinates (mode "eigen"), in the graft
            and in the AdamW step.
        weight_decay: decoupled (AdamW) weight decay.
        mode: ``"eigen"`` or ``"kron"`` (see above).
        power: p, the exponent (1/2: F^{-1/2}; 1/4: Shampoo).
        damping: λ ≥ 0 inside the root of mode "kron" (unused in mode "eigen").
        max_dim: the longest side of a block.
        update_every: U, steps between refreshes of the bases.
        refresh: ``"eigh"`` or ``"qr"`` for the refreshes after the first.
        graft: ``"diag"`` (rescale each block to the norm of its Adam step) or ``None``.
        precondition_1d: give 1-D parameters (biases, norms) factors too.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"raise"`` or ``"skip"`` (see FisherOptimizer).
        process_group: under DDP, a torch.distributed process group (e.g.
            ``torch.distributed.group.WORLD``) whose ranks split each refresh:
            every rank decomposes about 1/world_size of the blocks due and one
            all_gather shares the results, so the step is bit-identical to the
            unsplit one (tested on 2 gloo processes). Every rank must step
            the same parameters (as under DDP). Not saved in the state dict.

    Example:
        >>> import torch, fisherprec as fp
        >>> model = torch.nn.Linear(20, 3)
        >>> opt = fp.optim.KronFisher(model.parameters(), lr=1e-2, update_every=2)
        >>> for _ in range(4):
        ...     opt.zero_grad()
        ...     model(torch.randn(8, 20)).square().mean().backward()
        ...     opt.step()
        >>> opt.eig_failures, sorted(opt.state[model.bias])
        (0, ['exp_avg', 'exp_avg_sq', 'step'])
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        mode: str = "eigen",
        power: float = 0.5,
        damping: float = 1e-8,
        max_dim: int = 1024,
        update_every: int = 10,
        refresh: str = "eigh",
        graft: str | None = "diag",
        precondition_1d: bool = False,
        maximize: bool = False,
        nonfinite: str = "propagate",
        process_group: Any = None,
    ) -> None:
        self._work_split = work_split(process_group)
        defaults = {
            "lr": lr,
            "betas": tuple(betas) if isinstance(betas, Sequence) else betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "mode": mode,
            "power": power,
            "damping": damping,
            "max_dim": max_dim,
            "update_every": update_every,
            "refresh": refresh,
            "graft": graft,
            "precondition_1d": precondition_1d,
            "maximize": maximize,
            "nonfinite": nonfinite,
        }
        self._layouts: dict[tuple[tuple[int, ...], int], KronLayout] = {}
        self._plans: dict[tuple, _Plan] = {}
        super().__init__(params, defaults)

    @classmethod
    def _check_group(cls, group: dict[str, Any]) -> None:
        super()._check_group(group)
        betas = group["betas"]
        if not isinstance(betas, Sequence):
            raise ValueError(f"Invalid betas: {betas!r} (expected two values)")
        check_betas(betas)
        check_nonnegative("epsilon", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])
        if group["mode"] not in MODES:
            raise ValueError(f"Invalid mode value: {group['mode']!r}; choose one of {MODES}")
        check_power(group["power"])
        check_nonnegative("damping", group["damping"])
        if group["mode"] == "kron" and group["damping"] == 0.0:
            raise ValueError("Invalid damping value: 0.0 (mode='kron' needs damping > 0)")
        check_max_dim(group["max_dim"])
        check_positive_int("update_every", group["update_every"])
        if group["refresh"] not in REFRESHES:
            raise ValueError(
                f"Invalid refresh value: {group['refresh']!r}; choose one of {REFRESHES}"
            )
        check_graft(group["graft"])
        for flag in ("precondition_1d", "maximize"):
            if not isinstance(group[flag], bool):
                raise ValueError(f"Invalid {flag} value: {group[flag]!r} (must be a bool)")

    # A shard's blocks are its own (see "Sharded parameters" above).
    steps_dtensor_shards = True

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_layouts", {})
        self.__dict__.setdefault("_plans", {})

    @property
    def eig_failures(self) -> int:
        """Block decompositions that failed, summed over refreshes and parameters."""
        return int(sum(int(s["eig_failures"]) for s in self.state.values() if "eig_failures" in s))

    # --------------------------------------------------------------- state
    def _layout(self, shape: Sequence[int], max_dim: int) -> KronLayout:
        key = (tuple(shape), max_dim)
        if key not in self._layouts:
            self._layouts[key] = KronLayout(key[0], max_dim)
        return self._layouts[key]

    def _state_spec(
        self, group: dict[str, Any], shape: Sequence[int], dtype: torch.dtype
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype, str]]:
        """key → (shape, dtype, initial value) of a parameter's state."""
        shape, floats = tuple(shape), _state_dtype(dtype)
        spec = {"step": ((), torch.float32, "zeros"), "exp_avg": (shape, floats, "zeros")}
        matrix = _is_matrix(shape, group["precondition_1d"])
        if not matrix or _needs_diag_moment(group["mode"], group["graft"]):
            spec["exp_avg_sq"] = (shape, floats, "zeros")
        if not matrix:
            return spec
        spec["eig_failures"] = ((), torch.int64, "zeros")
        for c, cls in enumerate(self._layout(shape, group["max_dim"]).classes):
            k, r, n = cls.count, cls.rows, cls.cols
            spec[f"left{c}"] = ((k, r, r), floats, "zeros")
            spec[f"right{c}"] = ((k, n, n), floats, "zeros")
            spec[f"basis_left{c}"] = ((k, r, r), floats, "eye")
            spec[f"basis_right{c}"] = ((k, n, n), floats, "eye")
            spec[f"basis_status{c}"] = ((k,), torch.int32, "none")
            spec[f"basis_valid{c}"] = ((k,), torch.bool, "zeros")
            if group["mode"] == "eigen":
                spec[f"exp_avg_sq_rot{c}"] = ((k, r, n), floats, "zeros")
            else:
                spec[f"eig_left{c}"] = ((k, r), floats, "zeros")
                spec[f"eig_right{c}"] = ((k, n), floats, "zeros")
        return spec

    def _new_state(
        self, group: dict[str, Any], params: Sequence[torch.Tensor]
    ) -> list[dict[str, Any]]:
        states = []
        for p in params:
            state: dict[str, Any] = {}
            shard = local(p)  # (a DTensor's blocks stay inside its local shard)
            for key, (shape, dtype, init) in self._state_spec(group, shard.shape, p.dtype).items():
                # step on the CPU (as torch.optim); the failure count on the
                # parameter's device, so counting needs no host sync.
                device = torch.device("cpu") if key == "step" else shard.device
                if init == "eye":
                    value = torch.eye(shape[-1], dtype=dtype, device=device).repeat(shape[0], 1, 1)
                elif init == "none":
                    value = torch.full(shape, ops.ROOT_NONE, dtype=dtype, device=device)
                else:
                    value = torch.zeros(shape, dtype=dtype, device=device)
                state[key] = value
            fingerprint = shard_fingerprint(p)
            if fingerprint is not None:  # (the blocks are this shard's)
                state[SHARD_KEY] = fingerprint
            states.append(state)
        return states

    def _init_state(self, group: dict[str, Any], p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state.update(self._new_state(group, [p])[0])
        return state

    def _load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The base class checks keys and shapes against :meth:`_state_spec` (so
        a checkpoint of another model, ``max_dim``, ``mode`` or
        ``precondition_1d`` raises and loads nothing); the step computes in
        the dtype of the moments, so their dtypes must match it too."""
        super()._load_state_dict(state_dict)
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                spec = self._state_spec(group, local(p).shape, p.dtype)
                for key, (_, dtype, _) in spec.items():
                    if state and state[key].dtype != dtype:
                        raise ValueError(
                            f"state[{key!r}] of parameter {index} has dtype {state[key].dtype}, "
                            f"expected {dtype}"
                        )
                index += 1
        # The loaded tensors are no bucket's views: the next step rebinds them.
        # (A new dict: a failed load restores the old attributes, plans included.)
        self._plans = {}

    # ---------------------------------------------------------------- step
    def _plan(self, group: dict[str, Any], params: list[torch.Tensor]) -> _Plan:
        """The group's batching (``_Plan``): cached while every state tensor it
        made a view of is still in place; rebuilt (one copy of the state) on
        the first step, after a checkpoint is loaded, when the set of
        parameters with gradients changes, or when a state entry was replaced."""
        key = (id(group), tuple(id(p) for p in params), group["mode"], group["max_dim"],
               group["precondition_1d"])  # fmt: skip
        plan = self._plans.get(key)
        if plan is not None and plan.bound(self.state):
            return plan
        if len(self._plans) >= 8:  # gradient sets that keep changing: keep the cache small
            self._plans.clear()
        plan = _Plan(self, group, params)
        self._plans[key] = plan
        return plan

    def _refresh(
        self,
        group: dict[str, Any],
        part: _Part,
        due: list[_Bucket],
        states: list[dict[str, Any]],
        steps: list[int],
    ) -> None:
        """New bases for the blocks due in the buckets `due` of `part`: every
        decomposition first (``_decompose_all``, split across the ranks of the
        process group when there is one), then the reprojections."""
        requests = [r for bucket in due for r in bucket.refresh_requests()]
        eigenvalues = group["mode"] == "kron"
        if self._work_split is None:
            decomposed = _decompose_all(
                requests, group["refresh"], eigenvalues=eigenvalues, device=part.device
            )
        else:
            decomposed = _decompose_split(
                self._work_split, requests, group["refresh"], eigenvalues, part.device
            )
        for n, bucket in enumerate(due):
            bucket.refresh(group, states, steps, decomposed[2 * n : 2 * n + 2], self._work_split, n)

    def _refresh_all(self) -> None:
        """Refresh the bases of every block that has factors, as a step due to
        refresh does, without the rest of a step (benchmarks time it; the
        factors of parameters without a step yet are zero: call it after one)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if self.state.get(p)]
            if not params:
                continue
            plan = self._plan(group, params)
            steps = [int(self.state[p]["step"]) for p in params]
            for part in plan.parts:
                states = [self.state[params[i]] for i in part.indices]
                part_steps = [steps[i] for i in part.indices]
                for bucket in part.buckets:
                    bucket.due([1] * len(part_steps), 1)  # every block is due
                if part.buckets:
                    self._refresh(group, part, part.buckets, states, part_steps)

    def _step_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        # Parameter-space work (moments, Adam's step, the update) runs as
        # multi-tensor ops over the group; block work (factor EMAs, refreshes,
        # rotations) as batched ops per bucket of equal-size blocks. Order: factor
        # updates (GEMMs on every thread), the decompositions due this step
        # (LAPACK: see _decompose_all), the rest of the refreshes, then the
        # directions and the parameter updates.
        for p in params:
            self._init_state(group, p)
        plan = self._plan(group, params)
        all_steps = plan.increment_steps()
        beta1, beta2 = group["betas"]
        lr = float(group["lr"])
        for part in plan.parts:
            states = [self.state[params[i]] for i in part.indices]
            steps = [all_steps[i] for i in part.indices]
            grad = [local(grads[i]) for i in part.indices]
            grad = [g if g.dtype == part.dtype else g.to(part.dtype) for g in grad]
            if group["maximize"]:
                grad = torch._foreach_neg(grad)
            for bucket in part.buckets:
                bucket.update_factors(grad, beta2)
            due = [b for b in part.buckets if b.due(steps, group["update_every"])]
            if due:
                self._refresh(group, part, due, states, steps)
            moments = [s["exp_avg"] for s in states]
            torch._foreach_lerp_(moments, grad, 1.0 - beta1)
            # Adam's m̂/(sqrt(v̂)+ε) for the parameters that keep a second moment v.
            adam: list[torch.Tensor | None] = [None] * len(states)
            with_v = [j for j, s in enumerate(states) if "exp_avg_sq" in s]
            if with_v:
                v = [states[j]["exp_avg_sq"] for j in with_v]
                g = [grad[j] for j in with_v]
                torch._foreach_mul_(v, beta2)
                torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)
            # (the matrices' Adam steps are computed per bucket, in block layout)
            plain = [j for j, matrix in enumerate(part.is_matrix) if not matrix]
            if plain:
                denom = torch._foreach_div(
                    [states[j]["exp_avg_sq"] for j in plain],
                    [1.0 - beta2 ** steps[j] for j in plain],
                )
                torch._foreach_sqrt_(denom)
                torch._foreach_add_(denom, group["eps"])
                step = torch._foreach_div(
                    [moments[j] for j in plain], [1.0 - beta1 ** steps[j] for j in plain]
                )
                torch._foreach_div_(step, denom)
                for j, a in zip(plain, step, strict=True):
                    adam[j] = a
            directions = [b.direction(group, states, steps) for b in part.buckets]
            # θ ← θ (1 − α wd) − α D in the state's dtype (bfloat16 parameters
            # are updated in float32 and rounded once).
            targets = []
            for i in part.indices:
                p = local(params[i])
                same = p.dtype == part.dtype and p.is_contiguous()
                targets.append(
                    p if same else p.to(part.dtype, memory_format=torch.contiguous_format)
                )
            if lr * group["weight_decay"] != 0.0:
                torch._foreach_mul_(targets, 1.0 - lr * group["weight_decay"])
            if plain:
                torch._foreach_add_(
                    [targets[j] for j in plain], [adam[j] for j in plain], alpha=-lr
                )
            for bucket, d in zip(part.buckets, directions, strict=True):
                bucket.apply(targets, d, -lr)
            for i, target in zip(part.indices, targets, strict=True):
                shard = local(params[i])
                if target is not shard:
                    shard.copy_(target)


# ------------------------------------------------------------------ batching
# A step groups the blocks of a param group by (device, dtype, rows, cols): the
# GPT task's four (384, 128) qkv weights are one bucket of four blocks, so each
# product, EMA and decomposition is one batched call per bucket instead of one
# per parameter. The per-block state tensors stay where checkpoints expect them
# (``state[p]["left0"]`` and so on, same shapes and dtypes): they are views of
# the bucket's stacked buffers, rebound (one copy) when they no longer are.

_EIGEN_KEYS = ("exp_avg_sq_rot",)
_KRON_KEYS = ("eig_left", "eig_right")
_BLOCK_KEYS = ("left", "right", "basis_left", "basis_right", "basis_status", "basis_valid")


def _tiles(x: torch.Tensor, m: int, n: int, cls: BlockClass) -> torch.Tensor:
    """The blocks of class `cls` of `x` (its matrix view m × n) as a
    (row_blocks, col_blocks, rows, cols) view (of a copy when `x` is not
    contiguous: read it, do not write it)."""
    region = x.reshape(m, n)[cls.row_start : cls.row_stop, cls.col_start : cls.col_stop]
    return (
        region.unflatten(0, (cls.row_blocks, cls.rows))
        .unflatten(2, (cls.col_blocks, cls.cols))
        .permute(0, 2, 1, 3)
    )


class _Entry(NamedTuple):
    j: int  # the parameter's index in its part
    c: int  # the class's index in the parameter's layout
    cls: BlockClass
    offset: int  # its first block in the bucket
    m: int
    n: int
    whole: bool  # the parameter is this one block (no side longer than max_dim)


class _Bucket:
    """The blocks of one size rows × cols (one device and dtype) across the
    parameters of a part: stacked per-block state (K, ·, ·) and the products."""

    def __init__(self, mode: str, rows: int, cols: int, entries: list[_Entry]) -> None:
        self.mode, self.rows, self.cols, self.entries = mode, rows, cols, entries
        self.size = sum(e.cls.count for e in entries)
        self.keys = _BLOCK_KEYS + (_EIGEN_KEYS if mode == "eigen" else _KRON_KEYS)
        self.buffers: dict[str, torch.Tensor] = {}
        self.views: list[tuple[int, str, torch.Tensor]] = []
        self.grad: torch.Tensor | None = None  # this step's gradient blocks
        # The parameter-space moments (exp_avg, and exp_avg_sq when kept) in
        # block layout: when every entry is a whole parameter, its state is a
        # view of these; otherwise they are copied in at each step.
        self.moments: dict[str, torch.Tensor] = {}
        self.split = any(not e.whole for e in entries)
        self._due: list[bool] = []

    def slices(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each entry's (row_blocks, col_blocks, rows, cols) part of a (K, rows, cols) `x`."""
        return [
            x[e.offset : e.offset + e.cls.count].view(
                e.cls.row_blocks, e.cls.col_blocks, self.rows, self.cols
            )
            for e in self.entries
        ]

    def bind(self, states: list[dict[str, Any]]) -> None:
        """Stack the entries' per-block state; make each state tensor a view of it."""
        self.buffers, self.views = {}, []
        for name in self.keys:
            parts = [states[e.j][f"{name}{e.c}"] for e in self.entries]
            buffer = parts[0].clone() if len(parts) == 1 else torch.cat(parts)
            self.buffers[name] = buffer
            for e in self.entries:
                view = buffer[e.offset : e.offset + e.cls.count]
                states[e.j][f"{name}{e.c}"] = view
                self.views.append((e.j, f"{name}{e.c}", view))
        self.moments = {}
        for name in ("exp_avg", "exp_avg_sq"):
            if self.split or name not in states[self.entries[0].j]:
                continue
            parts = [states[e.j][name].reshape(1, self.rows, self.cols) for e in self.entries]
            self.moments[name] = buffer = torch.cat(parts)
            for e in self.entries:
                view = buffer[e.offset].view(states[e.j][name].shape)
                states[e.j][name] = view
                self.views.append((e.j, name, view))

    def bound(self, states: list[dict[str, Any]]) -> bool:
        return all(states[j].get(key) is view for j, key, view in self.views)

    def gather(self, out: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Copy each entry's blocks of its parameter-shaped tensor into `out` (K, rows, cols)."""
        sources = [_tiles(tensors[e.j], e.m, e.n, e.cls) for e in self.entries]
        torch._foreach_copy_(self.slices(out), sources)
        return out

    def update_factors(self, grads: list[torch.Tensor], beta2: float) -> None:
        """L ← β2 L + (1 − β2) G Gᵀ and R ← β2 R + (1 − β2) Gᵀ G for every block."""
        left = self.buffers["left"]
        self.grad = g = self.gather(left.new_empty(self.size, self.rows, self.cols), grads)
        self.buffers["left"].baddbmm_(g, g.mT, beta=beta2, alpha=1.0 - beta2)
        self.buffers["right"].baddbmm_(g.mT, g, beta=beta2, alpha=1.0 - beta2)

    def due(self, steps: list[int], update_every: int) -> bool:
        self._due = [(steps[e.j] - 1) % update_every == 0 for e in self.entries]
        return any(self._due)

    def _per_block(self, values: list[float]) -> float | torch.Tensor:
        """One number per entry → a scalar when all agree, else (K, 1, 1)."""
        if all(v == values[0] for v in values):
            return values[0]
        per_block = [
            v for e, v in zip(self.entries, values, strict=True) for _ in range(e.cls.count)
        ]
        left = self.buffers["left"]
        return torch.tensor(per_block, dtype=left.dtype, device=left.device)[:, None, None]

    # ------------------------------------------------------------- refresh
    def refresh_requests(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The decompositions a refresh of the blocks due needs: (factor, old
        basis, valid) for the left then the right side (see ``_decompose``)."""
        entries = [e for e, d in zip(self.entries, self._due, strict=True) if d]
        self._refreshing = entries
        if len(entries) == len(self.entries):
            self._select = None
        else:
            rows = [i for e in entries for i in range(e.offset, e.offset + e.cls.count)]
            self._select = torch.tensor(rows, device=self.buffers["left"].device)
        valid = self._take(self.buffers["basis_valid"])
        return [
            (self._take(self.buffers[side]), self._take(self.buffers[f"basis_{side}"]), valid)
            for side in ("left", "right")
        ]

    def _take(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._select is None else x.index_select(0, self._select)

    def _put(self, x: torch.Tensor, value: torch.Tensor) -> None:
        if self._select is None:
            x.copy_(value)
        else:
            x.index_copy_(0, self._select, value)

    def refresh(
        self,
        group: dict[str, Any],
        states: list[dict[str, Any]],
        steps: list[int],
        decomposed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
        split: WorkSplit | None = None,
        turn: int = 0,
    ) -> None:
        """Install the new bases (and, in mode "kron", eigenvalues) of the
        blocks due from `decomposed`, the results of ``refresh_requests``;
        blocks whose decomposition fails keep their old ones. With `split`
        (DDP work splitting), this rank re-projects its share of the blocks'
        second moments (batch number `turn`) and one all_gather brings the rest."""
        entries, take, put, buf = self._refreshing, self._take, self._put, self.buffers
        kron = self.mode == "kron"
        valid = take(buf["basis_valid"])
        new = {"left": decomposed[0][0], "right": decomposed[1][0]}
        eigvals = {"left": decomposed[0][2], "right": decomposed[1][2]}
        statuses = [decomposed[0][1], decomposed[1][1]]
        status = torch.maximum(*statuses)
        ok = status == ops.ROOT_OK
        put(buf["basis_status"], status)
        # Where every block succeeded (the usual case) the new values go in
        # without a select against the old ones.
        all_ok = buf["left"].device.type != "meta" and bool(ok.all())

        def keep_failed(value: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
            return (
                value if all_ok else torch.where(ok.view(-1, *[1] * (value.dim() - 1)), value, old)
            )

        if not all_ok:
            failed = ~ok
            start = 0
            for e in entries:
                states[e.j]["eig_failures"] += failed[start : start + e.cls.count].sum()
                start += e.cls.count
        if kron:
            # F̂'s eigenvalues a_i b_j / tr L with a, b those of L/c2, R/c2:
            # a/tr L is scale-free, so c2 enters once, through b.
            trace = take(buf["left"]).diagonal(dim1=1, dim2=2).sum(dim=1)
            inv_trace = torch.where(trace > 0, 1.0 / trace, 0.0)
            beta2 = group["betas"][1]
            c2s = [1.0 - beta2 ** steps[e.j] for e in entries]
            if all(c == c2s[0] for c in c2s):
                c2: float | torch.Tensor = c2s[0]
            else:
                c2 = torch.tensor(
                    [c for e, c in zip(entries, c2s, strict=True) for _ in range(e.cls.count)],
                    dtype=trace.dtype, device=trace.device,
                )[:, None]  # fmt: skip
            eig_left = eigvals["left"].clamp_min(0) * inv_trace[:, None]
            eig_right = eigvals["right"].clamp_min(0) / c2
            for key, value in (("eig_left", eig_left), ("eig_right", eig_right)):
                put(buf[key], keep_failed(value, take(buf[key])))
        else:
            v_rot = take(buf["exp_avg_sq_rot"])
            sides = (take(buf["basis_left"]), new["left"], take(buf["basis_right"]), new["right"])
            if split is None:
                moved = _reproject_each(v_rot, *sides)
            else:
                count = v_rot.shape[0]
                start, stop = split.share(count, turn)
                mine = _reproject_each(v_rot[start:stop], *(x[start:stop] for x in sides))
                (pieces,) = split.exchange([mine.flatten(1)], [count], [turn])
                moved = torch.cat([rows for _, rows in pieces]).view_as(v_rot)
            put(buf["exp_avg_sq_rot"], keep_failed(moved, v_rot))
        for side in ("left", "right"):
            put(buf[f"basis_{side}"], keep_failed(new[side], take(buf[f"basis_{side}"])))
        put(buf["basis_valid"], valid | ok)

    # ----------------------------------------------------------- direction
    def direction(
        self,
        group: dict[str, Any],
        states: list[dict[str, Any]],
        steps: list[int],
    ) -> torch.Tensor:
        """The step directions D (K, rows, cols) of the bucket's blocks
        (factors, bases and the parameter-space moments already current)."""
        beta1, beta2 = group["betas"]
        mode, power, eps = self.mode, group["power"], group["eps"]
        c1 = self._per_block([1.0 - beta1 ** steps[e.j] for e in self.entries])
        c2 = self._per_block([1.0 - beta2 ** steps[e.j] for e in self.entries])
        buf = self.buffers
        q_left, q_right = buf["basis_left"], buf["basis_right"]
        moments = self.moments
        if self.split:  # blocks of parameters cut into several: copied in
            moments = {
                name: self.gather(torch.empty_like(self.grad), [s[name] for s in states])
                for name in ("exp_avg", "exp_avg_sq")
                if name in states[self.entries[0].j]
            }
        adam_blocks = denom = None
        if "exp_avg_sq" in moments:  # Adam's m̂/(sqrt(v̂)+ε), as for the other parameters
            denom = (moments["exp_avg_sq"] / c2).sqrt_().add_(eps)
            adam_blocks = (moments["exp_avg"] / c1).div_(denom)
        m_rot = torch.bmm(torch.bmm(q_left.mT, moments["exp_avg"]), q_right)
        if mode == "eigen":
            g_rot = torch.bmm(torch.bmm(q_left.mT, self.grad), q_right)
            v_rot = buf["exp_avg_sq_rot"]
            v_rot.mul_(beta2).addcmul_(g_rot, g_rot, value=1.0 - beta2)
            scaled = torch.div(v_rot, c2, out=g_rot)  # (g_rot is spent)
            denom = scaled.sqrt_() if power == 0.5 else scaled.pow_(power)
            d_rot = m_rot.div_(c1).div_(denom.add_(eps))
        else:
            fisher = buf["eig_left"][:, :, None] * buf["eig_right"][:, None, :]
            d_rot = m_rot.div_(c1).mul_(fisher.add_(group["damping"]).pow_(-power))
        d = torch.bmm(torch.bmm(q_left, d_rot), q_right.mT)
        if mode == "kron":  # no decomposition yet: Adam's step
            d = torch.where(buf["basis_valid"][:, None, None], d, adam_blocks)
        if group["graft"] == "diag":
            norm = torch.linalg.vector_norm(d, dim=(1, 2), keepdim=True)
            target = torch.linalg.vector_norm(adam_blocks, dim=(1, 2), keepdim=True)
            # A zero direction stays zero; NaN/Inf still propagate (nonfinite="propagate").
            zero = norm == 0
            if d.device.type == "cpu" and not bool(zero.any()):  # (no sync elsewhere)
                d = d.mul_(target / norm) if d is not adam_blocks else d * (target / norm)
            else:
                d = torch.where(zero, 0.0, d * (target / norm))
        self.grad = None
        return d

    def apply(self, targets: list[torch.Tensor], d: torch.Tensor, alpha: float) -> None:
        """targets[j] += alpha · D on each entry's blocks (targets contiguous)."""
        views = [_tiles(targets[e.j], e.m, e.n, e.cls) for e in self.entries]
        torch._foreach_add_(views, self.slices(d), alpha=alpha)


class _Part:
    """The parameters of one (device, state dtype) in a step's plan."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.indices: list[int] = []
        self.is_matrix: list[bool] = []
        self.buckets: list[_Bucket] = []


class _Plan:
    """How one group's step is batched: parts by (device, dtype), buckets of
    equal-size blocks, and the step counts as views of one vector."""

    def __init__(self, opt: KronFisher, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        self.params = params
        parts: dict[tuple[torch.device, torch.dtype], _Part] = {}
        for i, p in enumerate(params):
            p = local(p)  # shapes and devices of the shard a rank steps
            key = (p.device, _state_dtype(p.dtype))
            part = parts.setdefault(key, _Part(*key))
            part.indices.append(i)
            part.is_matrix.append(_is_matrix(p.shape, group["precondition_1d"]))
        self.parts = list(parts.values())
        states = [opt.state[p] for p in params]
        for part in self.parts:
            # Blocks by size, packed into buckets of at most BUCKET_MAX_ELEMENTS
            # numbers (a parameter larger than that is a bucket of its own).
            by_size: dict[tuple[int, int], list[list[_Entry]]] = {}
            filled: dict[tuple[int, int], int] = {}
            for j, i in enumerate(part.indices):
                if not part.is_matrix[j]:
                    continue
                layout = opt._layout(local(params[i]).shape, group["max_dim"])
                for c, cls in enumerate(layout.classes):
                    size, numel = (cls.rows, cls.cols), cls.count * cls.rows * cls.cols
                    buckets = by_size.setdefault(size, [[]])
                    if buckets[-1] and filled[size] + numel > BUCKET_MAX_ELEMENTS:
                        buckets.append([])
                        filled[size] = 0
                    offset = sum(e.cls.count for e in buckets[-1])
                    whole = cls.rows == layout.m and cls.cols == layout.n
                    buckets[-1].append(_Entry(j, c, cls, offset, layout.m, layout.n, whole))
                    filled[size] = filled.get(size, 0) + numel
            part_states = [states[i] for i in part.indices]
            for (rows, cols), buckets in by_size.items():
                for entries in buckets:
                    bucket = _Bucket(group["mode"], rows, cols, entries)
                    bucket.bind(part_states)
                    part.buckets.append(bucket)
        # The step counts: 0-dim float32 views of one CPU vector (one add per step).
        self.steps = torch.stack([s["step"].to(torch.float32, copy=True) for s in states])
        self.step_views = list(self.steps.unbind())
        for s, view in zip(states, self.step_views, strict=True):
            s["step"] = view

    def bound(self, state: dict[torch.Tensor, dict[str, Any]]) -> bool:
        states = [state.get(p, {}) for p in self.params]
        if not all(s.get("step") is v for s, v in zip(states, self.step_views, strict=True)):
            return False
        for part in self.parts:
            part_states = [states[i] for i in part.indices]
            if not all(b.bound(part_states) for b in part.buckets):
                return False
        return True

    def increment_steps(self) -> list[int]:
        self.steps.add_(1.0)
        return [int(t) for t in self.steps.tolist()]


def _eigh(factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``safe_eigh`` in the factor's dtype; float32 matrices that do not
    converge are retried in float64."""
    eigvals, basis, status = safe_eigh(factor)
    retry = status == ops.ROOT_NO_CONVERGENCE
    # (Meta tensors have shapes only: nothing to retry.)
    if factor.device.type != "meta" and factor.dtype != torch.float64 and bool(retry.any()):
        e, q, s = safe_eigh(factor[retry].to(torch.float64))
        eigvals[retry], basis[retry], status[retry] = e.to(factor.dtype), q.to(factor.dtype), s
    return eigvals, basis, status


def _decompose(
    factor: torch.Tensor,
    old: torch.Tensor,
    valid: torch.Tensor,
    refresh: str,
    *,
    eigenvalues: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(basis, status, eigenvalues or None) of a (K, d, d) factor batch: eigh,
    or for refresh="qr" one power-iteration step from the old basis where the
    block has a valid one (eigh elsewhere), with Rayleigh-quotient eigenvalues."""
    if refresh == "qr" and bool(valid.any()):
        finite = torch.isfinite(factor).flatten(1).all(dim=1)
        eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
        safe = torch.where(finite[:, None, None], factor, eye)
        # SOAP's order: columns by decreasing Rayleigh quotient, then Q ← qr(L Q)
        # (L Q's columns permuted are L times the permuted Q: one product).
        product = safe @ old
        order = (old * product).sum(dim=1).argsort(dim=1, descending=True)
        basis, _ = torch.linalg.qr(product.gather(2, order[:, None, :].expand_as(product)))
        eigvals = (basis * (safe @ basis)).sum(dim=1) if eigenvalues else None
        status = torch.full(valid.shape, ops.ROOT_OK, dtype=torch.int32, device=factor.device)
        status[~finite] = ops.ROOT_NONFINITE_INPUT
        bad_output = ~(torch.isfinite(basis).flatten(1).all(dim=1))
        status[finite & bad_output] = ops.ROOT_NONFINITE_OUTPUT
        fresh = ~valid
        if bool(fresh.any()):  # blocks without a basis yet start from eigh
            e, q, s = _eigh(factor[fresh])
            basis[fresh], status[fresh] = q, s
            if eigvals is not None:
                eigvals[fresh] = e
        return basis, status, eigvals
    eigvals, basis, status = _eigh(factor)
    return basis, status, eigvals


# (pid, workers, pool): the threads that run decompositions side by side.
_LAPACK_POOL: tuple[int, int, ThreadPoolExecutor] | None = None


def _lapack_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of `workers` threads, made again after a fork (a forked child
    has none of its parent's threads) or a change of size."""
    global _LAPACK_POOL
    pid = os.getpid()
    if _LAPACK_POOL is None or _LAPACK_POOL[:2] != (pid, workers):
        if _LAPACK_POOL is not None and _LAPACK_POOL[0] == pid:
            _LAPACK_POOL[2].shutdown(wait=False)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="fisherprec-lapack")
        _LAPACK_POOL = (pid, workers, pool)
    return _LAPACK_POOL[2]


def _decompose_all(
    requests: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    refresh: str,
    *,
    eigenvalues: bool,
    device: torch.device,
    workers: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """``_decompose`` of each (factor, old basis, valid) request.

    On the CPU, when some factor has a side of at least
    ``LAPACK_ONE_THREAD_MIN_DIM``, torch runs on one thread meanwhile
    (``lapack_threads``: LAPACK's own threading stalls on a shared machine)
    and the requests, cut into chunks of blocks, run side by side on as many
    Python threads as torch had (each decomposition stays on one thread, so
    a busy core delays only its own chunk). Each block's result does not
    depend on the chunking (one LAPACK call per matrix, single-threaded).
    `workers` overrides that number of threads (tests)."""
    largest = max(factor.shape[-1] for factor, _, _ in requests)
    workers = torch.get_num_threads() if workers is None else workers
    if device.type != "cpu" or largest < LAPACK_ONE_THREAD_MIN_DIM:
        return [_decompose(f, q, v, refresh, eigenvalues=eigenvalues) for f, q, v in requests]
    with lapack_threads(device):
        if workers == 1:
            return [_decompose(f, q, v, refresh, eigenvalues=eigenvalues) for f, q, v in requests]
        # Chunks of about a worker's share of each request, the costliest first.
        chunks = []
        for r, (factor, _, _) in enumerate(requests):
            k, d = factor.shape[0], factor.shape[-1]
            parts = min(k, workers)
            bounds = [k * i // parts for i in range(parts + 1)]
            for a, b in itertools.pairwise(bounds):
                chunks.append(((b - a) * d**3, r, a, b))
        chunks.sort(key=lambda c: -c[0])
        pool = _lapack_pool(workers)
        futures = {
            (r, a): pool.submit(
                _decompose, *(x[a:b] for x in requests[r]), refresh, eigenvalues=eigenvalues
            )
            for _, r, a, b in chunks
        }
        results = []
        for r in range(len(requests)):
            pieces = [futures[key].result() for key in sorted(k for k in futures if k[0] == r)]
            if len(pieces) == 1:
                results.append(pieces[0])
                continue
            basis, status, eigvals = zip(*pieces, strict=True)
            results.append(
                (
                    torch.cat(basis),
                    torch.cat(status),
                    None if eigvals[0] is None else torch.cat(eigvals),
                )
            )
        return results


def _decompose_split(
    split: WorkSplit,
    requests: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    refresh: str,
    eigenvalues: bool,
    device: torch.device,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """``_decompose_all`` with each request's blocks split across the ranks of
    `split`: this rank decomposes its share, one all_gather brings the rest.
    Per block the exchange carries basis, status and (mode "kron") eigenvalues
    as one row in the factor's dtype (the status codes are small integers,
    exact in any float)."""
    shares = [split.share(factor.shape[0], turn) for turn, (factor, _, _) in enumerate(requests)]
    mine = [i for i, (a, b) in enumerate(shares) if b > a]
    ours = [
        (factor[a:b], old[a:b], valid[a:b])
        for (factor, old, valid), (a, b) in ((requests[i], shares[i]) for i in mine)
    ]
    results_here = (
        _decompose_all(ours, refresh, eigenvalues=eigenvalues, device=device) if ours else []
    )
    computed = dict(zip(mine, results_here, strict=True))
    rows = []
    for i, (factor, _, _) in enumerate(requests):
        d = factor.shape[-1]
        width = d * d + 1 + (d if eigenvalues else 0)
        if i not in computed:
            rows.append(factor.new_empty(0, width))
            continue
        basis, status, eigvals = computed[i]
        columns = [basis.flatten(1), status.to(factor.dtype)[:, None]]
        if eigenvalues:
            assert eigvals is not None
            columns.append(eigvals)
        rows.append(torch.cat(columns, dim=1))
    exchanged = split.exchange(rows, [factor.shape[0] for factor, _, _ in requests])
    results: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    for (factor, _, _), pieces in zip(requests, exchanged, strict=True):
        k, d = factor.shape[0], factor.shape[-1]
        every = torch.cat([rows for _, rows in pieces])
        basis = every[:, : d * d].reshape(k, d, d).contiguous()
        status = every[:, d * d].to(torch.int32)
        eigvals = every[:, d * d + 1 :].contiguous() if eigenvalues else None
        results.append((basis, status, eigvals))
    return results


def _reproject_each(v_rot: torch.Tensor, *sides: torch.Tensor) -> torch.Tensor:
    """``reproject_second_moment`` one block at a time. A batched product's
    rounding can depend on how many matrices share the batch; one at a time,
    a block's result does not, so a rank that re-projects a share of the
    blocks (DDP work splitting) gets what one process gets, bit for bit."""
    if v_rot.shape[0] <= 1:
        return reproject_second_moment(v_rot, *sides)
    return torch.cat(
        [
            reproject_second_moment(v_rot[k : k + 1], *(x[k : k + 1] for x in sides))
            for k in range(v_rot.shape[0])
        ]
    )


def reproject_second_moment(
    v_rot: torch.Tensor,
    old_left: torch.Tensor,
    new_left: torch.Tensor,
    old_right: torch.Tensor,
    new_right: torch.Tensor,
) -> torch.Tensor:
    """The rotated second moment in a new basis: (O_L ∘ O_L) ṽ (O_R ∘ O_R)ᵀ with
    O = Q_newᵀ Q_old per side, the diagonal of diag(ṽ) (a diagonal second moment
    in the old basis) written in the new one. Batched over (K, ·, ·)."""
    o_left = (new_left.mT @ old_left).square_()
    o_right = (new_right.mT @ old_right).square_()
    return o_left @ v_rot @ o_right.mT


register(
    OptimizerEntry(
        "kron",
        KronFisher,
        {"lr": 1e-3},
        fisher="kron",
        description="Kronecker-factored empirical Fisher per weight matrix (blocks ≤ 1024), "
        "Adam in the factors' eigenbasis (SOAP/EKFAC), bases refreshed every 10 steps",
    )
)
