"""bench/gpu_check.py must keep working on machines without a GPU: its
CPU-side parts run here (the CPU kernel standing in for the CUDA one)."""

from __future__ import annotations

import pytest
import torch

from bench import gpu_check


@pytest.mark.parametrize("fn", gpu_check.CHECKS, ids=lambda f: f.__name__)
def test_checks_run_without_a_gpu(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fn({"cuda": False, "quick": True})
    finally:
        torch.set_num_threads(threads)
    assert result["ok"] is True, result


def test_no_gpu_exits_with_a_clear_status(capsys, monkeypatch):
    monkeypatch.setattr(gpu_check, "CHECKS", [])
    status = gpu_check.main(["--no-build", "--skip-timing"])
    captured = capsys.readouterr()
    assert status == 2 and "no CUDA device" in captured.err
    assert '"status": 2' in captured.out
