"""What every fisherprec optimizer shares: hyper-parameter checks, gathering
gradients, the policy for non-finite gradients, and one ``step`` that hands
each param group to the variant's ``_step_group``.

Variants are thin: they validate their own hyper-parameters, create state
lazily in ``_step_group`` and call one op per (device, dtype) bucket.
"""

from __future__ import annotations

import abc
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from fisherprec import ops
from fisherprec.optim._work_split import WorkSplit

NONFINITE_POLICIES = ("propagate", "raise", "skip")
GRAFTS = ("diag", None)  # graft="diag": rescale each update to the norm of the Adam step
# In the state of a DTensor parameter whose optimizer keeps per-rank (not
# DTensor) state: which shard it belongs to (see shard_fingerprint).
SHARD_KEY = "shard"


def check_lr(lr: float) -> None:
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be a single element")
        lr = float(lr)
    if not (math.isfinite(lr) and lr >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr}")


def check_betas(betas: Sequence[float]) -> None:
    if len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas} (expected two values)")
    for i, beta in enumerate(betas):
        if not (0.0 <= beta < 1.0):
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


def check_nonnegative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"Invalid {name} value: {value}")


def check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name} value: {value!r} (must be a positive int)")


def check_power(power: float) -> None:
    if not (math.isfinite(power) and power > 0.0):
        raise ValueError(f"Invalid power value: {power}")


def check_graft(graft: str | None) -> None:
    if graft not in GRAFTS:
        raise ValueError(f"Invalid graft value: {graft!r}; choose one of {GRAFTS}")


def check_nonfinite_policy(policy: str) -> None:
    if policy not in NONFINITE_POLICIES:
        raise ValueError(
            f"Invalid nonfinite policy: {policy!r}; choose one of {NONFINITE_POLICIES}"
        )


def shard_fingerprint(p: torch.Tensor) -> torch.Tensor | None:
    """For a DTensor parameter: its rank's coordinates in the device mesh, then
    the mesh's shape (int64); None for a plain tensor.

    Optimizers whose state follows the shards (blocks cut inside a shard, a
    window of local coordinates) keep it as plain per-rank tensors, which
    torch.distributed.checkpoint saves once for all ranks: a load would then
    hand rank 0's state to every rank. The fingerprint, saved beside that state,
    turns such a load into an error instead (check_loaded_state)."""
    if not isinstance(p, DTensor):
        return None
    mesh = p.device_mesh
    coordinate = mesh.get_coordinate() or []
    return torch.tensor([*coordinate, *mesh.shape], dtype=torch.int64)


def check_loaded_state(
    optimizer: str, index: int, got: dict[str, Any], want: dict[str, Any]
) -> None:
    """Raise unless a loaded per-parameter state `got` has the keys of the
    fresh state `want` and, for each tensor, its shape (and, for the shard
    fingerprint, its value)."""
    if (SHARD_KEY in got) != (SHARD_KEY in want) or (
        SHARD_KEY in got and not torch.equal(torch.as_tensor(got[SHARD_KEY]), want[SHARD_KEY])
    ):
        where = (
            f"saved by the rank at mesh coordinate/shape {got[SHARD_KEY].tolist()}"
            if SHARD_KEY in got
            else "saved without sharding"
        )
        here = (
            f"this rank is at {want[SHARD_KEY].tolist()}"
            if SHARD_KEY in want
            else "this is one process"
        )
        raise ValueError(
            f"state of parameter {index} was {where}, but {here}: {optimizer} keeps per-rank "
            "state for sharded parameters, which reloads only into the same rank of the same "
            "sharding (save each rank's optimizer.state_dict(); torch.distributed.checkpoint "
            "reshards DiagFisher's state only)"
        )
    if set(got) != set(want):
        raise ValueError(
            f"state of parameter {index} has keys {sorted(got)}, but {optimizer} keeps "
            f"{sorted(want)} for it: a checkpoint of another optimizer or other settings?"
        )
    for key, ref in want.items():
        if not isinstance(ref, torch.Tensor):
            continue
        value = got[key]
        if isinstance(value, (int, float)) and ref.dim() == 0:
            continue  # a step count saved as a Python number
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if isinstance(value, torch.Tensor) and (
            value.is_complex() or value.is_floating_point() != ref.is_floating_point()
        ):
            raise ValueError(
                f"state[{key!r}] of parameter {index} has dtype {value.dtype}, expected "
                f"{'a real floating' if ref.is_floating_point() else 'an integer'} dtype like {ref.dtype}"
            )
        if shape != tuple(ref.shape):
            raise ValueError(
                f"state[{key!r}] of parameter {index} has shape {shape}, expected "
                f"{tuple(ref.shape)} (a checkpoint of another model?)"
            )


