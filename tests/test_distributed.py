"""Two gloo CPU processes against the single-process run: every Fisher
optimizer under DDP, with and without the refresh work split across ranks;
Diag, Block and LowRank under FSDP2 (fully_shard); for DiagFisher the
non-finite policy, DCP round trips and resharding on load."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

import fisherprec as fp
from tests import distributed_worker as worker

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="needs torch.distributed"
)


def _save_one_process_checkpoint(path) -> None:
    """What the "load1" scenario loads into two ranks: DiagFisher after 3 of
    STEPS steps in one plain process, saved with DCP."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model = worker.make_model()
    opt = fp.optim.DiagFisher(model.parameters(), lr=1e-2, nonfinite="skip")
    worker.train(model, opt, range(3))
    state = {"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)}
    with warnings.catch_warnings():  # no process group: a single-process save, as meant
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, checkpoint_id=str(path))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Every scenario of tests/distributed_worker.py in one 2-rank run (one
    process start for all: it is most of a scenario's time). Returns
    ``ranks(scenario)`` (each rank's result; a scenario that raised fails the
    test that reads it) and ``ranks.root``, where the scenarios wrote."""
    root = tmp_path_factory.mktemp("two-ranks")
    _save_one_process_checkpoint(root / "load1" / "ckpt1")
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.distributed_worker",
                ",".join(worker.SCENARIOS),
                str(root),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        problem = None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-3000:]}"
    except subprocess.TimeoutExpired as timeout:
        problem = f"timed out after {timeout.timeout} s: {str(timeout.stderr or '')[-3000:]}"

    def ranks(scenario: str) -> list[dict]:
        # What a scenario wrote stands even when the run failed later.
        files = [root / scenario / f"rank{r}.json" for r in range(worker.WORLD)]
        assert all(f.exists() for f in files), (
            f"scenario {scenario} wrote no result; the run {problem}"
        )
        outcomes = [json.loads(f.read_text()) for f in files]
        for r, outcome in enumerate(outcomes):
            assert "error" not in outcome, f"rank {r}, scenario {scenario}:\n{outcome['error']}"
        return [outcome["result"] for outcome in outcomes]

    ranks.root = root
    return ranks


def _single_process(steps: int) -> tuple[list[torch.Tensor], fp.optim.DiagFisher]:
    model = worker.make_model()
    opt = fp.optim.DiagFisher(model.parameters(), lr=1e-2)
    worker.train(model, opt, range(steps))
    return [p.detach().reshape(-1) for p in model.parameters()], opt


def test_fsdp2_step_equals_the_single_process_step(two_ranks):
    ranks = two_ranks("fsdp2")
    expected, _ = _single_process(worker.STEPS)
    for rank in ranks:
        assert rank["state_type"] == "DTensor"  # DCP and FSDP2 see sharded state
        for got, want in zip(rank["params"], expected, strict=True):
            torch.testing.assert_close(torch.tensor(got), want, rtol=1e-5, atol=1e-6)
    # The moments are sharded like the parameters: each rank holds its share.
    wide = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))
    unsharded = fp.optim.DiagFisher(wide.parameters())
    wide(torch.randn(4, 64)).square().mean().backward()
    unsharded.step()
    per_rank = max(rank["state_bytes"] for rank in ranks)
    assert per_rank <= 0.55 * unsharded.memory_bytes()


def _shards_as_parameters(name: str, kwargs: dict) -> tuple[list[torch.Tensor], int]:
    """One process, each parameter cut as fully_shard cuts it (torch.chunk of
    dim 0 over the ranks) and each piece a parameter of its own: the final
    parameters (whole) and the optimizer's state bytes."""
    model = worker.make_model()
    pieces = [
        [c.clone().requires_grad_() for c in p.detach().chunk(worker.WORLD)]
        for p in model.parameters()
    ]
    opt = fp.optim.registry.build(name, [c for ps in pieces for c in ps], lr=1e-2, **kwargs)
    for k in range(worker.STEPS):
        x, y = worker.batch(k)
        with torch.no_grad():
            for p, ps in zip(model.parameters(), pieces, strict=True):
                p.copy_(torch.cat(ps))
        model.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        for p, ps in zip(model.parameters(), pieces, strict=True):
            for c, g in zip(ps, p.grad.chunk(worker.WORLD), strict=True):
                c.grad = g.clone()
        opt.step()
    return [torch.cat(ps).detach().reshape(-1) for ps in pieces], opt.memory_bytes()


@pytest.mark.parametrize("name", list(worker.FSDP2_OPTIMIZERS))
def test_fsdp2_steps_equal_the_one_process_step_of_the_shards(two_ranks, name):
    ranks = two_ranks("fsdp2-every")
    expected, alone = _shards_as_parameters(name, worker.FSDP2_OPTIMIZERS[name])
    for rank in ranks:
        for got, want in zip(rank[name]["params"], expected, strict=True):
            torch.testing.assert_close(torch.tensor(got), want, rtol=1e-5, atol=1e-6)
    if name == "block":  # b divides the shards: the unsharded step too
        model = worker.make_model()
        opt = fp.optim.registry.build(
            name, model.parameters(), lr=1e-2, block_size=2, update_every=1
        )
        worker.train(model, opt, range(worker.STEPS))
        for got, want in zip(ranks[0][name]["params"], model.parameters(), strict=True):
            torch.testing.assert_close(
                torch.tensor(got), want.detach().reshape(-1), rtol=1e-5, atol=1e-6
            )
    # Each rank holds the state of its own shards (LowRank: plus its r×r algebra).
    assert sum(rank[name]["state_bytes"] for rank in ranks) <= alone + 1024
    assert max(rank[name]["state_bytes"] for rank in ranks) < 0.8 * alone
    # On a layer-sized model (64 → 256 → 64): at most 0.55 × the one-process state
    # per rank; Kron 0.6: fully_shard cuts rows, so the (256, 256) column factor
    # of the (64, 256) weight is whole on each rank (measured 0.59).
    whole = worker.wide_state_bytes(name, sharded=False)
    per_rank = max(rank[name]["wide_state_bytes"] for rank in ranks)
    assert per_rank <= (0.6 if name == "kron" else 0.55) * whole, (per_rank, whole)


def test_per_rank_state_resumes_exactly_and_a_dcp_load_never_swaps_ranks(two_ranks):
    ranks = two_ranks("per-rank-checkpoints")
    for rank in ranks:
        for model in ("uneven", "even"):
            for name in worker.FSDP2_OPTIMIZERS:
                got = rank[model][name]
                assert got["resumed_equal"], (model, name)  # a rank's own state_dict resumes
                # DCP writes per-rank plain tensors once; loading must fail, not swap.
                assert got["dcp"] != "another rank's state", (model, name)
    # With one shape on every rank only the shard fingerprint can tell: its message.
    for name in worker.FSDP2_OPTIMIZERS:
        messages = [rank["even"][name]["dcp"] for rank in ranks]
        assert any("reloads only into the same rank" in m for m in messages), (name, messages)


def test_a_nonfinite_gradient_on_one_rank_skips_the_step_on_every_rank(two_ranks):
    for rank in two_ranks("skip"):
        assert rank["unchanged"] and rank["skipped"] == 1


def test_dcp_round_trip_resumes_identically(two_ranks):
    for rank in two_ranks("dcp"):
        assert rank["resumed"] == rank["params"]


def test_a_two_rank_checkpoint_loads_into_one_process_and_resumes(two_ranks):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    ranks = two_ranks("dcp")  # saved after 3 of 5 steps on two ranks
    model = worker.make_model()
    opt = fp.optim.DiagFisher(model.parameters(), lr=1e-2, nonfinite="skip")
    worker.train(model, opt, range(1))  # some state, replaced by the checkpoint's
    state = {"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": yes
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, checkpoint_id=str(two_ranks.root / "dcp" / "ckpt"))
    model.load_state_dict(state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    assert all(
        not isinstance(v, torch.distributed.tensor.DTensor)
        for s in opt.state.values()
        for v in s.values()
    )
    worker.train(model, opt, range(3, worker.STEPS))
    for got, want in zip(model.parameters(), ranks[0]["params"], strict=True):
        torch.testing.assert_close(
            got.detach().reshape(-1), torch.tensor(want), rtol=1e-5, atol=1e-6
        )


def test_every_fisher_optimizer_under_ddp_equals_the_full_batch_run(two_ranks):
    ranks = two_ranks("ddp")
    assert ranks[0] == ranks[1]  # every rank holds the same parameters
    # KronFisher's eigen mode is left out of the comparison with one process: in
    # its first steps the factors have a null space whose eigenbasis is arbitrary,
    # and Adam in that basis turns rounding-level components (the all-reduced mean
    # and the one-process mean differ by ~1e-8) into full-size steps; both runs
    # are right, they are not the same run.
    for name, kwargs in worker.DDP_OPTIMIZERS.items():
        if name == "kron":
            continue
        model = worker.make_model()
        opt = fp.optim.registry.build(name, model.parameters(), lr=1e-2, **kwargs)
        worker.train(model, opt, range(worker.STEPS))  # the whole batch of 16 in one process
        for got, want in zip(ranks[0][name], model.parameters(), strict=True):
            torch.testing.assert_close(
                torch.tensor(got), want.detach().reshape(-1), rtol=1e-4, atol=1e-5, msg=name
            )


def test_refresh_work_split_across_ranks_changes_nothing_but_the_work(two_ranks):
    ranks = two_ranks("split")
    for name in worker.SPLIT_OPTIMIZERS:
        whole = [rank[f"{name}/whole"] for rank in ranks]
        split = [rank[f"{name}/split"] for rank in ranks]
        # Bit for bit the step every rank takes alone, on every rank.
        for r in range(worker.WORLD):
            assert split[r]["params"] == whole[r]["params"], name
            assert split[r]["failures"] == whole[r]["failures"] == 0, name
        # Each rank decomposed a share; together exactly what one rank did alone.
        alone = whole[0]["blocks"]
        assert alone > 0 and all(w["blocks"] == alone for w in whole)
        assert sum(s["blocks"] for s in split) == alone, name
        assert max(s["blocks"] for s in split) <= 0.7 * alone, name


def test_a_process_group_without_torch_distributed_initialized_is_a_clear_error():
    model = worker.make_model()
    for name in ("block", "kron"):
        with pytest.raises(RuntimeError, match="not initialized"):
            fp.optim.registry.build(name, model.parameters(), process_group=object())


def test_a_one_process_checkpoint_loads_into_two_fsdp2_ranks_and_resumes(two_ranks):
    # The checkpoint is _save_one_process_checkpoint's (3 steps); training on
    # from it must equal training straight through in one process.
    model = worker.make_model()
    opt = fp.optim.DiagFisher(model.parameters(), lr=1e-2, nonfinite="skip")
    worker.train(model, opt, range(worker.STEPS))
    for rank in two_ranks("load1"):
        for got, want in zip(rank["params"], model.parameters(), strict=True):
            torch.testing.assert_close(
                torch.tensor(got), want.detach().reshape(-1), rtol=1e-5, atol=1e-6
            )
