"""Two-process gloo runs on the CPU for tests/test_distributed.py:
``python -m tests.distributed_worker SCENARIO[,SCENARIO...] DIR`` spawns two
ranks once, which rendezvous through a file in DIR and run the scenarios in
turn (one process start for all of them: it is most of a scenario's time);
each writes DIR/<scenario>/rank<r>.json, ``{"result": ...}`` or
``{"error": traceback}`` (the scenarios after a failed one are marked not
run), so a failure is reported where it happened."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import sys
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import fisherprec as fp

WORLD = 2
STEPS = 5


def make_model() -> torch.nn.Module:
    # Odd shapes: 7×5 and 3×7 shard unevenly over two ranks (4 + 3 rows, 2 + 1).
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + k)
    return torch.randn(16, 5, generator=generator), torch.randn(16, 3, generator=generator)


def train(model, opt, steps: range, poison: int | None = None) -> None:
    for k in steps:
        x, y = batch(k)  # the same batch on every rank: FSDP2's mean gradient is the full one
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        if poison is not None and k == steps[-1]:
            grad = next(model.parameters()).grad
            grad.to_local().view(-1)[0] = float("nan")  # on rank `poison` only (see caller)
        opt.step()


def shard(model: torch.nn.Module) -> torch.nn.Module:
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def full(model) -> list[list[float]]:
    return [p.full_tensor().reshape(-1).tolist() for p in model.parameters()]


DDP_OPTIMIZERS = {
    "diag": {},
    "block": {"block_size": 4, "update_every": 1},
    "lowrank": {"rank": 3, "update_every": 1},
    "kron": {"update_every": 1, "max_dim": 4},
}


def train_halves(model, opt, rank: int) -> None:
    """STEPS DDP steps, each rank on its half of the batch of 16."""
    for k in range(STEPS):
        x, y = batch(k)
        half = slice(rank * 8, rank * 8 + 8)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x[half]), y[half]).backward()
        opt.step()


def ddp(rank: int) -> dict:
    """Every registered Fisher optimizer under DDP, each rank on its half of
    the batch: the parameters after STEPS steps, per optimizer."""
    out = {}
    for name, kwargs in DDP_OPTIMIZERS.items():
        model = torch.nn.parallel.DistributedDataParallel(make_model())
        opt = fp.optim.registry.build(name, model.parameters(), lr=1e-2, **kwargs)
        train_halves(model, opt, rank)
        out[name] = [p.detach().reshape(-1).tolist() for p in model.module.parameters()]
    return out


# Refresh work split across the ranks (process_group=WORLD) against every rank
# doing all of it: a model with more blocks than the toy one, so that each
# batch of blocks has several to split.
SPLIT_OPTIMIZERS = {
    "block": {"block_size": 4, "update_every": 2},
    "kron": {"update_every": 2, "max_dim": 3},
    "kron-mode-kron": {"mode": "kron", "damping": 1e-6, "update_every": 2, "max_dim": 3},
    "kron-qr": {"update_every": 1, "max_dim": 3, "refresh": "qr"},
}


def make_split_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 11), torch.nn.Tanh(), torch.nn.Linear(11, 9), torch.nn.Tanh(),
        torch.nn.Linear(9, 3),
    )  # fmt: skip


def count_decompositions(counts: dict[str, int]) -> Callable[[], None]:
    """Count the blocks this process decomposes (KronFisher's eigh/QR batches,
    BlockFisher's roots) in `counts`; returns the function that stops counting."""
    from fisherprec.optim import kron

    decompose = kron._decompose
    inv_root = fp.ops.block_inv_root_

    def counted_decompose(factor, *args, **kwargs):
        counts["blocks"] += factor.shape[0]
        return decompose(factor, *args, **kwargs)

    def counted_inv_root(states, *args, **kwargs):
        counts["blocks"] += sum(s.shape[0] for s in states)
        return inv_root(states, *args, **kwargs)

    kron._decompose = counted_decompose
    fp.ops.block_inv_root_ = counted_inv_root

    def restore() -> None:
        kron._decompose = decompose
        fp.ops.block_inv_root_ = inv_root

    return restore


def split(rank: int) -> dict:
    counts = {"blocks": 0}
    stop_counting = count_decompositions(counts)
    try:
        return _split(rank, counts)
    finally:
        stop_counting()


def _split(rank: int, counts: dict[str, int]) -> dict:
    out = {}
    for name, kwargs in SPLIT_OPTIMIZERS.items():
        for splitting in (False, True):
            model = torch.nn.parallel.DistributedDataParallel(make_split_model())
            group = dist.group.WORLD if splitting else None
            opt = fp.optim.registry.build(
                name.partition("-")[0], model.parameters(), lr=1e-2, process_group=group, **kwargs
            )
            counts["blocks"] = 0
            train_halves(model, opt, rank)
            out[f"{name}/{'split' if splitting else 'whole'}"] = {
                "params": [p.detach().reshape(-1).tolist() for p in model.module.parameters()],
                "blocks": counts["blocks"],
                "failures": opt.eig_failures if name.startswith("kron") else opt.root_failures,
            }
    return out


# The optimizers that couple coordinates, under FSDP2, against one process that
# steps each rank's shard (fully_shard cuts dim 0 as torch.chunk does) as a
# parameter of its own. For Block and Kron that is the sharded layout (blocks
# stay in a shard); for LowRank, one group vector either way. Block size 2
# divides every shard's length here (20 + 15, 4 + 3, 14 + 7, 2 + 1 elements):
# the shard-local blocks are also the unsharded ones.
FSDP2_OPTIMIZERS = {
    "block": {"block_size": 2, "update_every": 1},
    "lowrank": {"rank": 3, "update_every": 1},
    "kron": {"update_every": 1, "max_dim": 4},
}


def fsdp2_every(rank: int) -> dict:
    out = {}
    for name, kwargs in FSDP2_OPTIMIZERS.items():
        model = shard(make_model())
        opt = fp.optim.registry.build(name, model.parameters(), lr=1e-2, **kwargs)
        train(model, opt, range(STEPS))
        first = opt.state[next(model.parameters())]
        out[name] = {
            "params": full(model),
            "types": {k: type(v).__name__ for k, v in first.items() if torch.is_tensor(v)},
            "state_bytes": opt.memory_bytes(),
            "wide_state_bytes": wide_state_bytes(name, sharded=True),
        }
    return out


def make_wide_model() -> torch.nn.Module:
    """Layer-sized (33k parameters): for the per-rank state bytes."""
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))