def group_by_device_and_dtype(
    params: Sequence[torch.Tensor],
) -> dict[tuple[torch.device, torch.dtype], list[int]]:
    """Indices of `params` per (device, dtype): one multi-tensor call per bucket."""
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        buckets[(p.device, p.dtype)].append(i)
    return dict(buckets)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor a kernel works on: a DTensor's local shard, else the tensor."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def sharded_sum_groups(params: Sequence[torch.Tensor], who: str) -> list[Any]:
    """The process groups over which the DTensors `params` are sharded, so that
    a sum over all their coordinates is the local sum all-reduced over these
    groups ([] for plain tensors). Every parameter must be a DTensor on the same
    mesh with the same placements, or none a DTensor: TypeError otherwise."""
    dtensors = [p for p in params if isinstance(p, DTensor)]
    if not dtensors:
        return []
    first = dtensors[0]
    if len(dtensors) != len(params) or any(
        p.device_mesh != first.device_mesh or p.placements != first.placements for p in dtensors
    ):
        raise TypeError(
            f"{who} sums over all the parameters of a group: they must all be DTensors on one "
            "device mesh with the same placements (as fully_shard gives), or all plain tensors; "
            "put the others in a separate param group"
        )
    mesh = first.device_mesh
    return [
        mesh.get_group(d) for d, placement in enumerate(first.placements) if placement.is_shard()
    ]


def _all_ranks_agree(flag: bool, tensors: Sequence[torch.Tensor]) -> bool:
    """`flag` AND-ed over every rank holding a shard of the DTensors among
    `tensors` (no collective without DTensors): a decision taken on local
    shards, such as skipping a step, must be the same on every rank."""
    meshes = {id(t.device_mesh): t.device_mesh for t in tensors if isinstance(t, DTensor)}
    if not meshes:
        return flag
    value = torch.tensor([0.0 if flag else 1.0])
    for mesh in meshes.values():
        for dim in range(mesh.ndim):
            torch.distributed.all_reduce(value, group=mesh.get_group(dim))
    return bool(value.item() == 0.0)


@torch.compiler.disable
def _step_eagerly(optimizer: FisherOptimizer, closure: Callable[[], Any] | None) -> Any:
    """A step run by Python inside a compiled region (see traces_step)."""
    return optimizer._step(closure)


