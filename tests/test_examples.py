"""The runnable examples of docs/distributed.md: examples/distributed_train.py
under torchrun with two gloo CPU processes (DDP with the refresh work split,
FSDP2), and the Hugging Face Trainer snippet when transformers is installed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TEARDOWN_ABORT = "terminate called without an active exception"

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="needs torch.distributed"
)


@pytest.mark.parametrize(("wrap", "optimizer"), [("ddp", "kron"), ("fsdp2", "lowrank")])
def test_distributed_example_trains_under_torchrun(wrap, optimizer, tmp_path):
    done = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
            str(ROOT / "examples" / "distributed_train.py"),
            "--wrap", wrap, "--optimizer", optimizer, "--steps", "30",
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    losses = [float(x) for x in re.findall(r"loss ([0-9.]+)", done.stdout)]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], done.stdout + done.stderr[-3000:]
    assert f"{optimizer} under {wrap} on 2 ranks: done" in done.stdout
    if done.returncode != 0 and TEARDOWN_ABORT in done.stderr:
        # Trained to the end (checked above); a rank then aborted in the
        # interpreter's teardown, after destroy_process_group: a C++ thread
        # (gloo's or DCP's) still alive at exit. Seen about once in ten runs
        # on the loaded 2-core machine; not fisherprec's state or step.
        pytest.xfail(f"known abort at process teardown: {TEARDOWN_ABORT}")
    assert done.returncode == 0, done.stderr[-3000:]


def _doc_block(heading: str) -> str:
    """The first ```python block after `heading` in docs/distributed.md."""
    text = (ROOT / "docs" / "distributed.md").read_text()
    after = text[text.index(heading) :]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_hugging_face_trainer_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_doc_block("## Hugging Face Trainer"), "docs/distributed.md", "exec"), scope)
    history = [h["loss"] for h in scope["trainer"].state.log_history if "loss" in h]
    assert history and all(x == x for x in history)  # it trained and logged finite losses
