"""BlockFisher: Adam-style momentum preconditioned by the block-diagonal
empirical Fisher, u_b = (F_b + λI)^(-power) m_b (docs/theory.md, "Exact inverse roots for each structure")."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from fisherprec import ops
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
from fisherprec.optim._work_split import spans, work_split
from fisherprec.optim.registry import OptimizerEntry, register

__all__ = ["BlockFisher"]


class BlockFisher(FisherOptimizer):
    r"""Block-diagonal empirical Fisher preconditioning, grafted to Adam.

    Each parameter tensor is flattened and cut into blocks of ``block_size``
    contiguous elements (the last block of a tensor may be shorter; blocks
    never cross tensors). With g the gradient (negated when ``maximize``),
    at step t:

    .. math::
        \begin{aligned}
        m &\leftarrow \beta_1 m + (1-\beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        F_b &\leftarrow \beta_2 F_b + (1-\beta_2)\, g_b g_b^\top \\
        R_b &= \big(F_b/(1-\beta_2^t) + \lambda I\big)^{-p}
            \quad\text{(every \texttt{update\_every} steps; eigenvalues below rounding noise set to 0)} \\
        a &= \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}
            \quad\text{(the Adam direction)} \\
        u_b &= R_b\, \hat m_b \cdot \frac{\lVert a_b\rVert}{\lVert R_b \hat m_b\rVert}
            \quad\text{(\texttt{graft="diag"}; without the factor for \texttt{graft=None})} \\
        \theta &\leftarrow \theta\,(1 - \alpha\,\mathrm{wd}) - \alpha\, u
        \end{aligned}

    Roots are computed at steps t = update_every, 2·update_every, …; before
    the first one, and for every block whose root failed (non-finite
    statistic, no convergence, or a non-finite root such as λ = 0 on a
    singular block), the block takes the grafted diagonal step u_b = a_b,
    i.e. exactly AdamW. Failed roots are counted per parameter in
    ``state[p]["root_failures"]`` and in total by :attr:`root_failures`.

    The damping λ sits inside the root (docs/theory.md, "Exact inverse roots for each structure"). With ``block_size=1``
    and ``graft=None`` the step is u = m̂ / sqrt(v̂ + λ): Adam with ε moved
    under the square root (ε_Adam ≈ sqrt(λ) when v̂ ≫ λ); with
    ``graft="diag"`` and any block size 1 it is AdamW exactly. ``eps`` is
    Adam's ε, used only by the graft and the fallback.

    **Sharded parameters** (FSDP2's ``fully_shard``, DTensors): blocks are cut
    inside each rank's local shard (Distributed Shampoo's choice), so no block
    spans two ranks and a step needs no communication; the blocking then
    depends on the sharding: it is the unsharded one when each shard holds a
    whole number of blocks (then the step is the unsharded step, tested on 2
    gloo ranks). m and v are DTensors like the parameters; F_b, R_b and the
    statuses are per-rank state, which reloads at the same sharding only
    (DCP resharding is DiagFisher's).

    Memory: per parameter element b float32 numbers for F_b and b for R_b
    (each block stored as a full b×b slot), plus m and v.

    Args:
        params: parameters or param groups.
        lr: α.
        block_size: b, in [1, 256].
        betas: (β1, β2); β2 also drives the EMA of F_b.
        damping: λ ≥ 0, inside the root.
        update_every: steps between inverse-root refreshes.
        graft: ``"diag"`` (rescale each block to its Adam update norm, as
            Shampoo grafts) or ``None``.
        weight_decay: decoupled (AdamW) weight decay; 1e-2 as AdamW.
        power: p, the root's power (1/2: F^{-1/2}; 1/4 for Shampoo-style use).
        eps: Adam's ε for the graft and the diagonal fallback.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"raise"`` or ``"skip"`` (see FisherOptimizer).
        process_group: under DDP, a torch.distributed process group (e.g.
            ``torch.distributed.group.WORLD``) whose ranks split each refresh:
            every rank computes the roots of about 1/world_size of the blocks
            and one all_gather shares them, so the step is bit-identical to the
            unsplit one (tested on 2 gloo processes); the exchange holds about
            one copy of the refreshed roots at a time. Every rank must step the
            same parameters (as under DDP). Not saved in the state dict.

    Example:
        >>> import torch, fisherprec as fp
        >>> model = torch.nn.Linear(20, 3)
        >>> opt = fp.optim.BlockFisher(model.parameters(), lr=1e-2, block_size=16, update_every=2)
        >>> for _ in range(4):
        ...     opt.zero_grad()
        ...     model(torch.randn(8, 20)).square().mean().backward()
        ...     opt.step()
        >>> opt.root_failures
        0
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        block_size: int = 64,
        betas: tuple[float, float] = (0.9, 0.999),
        damping: float = 1e-8,
        update_every: int = 10,
        graft: str | None = "diag",
        weight_decay: float = 1e-2,
        power: float = 0.5,
        *,
        eps: float = 1e-8,
        maximize: bool = False,
        nonfinite: str = "propagate",
        process_group: Any = None,
    ) -> None:
        self._work_split = work_split(process_group)
        defaults = {
            "lr": lr,
            "block_size": block_size,
            "betas": tuple(betas),
            "damping": damping,
            "update_every": update_every,
            "graft": graft,
            "weight_decay": weight_decay,
            "power": power,
            "eps": eps,
            "maximize": maximize,
            "nonfinite": nonfinite,
        }
        super().__init__(params, defaults)

    # Blocks stay inside a shard: a shard's step is the step of its own blocks.
    steps_dtensor_shards = True

    @property
    def root_failures(self) -> int:
        """Blocks whose inverse root failed, summed over refreshes and parameters."""
        return int(sum(int(s["root_failures"]) for s in self.state.values() if s))

    @classmethod
    def _check_group(cls, group: dict[str, Any]) -> None:
        super()._check_group(group)
        ops.block.check_block_size(group["block_size"])
        check_betas(group["betas"])
        check_nonnegative("damping", group["damping"])
        check_positive_int("update_every", group["update_every"])
        check_graft(group["graft"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_power(group["power"])
        check_nonnegative("epsilon", group["eps"])

    def _new_state(
        self, group: dict[str, Any], params: Sequence[torch.Tensor]
    ) -> list[dict[str, Any]]:
        states = []
        for p in params:
            device = local(p).device
            shape = ops.block_shape(local(p).numel(), group["block_size"])  # (per shard)
            flat = {"dtype": torch.float32, "memory_format": torch.contiguous_format}
            states.append(
                {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, **flat),
                    "exp_avg_sq": torch.zeros_like(p, **flat),
                    "fisher": torch.zeros(shape, dtype=torch.float32, device=device),
                    "root": torch.zeros(shape, dtype=torch.float32, device=device),
                    "root_status": torch.full(
                        shape[:1], ops.ROOT_NONE, dtype=torch.int32, device=device
                    ),
                    # On the parameter's device: counting needs no host sync.
                    "root_failures": torch.zeros((), dtype=torch.int64, device=device),
                }
            )
            shard = shard_fingerprint(p)
            if shard is not None:  # (the blocks are this shard's: see shard_fingerprint)
                states[-1][SHARD_KEY] = shard
        return states

    def _step_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        b = group["block_size"]
        beta1, beta2 = group["betas"]
        lr = float(group["lr"])
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if not state:
                state.update(self._new_state(group, [p])[0])
        # One multi-tensor call per (device, dtype, step count).
        buckets: dict[tuple[torch.device, torch.dtype, float], list[int]] = defaultdict(list)
        for i, (p, s) in enumerate(zip(params, states, strict=True)):
            buckets[(p.device, p.dtype, float(s["step"]))].append(i)
        for (_, _, step), idx in buckets.items():
            t = int(step) + 1
            # The kernel needs contiguous tensors: a strided parameter is
            # stepped in a contiguous copy and written back. (DTensors: their shards.)
            ps = [local(params[i]).contiguous() for i in idx]
            gs = [local(grads[i]).contiguous() for i in idx]
            st = [states[i] for i in idx]
            for s in st:
                s["step"] += 1
            fisher = [s["fisher"] for s in st]
            ops.block_outer_update_(fisher, [g.reshape(1, -1) for g in gs], b, beta2, 1.0 - beta2)
            c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
            if t % group["update_every"] == 0:
                self._refresh_roots(group, st, [p.numel() for p in ps], scale=1.0 / c2)
                for s in st:
                    s["root_failures"] += (s["root_status"] != ops.ROOT_OK).sum()
            ops.block_fisher_step_(
                ps,
                gs,
                [local(s["exp_avg"]) for s in st],
                [local(s["exp_avg_sq"]) for s in st],
                [s["root"] for s in st],
                [s["root_status"] for s in st],
                block_size=b,
                beta1=beta1,
                beta2=beta2,
                step_size=lr / c1,
                inv_c2_root=1.0 / math.sqrt(c2),
                eps=group["eps"],
                decay=1.0 - lr * group["weight_decay"],
                maximize=group["maximize"],
                graft=group["graft"] == "diag",
            )
            for i, work in zip(idx, ps, strict=True):
                target = local(params[i])
                if work is not target:
                    target.copy_(work)

    def _refresh_all(self) -> None:
        """Refresh the roots of every parameter that has state, as a step due to
        refresh does, without the rest of the step (benchmarks time it)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if self.state.get(p)]
            if params:
                beta2 = group["betas"][1]
                states = [self.state[p] for p in params]
                scale = 1.0 / (1.0 - beta2 ** float(states[0]["step"]))
                self._refresh_roots(group, states, [local(p).numel() for p in params], scale)

    def _refresh_roots(
        self, group: dict[str, Any], states: list[dict[str, Any]], numels: list[int], scale: float
    ) -> None:
        """``state["root"]`` ← (scale·F + λI)^(-power) for every block of `states`,
        split across the ranks of the process group when there is one."""
        b = group["block_size"]
        fisher = [s["fisher"] for s in states]
        roots = [s["root"] for s in states]
        status = [s["root_status"] for s in states]
        hyper = {"scale": scale, "damping": group["damping"], "power": group["power"]}
        split = self._work_split
        if split is None:
            ops.block_inv_root_(fisher, roots, status, numels, b, **hyper)
            return
        # Blocks numbered across the tensors, this rank's contiguous share of them.
        counts = [f.shape[0] for f in fisher]
        offsets = [0, *itertools.accumulate(counts)][:-1]
        start, stop = split.share(sum(counts))
        mine = list(spans(counts, start, stop))
        if mine:
            ops.block_inv_root_(
                [fisher[i][a:c] for i, a, c in mine],
                [roots[i][a:c] for i, a, c in mine],
                [status[i][a:c] for i, a, c in mine],
                [min(c * b, numels[i]) - a * b for i, a, c in mine],
                b,
                **hyper,
            )
        # One row per block: the upper triangle of its root (exactly symmetric: the
        # kernel mirrors it), then its status (a small integer): half the bytes.
        upper = torch.triu_indices(b, b, device=roots[0].device)
        at, mirrored = upper[0] * b + upper[1], upper[1] * b + upper[0]
        width = at.numel()
        rows_here = torch.cat(
            [
                torch.cat(
                    [roots[i][a:c].flatten(1)[:, at], status[i][a:c, None].to(roots[i].dtype)], 1
                )
                for i, a, c in mine
            ]
            or [roots[0].new_empty(0, width + 1)]
        )
        (pieces,) = split.exchange([rows_here], [sum(counts)])
        for first, rows in pieces:
            for i, a, c in spans(counts, first, first + rows.shape[0]):
                got = rows[offsets[i] + a - first : offsets[i] + c - first]
                full = roots[i][a:c].view(c - a, b * b)
                full[:, at] = got[:, :width]
                full[:, mirrored] = got[:, :width]
                status[i][a:c].copy_(got[:, width])


register(
    OptimizerEntry(
        "block",
        BlockFisher,
        {"lr": 1e-3, "block_size": 64, "update_every": 10},
        fisher="block",
        description="block-diagonal empirical Fisher (b×b blocks per tensor), "
        "(F_b+λI)^(-1/2) refreshed every update_every steps, grafted to Adam",
    )
)