class FisherOptimizer(torch.optim.Optimizer, abc.ABC):
    """Base class of the fisherprec optimizers.

    Every group carries ``maximize`` (ascend instead of descend) and
    ``nonfinite``, the policy for NaN/Inf gradients:

    - ``"propagate"`` (default, as torch.optim): no check, no cost; a
      non-finite gradient reaches the state and the parameters;
    - ``"raise"``: ``FloatingPointError`` naming the parameter, before anything
      is modified (one extra read of the gradients);
    - ``"skip"``: the group's step is skipped, nothing is modified, and
      ``skipped_steps`` counts it (one extra read of the gradients).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        defaults.setdefault("maximize", False)
        defaults.setdefault("nonfinite", "propagate")
        self._check_group(defaults)
        super().__init__(params, defaults)  # each group goes through add_param_group
        self.skipped_steps = 0

    @classmethod
    def _check_group(cls, group: dict[str, Any]) -> None:
        """Raise ValueError for an invalid setting of `group` (or of the defaults).

        Variants extend it with their own hyper-parameters (calling super);
        it runs on the defaults, on every group added (constructor included)
        and on every group of a loaded checkpoint, so a step can trust it."""
        check_lr(group["lr"])
        check_nonfinite_policy(group["nonfinite"])

    # Whether DTensor parameters (FSDP2's fully_shard, tensor parallelism) step
    # as their local shards. True only where that is exactly the unsharded step:
    # element-wise math (DiagFisher). A preconditioner that couples coordinates
    # refuses them until it handles the sharding.
    steps_dtensor_shards: bool = False

    def _check_params(self, group: dict[str, Any]) -> None:
        """Raise for parameters `group` cannot hold; runs once per added group."""
        shards = []
        for i, p in enumerate(group["params"]):
            if isinstance(p, DTensor):
                if self._work_split is not None:
                    raise TypeError(
                        f"params[{i}] is a DTensor: process_group splits the refresh work "
                        "under DDP, where every rank holds whole parameters; with sharded "
                        "parameters each rank refreshes only its own shards already"
                    )
                if not self.steps_dtensor_shards:
                    raise TypeError(
                        f"params[{i}] is a DTensor (FSDP2 or tensor parallelism): "
                        f"{type(self).__name__} couples coordinates across shards and does "
                        "not step DTensors yet; DiagFisher does (its step is element-wise)"
                    )
                p = p.to_local()
            shards.append(ops.check_plain_tensor(f"params[{i}]", p))
        # Two entries sharing memory would be updated twice, concurrently.
        ops.check_no_overlap({"params": shards})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch.optim.Optimizer, but the group (defaults filled in) is
        validated before it is kept: an invalid group leaves the optimizer as it was."""
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
            self._check_params(self.param_groups[-1])
        except Exception:
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("skipped_steps", 0)
        for group in self.param_groups:  # checkpoints from older versions
            group.setdefault("maximize", False)
            group.setdefault("nonfinite", "propagate")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch.optim.Optimizer, but atomic and validated, and state
        tensors keep their saved dtypes.

        Every loaded group is checked as :meth:`add_param_group` checks a new
        one, and every loaded per-parameter state must have the keys and
        shapes this optimizer would create for that parameter
        (:meth:`_new_state`): a checkpoint of another model or of another
        variant is refused with a message. When anything raises, the
        optimizer is left exactly as it was before the call.

        torch casts floating state to each parameter's dtype (it picks that
        policy by class name, so a subclass cannot opt out), which would round
        float32 moments of bfloat16 parameters and turn integer status into
        floats; keeping the saved dtypes makes resuming bit-identical."""
        # torch's load builds new state and group objects (it never writes
        # into the current ones), so keeping the attributes is a full backup.
        backup = dict(self.__dict__)
        shards = [p for g in self.param_groups for p in g["params"] if isinstance(p, DTensor)]
        error: Exception | None = None
        try:
            self._load_state_dict(state_dict)
        except Exception as err:
            error = err
        # Sharded: every rank must leave the load alike, or the ranks that went
        # on would wait in collectives the others never join.
        loaded = _all_ranks_agree(error is None, shards) if shards else error is None
        if loaded:
            return
        self.__dict__.clear()
        self.__dict__.update(backup)
        if error is not None:
            raise error
        raise RuntimeError(
            f"{type(self).__name__}.load_state_dict: another rank refused its part of this "
            "checkpoint (its error says why); nothing was loaded on any rank"
        )

    def _load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["state"]
        saved_ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        super().load_state_dict(state_dict)  # validates the group layout first
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params, strict=True):
            for key, value in saved.get(pid, {}).items():
                if isinstance(value, torch.Tensor) and key != "step":
                    self.state[p][key] = value.to(device=p.device, copy=True)
        index = 0
        for number, group in enumerate(self.param_groups):
            try:
                self._check_group(group)
            except KeyError as missing:
                raise ValueError(
                    f"param group {number} of the checkpoint lacks {missing.args[0]!r}, which "
                    f"{type(self).__name__} needs: a checkpoint of another optimizer?"
                ) from None
            expected = self._new_state(
                group, [torch.empty_like(p, device="meta") for p in group["params"]]
            )
            for p, want in zip(group["params"], expected, strict=True):
                got = self.state.get(p)
                if got:
                    check_loaded_state(type(self).__name__, index, got, want)
                    if "step" in got and not isinstance(got["step"], torch.Tensor):
                        # Checkpoints that kept the count as a Python number: torch's layout.
                        got["step"] = torch.tensor(float(got["step"]), dtype=torch.float32)
                index += 1

    def _new_state(
        self, group: dict[str, Any], params: Sequence[torch.Tensor]
    ) -> list[dict[str, Any]]:
        """The fresh state of each of `params` (members of `group`), without
        side effects; `params` may be meta tensors. Variants that create state
        implement it; load_state_dict checks checkpoints against it."""
        raise NotImplementedError

    def _gather(self, group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Parameters of `group` that have a gradient, and those gradients."""
        params, grads = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients "
                    f"(parameter of shape {tuple(p.shape)}); use torch.optim.SparseAdam for those"
                )
            if torch.is_complex(p):
                raise TypeError(f"{type(self).__name__} does not support complex parameters")
            params.append(p)
            grads.append(p.grad)
        return params, grads

    def _grads_are_finite(
        self, group: dict[str, Any], params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]
    ) -> bool:
        """Apply the group's non-finite policy; False means: skip this group.
        Modifies nothing (with "raise", it raises instead of returning)."""
        policy = group["nonfinite"]
        if policy == "propagate":
            return True
        bad = self._first_nonfinite([local(g) for g in grads])
        # With sharded gradients every rank decides on its shard: agree first.
        if _all_ranks_agree(bad is None, grads):
            return True
        if policy == "raise":
            where = (
                f"parameter {bad} of shape {tuple(params[bad].shape)}"
                if bad is not None
                else "a parameter shard on another rank"
            )
            raise FloatingPointError(
                f"non-finite gradient for {where} in {type(self).__name__}; nothing was modified"
            )
        return False

    @staticmethod
    def _first_nonfinite(grads: Sequence[torch.Tensor]) -> int | None:
        """Index of the first gradient holding NaN/Inf, or None."""
        for (device, dtype), idx in group_by_device_and_dtype(grads).items():
            bucket = [grads[i].contiguous() for i in idx]
            if (
                dtype in ops.FLOATING_DTYPES
                and device.type in ("cpu", "cuda")
                and math.isfinite(float(ops.sum_of_squares(bucket)))
            ):
                continue
            for i in sorted(idx):
                if not torch.isfinite(grads[i]).all():
                    return i
        return None

    # Refresh work split across DDP ranks (process_group=; Block and Kron set it).
    # Not a group option: a process group cannot be saved or differ per group.
    _work_split: WorkSplit | None = None

    # Whether torch.compile traces step(): the variant keeps its step counts and
    # lr as tensors and reads nothing back to the host (DiagFisher, for CUDA
    # parameters; a subclass may decide per instance with a property). Otherwise a
    # compiled `opt.step` runs the step eagerly behind one graph break, instead
    # of breaking at every host read and recompiling as the step counts change.
    traces_step: bool = False

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; `closure` re-evaluates the loss.

        Atomic across groups: every group is gathered and checked (sparse or
        complex gradients, the non-finite policy) before any is updated, so a
        step that raises for its last group has modified nothing."""
        if torch.compiler.is_compiling() and not self.traces_step:
            return _step_eagerly(self, closure)
        return self._step(closure)

    @torch.no_grad()
    def _step(self, closure: Callable[[], Any] | None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        todo, skipped = [], 0
        for group in self.param_groups:
            params, grads = self._gather(group)
            if not params:
                continue
            if self._grads_are_finite(group, params, grads):
                todo.append((group, params, grads))
            else:
                skipped += 1
        self.skipped_steps += skipped
        for group, params, grads in todo:
            self._step_group(group, params, grads)
        return loss

    @abc.abstractmethod
    def _step_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        """Update state and parameters of one group (grads not yet negated for maximize)."""

    def memory_bytes(self) -> int:
        """Bytes held by the optimizer state (every tensor in ``self.state``) in
        this process: a DTensor counts its local shard."""
        total = 0
        for state in self.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value = local(value)
                    total += value.numel() * value.element_size()
        return total
