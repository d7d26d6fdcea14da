"""Figure 1, scaled down: the deceleration verdict and the Bayes-optimal bound."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from fisherprec import figure1

# Tiny models on a shared machine: one thread avoids oversubscription stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_markov_sampler_and_bayes_predictor(generator: torch.Generator) -> None:
    rng = np.random.default_rng(0)
    seqs, P = figure1.sample_markov_chains(4000, 3, 3, 1.0, rng)
    assert seqs.shape == (4000, 3) and P.shape == (4000, 3, 3)
    torch.testing.assert_close(P.sum(-1), torch.ones(4000, 3, dtype=torch.float64))
    # transitions follow each sequence's own matrix: E[1{x_1 = j}] = E[P[x_0, j]]
    hits = torch.nn.functional.one_hot(seqs[:, 1], 3).double().mean(0)
    expected = P[torch.arange(4000), seqs[:, 0]].mean(0)
    torch.testing.assert_close(hits, expected, atol=0.03, rtol=0)
    # Bayes predictive by hand for one short sequence (K = 2, α = 0.5)
    seq = torch.tensor([[0, 0, 1, 0, 0]])
    nll = figure1.bayes_markov_nll(seq, 2, 0.5)
    probs = [0.5, (0.5 + 0) / (1 + 1), 0.5, (0.5 + 1) / (1 + 2)]
    torch.testing.assert_close(nll[0], -torch.log(torch.tensor(probs, dtype=torch.float64)))
    # averaged over the true next state: −Σ_j P[x_t, j] log q(j)
    Pm = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]], dtype=torch.float64)
    expected_nll = figure1.bayes_markov_nll(seq, 2, 0.5, transitions=Pm)
    q0 = [[0.5, 0.5], [0.75, 0.25], [0.5, 0.5], [0.5, 0.5]]  # q at t = 0..3 (cur = 0, 0, 1, 0)
    cur = [0, 0, 1, 0]
    ref = [
        -sum(Pm[0, c, j] * math.log(q[j]) for j in range(2)) for c, q in zip(cur, q0, strict=True)
    ]
    torch.testing.assert_close(expected_nll[0], torch.tensor(ref, dtype=torch.float64))
    # entropy floor: row entropy of the current state's row
    Pm = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]], dtype=torch.float64)
    floor = figure1.markov_entropy_floor(torch.tensor([[0, 1, 0]]), Pm)
    torch.testing.assert_close(floor[0], torch.tensor([math.log(2), 0.0], dtype=torch.float64))


def test_bayes_curve_decelerates_to_the_entropy_floor() -> None:
    # No model needed: the Bayes-optimal in-context curve decelerates and stays
    # above the exact floor, which it approaches.
    rng = np.random.default_rng(1)
    seqs, P = figure1.sample_markov_chains(512, 201, 3, 1.0, rng)
    bayes = figure1.bayes_markov_nll(seqs, 3, 1.0)
    floor = figure1.markov_entropy_floor(seqs, P)
    from fisherprec import kinematics

    report = kinematics.deceleration(bayes)
    assert report.decelerating
    gap = (bayes - floor).mean(0)
    assert float(gap[-20:].mean()) > 0  # above the floor ...
    assert float(gap[-20:].mean()) < 0.2 * float(gap[:5].mean())  # ... and closing in


def test_reproduce_figure1_markov_scaled_down(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    lines: list[str] = []
    result = figure1.reproduce_figure1(
        tmp_path, scale=0.04, parts=("markov",), seed=0, log=lines.append
    )
    markov = result["markov"]
    # Insight 1 on the trained model and on the Bayes-optimal predictor
    assert markov["model"]["deceleration"]["decelerating"], markov["model"]["deceleration"]
    assert markov["bayes"]["deceleration"]["decelerating"]
    # No model beats the Bayes-optimal predictor in expectation: paired over the
    # same held-out chains, model − Bayes is ≥ 0 within noise at every position.
    gap = markov["model_minus_bayes"]
    assert gap["min_z"] > -4.0, gap["min_z"]
    assert gap["overall"] > 0
    # and Bayes stays above the entropy floor (on average over positions)
    assert np.mean(markov["bayes"]["mean"]) > markov["entropy_floor"]["overall"]
    # outputs
    on_disk = json.loads((tmp_path / "figure1.json").read_text())
    assert on_disk["markov"]["model_minus_bayes"]["overall"] == pytest.approx(gap["overall"])
    png = (tmp_path / "figure1_markov.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("model − Bayes" in line for line in lines)
    assert len(markov["model"]["mean"]) == markov["config"]["context"]


def test_reproduce_figure1_stdlib_small_scale_decelerates(tmp_path) -> None:
    # The real-text in-context curve at a small scale (a briefly trained transformer;
    # the sequential predictors need no training): CTW, which learns only in context,
    # keeps falling from t = 10 to t = 100 by more than its noise and decelerates.
    result = figure1.reproduce_figure1(
        tmp_path, scale=0.01, parts=("stdlib",), plot=False, log=None
    )
    stdlib = result["stdlib"]
    config = stdlib["config"]
    assert config["heldout_files"] > 0 and config["context"] >= 256
    assert len(stdlib["model"]["mean"]) == config["context"]
    for key in ("ctw", "kt"):
        assert len(stdlib[key]["mean"]) == config["sequential_length"] >= 1000
    ctw = stdlib["ctw"]
    drop = ctw["drop_10_to_100"]
    assert drop["mean"] > 3 * drop["stderr"] > 0, drop
    assert ctw["deceleration"]["decelerating"], ctw["deceleration"]
    # v(t) at the reported positions, each with a standard error over the windows
    v = ctw["velocity"]
    assert list(v) == ["1", "10", "100", str(config["sequential_length"])]
    assert v["1"]["mean"] > v["10"]["mean"] > v["100"]["mean"] > v["1024"]["mean"]
    assert all(m["stderr"] > 0 for m in v.values())
    # ... and the learning rate −dv/dt falls too (deceleration), measured per window
    rate = ctw["minus_dv_dt"]
    assert rate["1"]["mean"] > rate["10"]["mean"] > rate["100"]["mean"] > 0
    # KT learns the window's byte frequencies: above CTW, below uniform after t = 100
    assert ctw["velocity"]["100"]["mean"] < stdlib["kt"]["velocity"]["100"]["mean"] < math.log(256)
    assert math.isfinite(stdlib["model"]["deceleration"]["drop"])
    assert 0 < stdlib["unigram_nll"] < math.log(256)
    assert not (tmp_path / "figure1_stdlib.png").exists()


def test_running_one_part_keeps_the_others_entries(tmp_path, monkeypatch) -> None:
    earlier = {"scale": 2.0, "markov": {"model": {"mean": [1.0]}}, "stdlib": {"old": True}}
    (tmp_path / "figure1.json").write_text(json.dumps(earlier))
    monkeypatch.setattr(figure1, "_stdlib_part", lambda *args: {"new": True})
    result = figure1.reproduce_figure1(tmp_path, parts=("stdlib",), plot=False, log=None)
    on_disk = json.loads((tmp_path / "figure1.json").read_text())
    assert on_disk == result
    assert result["markov"] == earlier["markov"]  # kept
    assert result["stdlib"]["new"] and "old" not in result["stdlib"]  # replaced
    assert result["stdlib"]["scale"] == 1.0 and result["earlier"]["scale"] == 2.0


def test_reproduce_figure1_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="Invalid scale value"):
        figure1.reproduce_figure1(tmp_path, scale=0.0)
    with pytest.raises(ValueError, match="Invalid parts value"):
        figure1.reproduce_figure1(tmp_path, parts=("imagenet",))


def test_cli_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser(prog="fisherprec")
    figure1.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["kinematics", "--out", "x", "--scale", "0.5", "--parts", "markov", "--no-plot"]
    )
    seen = {}

    def fake(out_dir, **kwargs):
        seen.update(kwargs, out_dir=out_dir)
        return {}

    monkeypatch.setattr(figure1, "reproduce_figure1", fake)
    assert args.func(args) == 0
    assert seen == {
        "out_dir": "x",
        "scale": 0.5,
        "parts": ["markov"],
        "seed": 0,
        "plot": False,
        "progress": False,
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["kinematics", "--parts", "imagenet"])