def wide_state_bytes(name: str, sharded: bool) -> int:
    """The optimizer's state bytes (this rank's) on the wide model, registry defaults."""
    wide = make_wide_model()
    if sharded:
        wide = shard(wide)
    opt = fp.optim.registry.build(name, wide.parameters())
    wide(torch.randn(4, 64)).square().mean().backward()
    opt.step()
    return opt.memory_bytes()


class EvenModel(torch.nn.Sequential):
    """Every parameter shards evenly over two ranks (8 + 8 rows ... 2 + 2): the
    per-rank state has one shape on both, so nothing but the shard fingerprint
    tells a DCP load that it hands rank 0's state to rank 1."""

    def __init__(self) -> None:
        torch.manual_seed(2)
        super().__init__(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, :3]


def per_rank_checkpoints(rank: int, root: pathlib.Path) -> dict:
    """Per-rank state of the shard-following optimizers: each rank's own
    state_dict resumes exactly; a DCP load (which saves per-rank plain tensors
    once) must not hand one rank's state to another."""
    out = {}
    for model_name, make in (("uneven", make_model), ("even", EvenModel)):
        out[model_name] = _per_rank_checkpoints(make, root / model_name)
    return out


def _per_rank_checkpoints(make, root: pathlib.Path) -> dict:
    import io

    out = {}
    for name, kwargs in FSDP2_OPTIMIZERS.items():
        model = shard(make())
        opt = fp.optim.registry.build(name, model.parameters(), lr=1e-2, **kwargs)
        train(model, opt, range(3))
        saved_model = io.BytesIO()
        torch.save(model.state_dict(), saved_model)
        saved_opt = io.BytesIO()
        torch.save(opt.state_dict(), saved_opt)
        dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=str(root / name))
        train(model, opt, range(3, STEPS))
        # Resume from this rank's own state dict.
        resumed = shard(make())
        opt2 = fp.optim.registry.build(name, resumed.parameters(), lr=1e-2, **kwargs)
        train(resumed, opt2, range(1))
        for buffer in (saved_model, saved_opt):
            buffer.seek(0)
        resumed.load_state_dict(torch.load(saved_model, weights_only=False))
        opt2.load_state_dict(torch.load(saved_opt, weights_only=False))
        train(resumed, opt2, range(3, STEPS))
        # The DCP round trip: an error, or this rank's own state back.
        third = shard(make())
        opt3 = fp.optim.registry.build(name, third.parameters(), lr=1e-2, **kwargs)
        train(third, opt3, range(1))
        state = {"optim": get_optimizer_state_dict(third, opt3)}
        try:
            dcp.load(state, checkpoint_id=str(root / name))
            set_optimizer_state_dict(third, opt3, state["optim"])
            saved_opt.seek(0)
            own = torch.load(saved_opt, weights_only=False)["state"]
            mine = opt3.state_dict()["state"]
            dcp_result = "own state" if _same_state(own, mine) else "another rank's state"
        except (Exception, dcp.api.CheckpointException) as err:  # (a BaseException)
            dcp_result = f"{type(err).__name__}: {err}"
        out[name] = {
            "resumed_equal": full(resumed) == full(model),
            "dcp": dcp_result,
        }
    return out


def _same_state(a: dict, b: dict) -> bool:
    for pid, state in a.items():
        for key, value in state.items():
            other = b[pid][key]
            if torch.is_tensor(value):
                value = value.full_tensor() if hasattr(value, "full_tensor") else value
                other = other.full_tensor() if hasattr(other, "full_tensor") else other
                if not torch.equal(value, other):
                    return False
    return True


SCENARIOS = ("fsdp2", "fsdp2-every", "per-rank-checkpoints", "skip", "dcp", "load1", "ddp", "split")


def run_scenario(rank: int, scenario: str, root: pathlib.Path) -> dict:
    if scenario == "ddp":
        return ddp(rank)
    if scenario == "split":
        return split(rank)
    if scenario == "fsdp2-every":
        return fsdp2_every(rank)
    if scenario == "per-rank-checkpoints":
        return per_rank_checkpoints(rank, root)
    result: dict = {}
    model = shard(make_model())
    opt = fp.optim.DiagFisher(model.parameters(), lr=1e-2, nonfinite="skip")
    if scenario == "fsdp2":
        train(model, opt, range(STEPS))
        result["params"] = full(model)
        # State per rank on a layer-sized model (the toy model's 7 rows split 4 + 3).
        wide = shard(torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64)))
        wide_opt = fp.optim.DiagFisher(wide.parameters())
        x = torch.randn(4, 64)
        wide(x).square().mean().backward()
        wide_opt.step()
        result["state_bytes"] = wide_opt.memory_bytes()
        result["state_type"] = type(opt.state[next(model.parameters())]["exp_avg"]).__name__
    elif scenario == "skip":
        train(model, opt, range(2))
        before = full(model)
        # NaN in rank 1's shard only: both ranks must skip the step.
        x, y = batch(9)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        if rank == 1:
            next(model.parameters()).grad.to_local().view(-1)[0] = float("nan")
        opt.step()
        result["unchanged"] = full(model) == before
        result["skipped"] = opt.skipped_steps
    elif scenario == "dcp":
        train(model, opt, range(3))
        state = {"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)}
        dcp.save(state, checkpoint_id=str(root / "ckpt"))
        train(model, opt, range(3, STEPS))
        result["params"] = full(model)
        resumed = shard(make_model())
        opt2 = fp.optim.DiagFisher(resumed.parameters(), lr=1e-2, nonfinite="skip")
        train(resumed, opt2, range(1))  # state exists, then is replaced by the checkpoint's
        state = {
            "model": resumed.state_dict(),
            "optim": get_optimizer_state_dict(resumed, opt2),
        }
        dcp.load(state, checkpoint_id=str(root / "ckpt"))
        resumed.load_state_dict(state["model"])
        set_optimizer_state_dict(resumed, opt2, state["optim"])
        train(resumed, opt2, range(3, STEPS))
        result["resumed"] = full(resumed)
    elif scenario == "load1":
        # A checkpoint one plain process wrote after 3 steps (see the test).
        train(model, opt, range(1))  # state exists, then is replaced by the checkpoint's
        state = {"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)}
        dcp.load(state, checkpoint_id=str(root / "ckpt1"))
        model.load_state_dict(state["model"])
        set_optimizer_state_dict(model, opt, state["optim"])
        train(model, opt, range(3, STEPS))
        result["params"] = full(model)
    else:
        raise ValueError(scenario)
    return result


def run(rank: int, scenarios: str, out: str) -> None:
    root = pathlib.Path(out)
    # A scenario that fails on one rank leaves the other waiting in a
    # collective: the timeout turns that wait into an error too; the scenarios
    # after a failed one are not run.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{root / 'store'}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    failed = None
    try:
        for scenario in scenarios.split(","):
            where = root / scenario
            where.mkdir(exist_ok=True)
            if failed is not None:
                # After a failure the ranks may be a collective apart: what
                # follows would fail for that reason, not its own.
                outcome = {"error": f"not run: scenario {failed!r} failed before it"}
            else:
                dist.barrier()
                try:
                    outcome = {"result": run_scenario(rank, scenario, where)}
                except Exception:
                    outcome = {"error": traceback.format_exc()}
                    failed = scenario
            (where / f"rank{rank}.json").write_text(json.dumps(outcome))
    finally:
        dist.destroy_process_group()
    # Done, results written: leave without the interpreter's teardown, where a
    # background C++ thread of gloo or DCP still alive at exit has (rarely, seen
    # twice in ~20 runs here) aborted the process with "terminate called without
    # an active exception" after a run that had succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    torch.multiprocessing.spawn(run, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD)
