"""Figure 1 of "Physics of Learning", reproduced on a CPU in minutes.

The paper plots the in-context velocity v(t) = E[−log p(x_t | x_<t)] and
acceleration a(t) = E[v(t+1) − v(t)] of a small language model on OpenWebText
(docs/theory.md, "In-context learning and sequential prediction"; Insight 1: learning decelerates towards a floor). Here, two
settings where the curves can be checked:

1. ``markov`` — in-context learning of random Markov chains. Each sequence
   comes from its own chain over K states whose transition rows are drawn from
   a symmetric Dirichlet(α) prior (first state uniform). A small causal
   transformer is trained on fresh chains; its in-context velocity is plotted
   beside that of the Bayes-optimal predictor — the Dirichlet posterior
   predictive p(j | x_≤t) = (α + n_{x_t j}) / (Kα + n_{x_t ·}) with n the
   transition counts seen so far — and the exact entropy floor, the expected
   entropy E[H(P_{x_t ·})] of the true next-state distribution, the lower
   bound that no predictor can beat in expectation (the paper only names it).
   No trained model can beat the Bayes curve in expectation, so the gap
   model − Bayes measures what the model has not learnt.
2. ``stdlib`` — real text nobody here wrote: the running Python's own
   standard-library sources (read at run time, see
   :mod:`fisherprec.tasks.stdlib_text`). On random windows of held-out files,
   three learners: a byte-level transformer (context 256) trained on the
   other files, and two sequential predictors with regret guarantees that
   start from nothing in every window and learn only in context
   (:mod:`fisherprec.sequential`: context-tree weighting of depth 3, and the
   KT estimator of byte frequencies), over 1024 bytes. For each: v(t) and
   −dv/dt at t = 1, 10, 100 and the last position, the drop of v from
   t ≈ 10 to t ≈ 100, and the deceleration report, all with standard errors
   over the windows.

Each part writes ``figure1_<part>.png`` (velocity and acceleration panels) and
all numbers go to ``figure1.json``. Run it as ``fisherprec kinematics`` or::

    >>> from fisherprec.figure1 import reproduce_figure1
    >>> result = reproduce_figure1("out", scale=0.05, parts=("markov",))  # doctest: +SKIP
    >>> result["markov"]["model"]["deceleration"]["decelerating"]  # doctest: +SKIP
    True

``scale`` multiplies the training steps and the number of evaluation
sequences (1.0: minutes on two CPU cores; 0.05: seconds). Running only some
parts keeps the others' entries of an existing ``figure1.json`` in the same
folder; docs/figure1/README.md gives the command that made the figures there.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fisherprec import kinematics
from fisherprec.kinematics import Curve

__all__ = [
    "PARTS",
    "TinyTransformer",
    "bayes_markov_nll",
    "markov_entropy_floor",
    "register",
    "reproduce_figure1",
    "sample_markov_chains",
]

PARTS = ("markov", "stdlib")


# ------------------------------------------------------------------- model
class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """A pre-norm causal transformer with learned positions: ids (B, T) → logits (B, T, V)."""

    def __init__(
        self, vocab: int, context: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.context = context
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(context, d_model))
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.context:
            raise ValueError(f"sequence of {ids.shape[1]} tokens exceeds context {self.context}")
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def _train(
    model: nn.Module,
    batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float,
    log: Callable[[str], None],
    name: str,
) -> dict[str, Any]:
    """AdamW with linear warm-up and cosine decay; returns the loss trace summary."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        x, y = batches(step)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item() if not loss.requires_grad else loss.detach().item())
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            recent = sum(losses[-20:]) / len(losses[-20:])
            log(f"[{name}] step {step + 1}/{steps}  train loss {recent:.4f}")
    seconds = time.perf_counter() - start
    tail = losses[-max(1, steps // 20) :]
    return {"steps": steps, "seconds": seconds, "final_train_loss": sum(tail) / len(tail)}


# -------------------------------------------------------- Markov chains
def sample_markov_chains(
    num: int, length: int, num_states: int, concentration: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` sequences of ``length`` states, each from its own random chain.

    Transition rows ~ Dirichlet(concentration · 1_K); the first state is uniform.

    Returns:
        (sequences (num, length) int64, transition matrices (num, K, K) float64).
    """
    K = num_states
    P = rng.dirichlet(np.full(K, concentration), size=(num, K))  # (num, K, K)
    cdf = np.cumsum(P, axis=-1)
    cdf[..., -1] = 1.0  # rounding: make every row's cdf end exactly at 1
    seq = np.empty((num, length), dtype=np.int64)
    seq[:, 0] = rng.integers(0, K, size=num)
    rows = np.arange(num)
    for t in range(1, length):
        u = rng.random(num)
        seq[:, t] = (cdf[rows, seq[:, t - 1]] < u[:, None]).sum(axis=-1)
    return torch.from_numpy(seq), torch.from_numpy(P)


def bayes_markov_nll(
    sequences: torch.Tensor,
    num_states: int,
    concentration: float,
    transitions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token NLL (N, T − 1) of the Bayes-optimal (Dirichlet posterior predictive) predictor.

    Target t + 1 given x_≤t: q(j) = (α + n_{x_t j}) / (Kα + n_{x_t ·}), n the
    transition counts among x_0..x_t. In expectation over the prior no
    predictor has a lower loss at any position.

    With ``transitions`` (N, K, K), the loss is averaged over the true next
    state instead of taken at the sampled one: −Σ_j P_{x_t j} log q(j), the
    same expectation E[v(t)] with less noise (Rao–Blackwell).
    """
    N, L = sequences.shape
    K, alpha = num_states, concentration
    counts = torch.zeros(N, K, K, dtype=torch.float64)
    rows = torch.arange(N)
    out = torch.empty(N, L - 1, dtype=torch.float64)
    for t in range(L - 1):
        cur, nxt = sequences[:, t], sequences[:, t + 1]
        row = counts[rows, cur]
        q = (alpha + row) / (K * alpha + row.sum(-1, keepdim=True))
        if transitions is None:
            out[:, t] = -torch.log(q[rows, nxt])
        else:
            out[:, t] = -(transitions[rows, cur] * q.log()).sum(-1)
        counts[rows, cur, nxt] += 1
    return out


def _model_expected_nll(
    model: nn.Module, sequences: torch.Tensor, transitions: torch.Tensor, batch_size: int = 128
) -> torch.Tensor:
    """The model's loss averaged over the true next state, −Σ_j P_{x_t j} log p(j | x_≤t)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, sequences.shape[0], batch_size):
            seq = sequences[start : start + batch_size, :-1]
            P = transitions[start : start + batch_size]
            logq = torch.log_softmax(model(seq).double(), dim=-1)
            rows = torch.arange(seq.shape[0])[:, None]
            out.append(-(P[rows, seq] * logq).sum(-1))
    return torch.cat(out)


def markov_entropy_floor(sequences: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
    """The exact floor per token: H(P_{x_t ·}) of the true next-state law, (N, T − 1).

    Its mean over chains is E[v(t)] of an oracle that knows the chain, the
    lower bound of every predictor's expected loss at position t. (Over the
    prior, one row's E[H] is ψ(Kα + 1) − ψ(α + 1); the floor differs from it
    only through which states a chain tends to visit.)
    """
    logp = torch.where(transitions > 0, transitions.log(), torch.zeros_like(transitions))
    row_entropy = -(transitions * logp).sum(-1)  # (N, K)
    states = sequences[:, :-1]
    return row_entropy.gather(1, states)


def _dirichlet_row_entropy(num_states: int, concentration: float) -> float:
    a = torch.tensor([num_states * concentration + 1.0, concentration + 1.0], dtype=torch.float64)
    psi = torch.special.digamma(a)
    return float(psi[0] - psi[1])


def _paired_gap(model_nll: torch.Tensor, bayes_nll: torch.Tensor) -> dict[str, Any]:
    """model − Bayes per position, paired over the same sequences."""
    diff = model_nll - bayes_nll
    n = diff.shape[0]
    mean = diff.mean(0)
    se = diff.std(0, correction=1).clamp_min(1e-12) / math.sqrt(n)
    per_seq = diff.mean(1)
    overall = float(per_seq.mean())
    overall_se = float(per_seq.std(correction=1) / math.sqrt(n))
    return {
        "mean": mean.tolist(),
        "stderr": se.tolist(),
        "min_z": float((mean / se).min()),
        "overall": overall,
        "overall_stderr": overall_se,
    }


def _curve_json(curve: Curve, report: kinematics.DecelerationReport) -> dict[str, Any]:
    rep = report.to_dict()
    for key in ("noise", "isotonic_fit"):  # the curves themselves are stored once
        rep.pop(key)
    return {"mean": curve.mean.tolist(), "stderr": curve.stderr.tolist(), "deceleration": rep}


def _markov_part(
    out: Path, scale: float, seed: int, plot: bool, log: Callable[[str], None], progress: bool
) -> dict[str, Any]:
    K, alpha, context = 5, 0.5, 128
    steps = max(20, round(1500 * scale))
    num_eval = max(256, round(2048 * scale))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = TinyTransformer(K, context, d_model=64, n_layers=2, n_heads=4)

    def batches(_: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq, _P = sample_markov_chains(32, context + 1, K, alpha, rng)
        return seq[:, :-1], seq[:, 1:]

    train = _train(model, batches, steps, 3e-3, log, "markov")
    eval_rng = np.random.default_rng(seed + 10_000)  # held-out chains
    seqs, P = sample_markov_chains(num_eval, context + 1, K, alpha, eval_rng)
    # The standard in-context curve (sampled next tokens), and the same
    # expectation averaged over the true next state (far less noise), for the
    # model and for the Bayes-optimal predictor on the same held-out chains.
    sampled_nll = kinematics.in_context_curve(model, seqs, 128, progress=progress, return_nll=True)
    assert isinstance(sampled_nll, torch.Tensor)
    model_nll = _model_expected_nll(model, seqs, P)
    bayes_nll = bayes_markov_nll(seqs, K, alpha, transitions=P)
    bayes_sampled = bayes_markov_nll(seqs, K, alpha)
    floor_nll = markov_entropy_floor(seqs, P)
    curves = {
        "trained transformer": kinematics.velocity(model_nll),
        "Bayes-optimal (Dirichlet posterior)": kinematics.velocity(bayes_nll),
    }
    floor_curve = kinematics.velocity(floor_nll)
    assert isinstance(floor_curve, Curve)
    reports = {
        "model": kinematics.deceleration(model_nll),
        "bayes": kinematics.deceleration(bayes_nll),
        "model (sampled tokens)": kinematics.deceleration(sampled_nll),
    }
    result: dict[str, Any] = {
        "config": {
            "num_states": K,
            "concentration": alpha,
            "context": context,
            "eval_sequences": num_eval,
            "seed": seed,
            "model_params": sum(p.numel() for p in model.parameters()),
            "curves": "loss averaged over the true next state given the context "
            "(Rao-Blackwellized); *_sampled: at the sampled next token",
        },
        "train": train,
        "model": _curve_json(curves["trained transformer"], reports["model"]),  # type: ignore[arg-type]
        "bayes": _curve_json(curves["Bayes-optimal (Dirichlet posterior)"], reports["bayes"]),  # type: ignore[arg-type]
        "model_sampled": _curve_json(
            kinematics.velocity(sampled_nll),  # type: ignore[arg-type]
            reports["model (sampled tokens)"],
        ),
        "entropy_floor": {
            "mean": floor_curve.mean.tolist(),
            "stderr": floor_curve.stderr.tolist(),
            "overall": float(floor_nll.mean()),
            "dirichlet_row_entropy": _dirichlet_row_entropy(K, alpha),
        },
        "model_minus_bayes": _paired_gap(model_nll, bayes_nll),
        "model_minus_bayes_sampled": _paired_gap(sampled_nll, bayes_sampled),
        "uniform": math.log(K),
    }
    for name, report in reports.items():
        log(f"[markov] {name}: {report.summary()}")
    gap = result["model_minus_bayes"]
    log(
        f"[markov] model − Bayes: {gap['overall']:.4f} ± {gap['overall_stderr']:.4f} nats/token "
        f"(min per-position z = {gap['min_z']:.1f}); entropy floor "
        f"{result['entropy_floor']['overall']:.4f}"
    )
    if plot:
        path = out / "figure1_markov.png"
        kinematics.plot_kinematics(
            curves,  # type: ignore[arg-type]
            floor=floor_curve,
            floor_label="entropy floor E[H(P(· | x_t))]",
            title=(
                f"In-context learning of random Markov chains (K={K}, Dirichlet α={alpha}; "
                f"{num_eval} held-out chains)"
            ),
            path=str(path),
        )
        result["png"] = str(path)
    return result


# ----------------------------------------------------------- stdlib bytes
# The real-text panel: held-out windows of stdlib sources, each read from its first
# byte by (a) a byte transformer trained on the training files, context 256, and by
# (b) two sequential predictors that start from nothing in every window (CTW and KT,
# fisherprec.sequential) and so learn only in context, over 1024 bytes.
STDLIB_CONTEXT = 256  # transformer context (bytes)
STDLIB_SEQUENTIAL_LENGTH = 1024  # bytes of context the sequential predictors read
STDLIB_CTW_DEPTH = 3
STDLIB_REPORT_AT = (1, 10, 100)  # positions (bytes of context) reported, plus the last


def _window_mean(per: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Per-window mean of v over positions first … last (1-based, inclusive)."""
    return per[:, first - 1 : last].mean(1)


def _mean_se(values: torch.Tensor) -> dict[str, float]:
    n = values.numel()
    se = float(values.std(correction=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": float(values.mean()), "stderr": se}


def _learning_rate_at(per: torch.Tensor, t: int) -> dict[str, float]:
    """−dv/dt around position t, per window then averaged: the drop of v from the
    positions [⌈t/2⌉, t] to [t, min(2t, T)] divided by the distance of their centres."""
    T = per.shape[1]
    low, high = (max(1, -(-t // 2)), t), (t, min(2 * t, T))
    if high[1] == high[0]:  # at the last position: the two bins below it
        low, high = (max(1, -(-t // 4)), max(1, t // 2)), (max(1, t // 2), t)
    centre = (sum(low) / 2, sum(high) / 2)
    if centre[1] == centre[0]:
        return {"mean": math.nan, "stderr": math.nan}
    rate = (_window_mean(per, *low) - _window_mean(per, *high)) / (centre[1] - centre[0])
    return _mean_se(rate)


def _in_context_summary(per: torch.Tensor) -> dict[str, Any]:
    """v(t) and −dv/dt at t = 1, 10, 100 and the last position, and the drop of v
    from around t = 10 to around t = 100, each with its standard error over windows."""
    T = per.shape[1]
    at = [t for t in STDLIB_REPORT_AT if t < T] + [T]
    velocity = {str(t): _mean_se(per[:, t - 1]) for t in at}
    rate = {str(t): _learning_rate_at(per, t) for t in at}
    out: dict[str, Any] = {"velocity": velocity, "minus_dv_dt": rate}
    if T >= 141:  # geometric bins [t/√2, t√2] around 10 and 100
        drop = _window_mean(per, 7, 14) - _window_mean(per, 71, 141)
        out["drop_10_to_100"] = _mean_se(drop)
        out["drop_10_to_100"]["z"] = out["drop_10_to_100"]["mean"] / max(
            out["drop_10_to_100"]["stderr"], 1e-300
        )
    return out


def _stdlib_part(
    out: Path, scale: float, seed: int, plot: bool, log: Callable[[str], None], progress: bool
) -> dict[str, Any]:
    from fisherprec import sequential
    from fisherprec.tasks.stdlib_text import VOCAB_SIZE, load_stdlib_corpus, random_windows

    context, length = STDLIB_CONTEXT, STDLIB_SEQUENTIAL_LENGTH
    steps = max(10, round(1500 * scale))
    num_eval = max(64, round(2048 * scale))  # bytes are noisy: many windows
    # The whole stdlib at scale 1 (about 10 MB): 1500 steps of 16 windows then see
    # each training byte less than once, so the held-out curve measures what
    # generalises rather than what was memorised (on 2 MB, 2.5 passes, the train
    # loss fell to 1.45 nats while the held-out loss stayed near 2.3). Fewer bytes
    # at small scales: reading files is not free.
    corpus = load_stdlib_corpus(max_bytes=max(200_000, round(20_000_000 * min(1.0, scale))))
    torch.manual_seed(seed)
    model = TinyTransformer(VOCAB_SIZE, context, d_model=128, n_layers=2, n_heads=4)
    gen = torch.Generator().manual_seed(seed)

    def batches(_: int) -> tuple[torch.Tensor, torch.Tensor]:
        return random_windows(corpus.train, 16, context, generator=gen)

    train = _train(model, batches, steps, 3e-3, log, "stdlib")
    # Held-out windows of length + 1 bytes; the transformer reads the first
    # context + 1 of them, so both learners predict the same bytes 1 … context
    # from the same contexts.
    eval_gen = torch.Generator().manual_seed(seed + 10_000)
    x, y = random_windows(corpus.heldout, num_eval, length, generator=eval_gen)
    windows = torch.cat([x[:, :1], y], dim=1)  # (num_eval, length + 1)
    start = time.perf_counter()
    model_nll = kinematics.in_context_curve(
        model, windows[:, : context + 1], 64, progress=progress, return_nll=True
    )
    assert isinstance(model_nll, torch.Tensor)
    # Position 0 of a sequential predictor has no context (uniform): drop it, so that
    # index i is the loss given i + 1 bytes of context, as for the transformer.
    ctw_nll = sequential.ctw_nll(windows, depth=STDLIB_CTW_DEPTH)[:, 1:]
    kt_nll = sequential.kt_nll(windows)[:, 1:]
    eval_seconds = time.perf_counter() - start
    learners = {
        "model": (f"byte transformer (trained, context {context})", model_nll),
        "ctw": (f"CTW depth {STDLIB_CTW_DEPTH} (in context only)", ctw_nll),
        "kt": ("KT byte frequencies (in context only)", kt_nll),
    }
    # A context-free reference: the training set's byte frequencies.
    freq = torch.bincount(corpus.train.long(), minlength=VOCAB_SIZE).double() + 1.0
    unigram = float(-(freq / freq.sum()).log()[y[:, :context]].mean())
    result: dict[str, Any] = {
        "config": {
            "context": context,
            "sequential_length": length,
            "ctw_depth": STDLIB_CTW_DEPTH,
            "eval_windows": num_eval,
            "train_bytes": corpus.train.numel(),
            "heldout_bytes": corpus.heldout.numel(),
            "train_files": corpus.train_files,
            "heldout_files": corpus.heldout_files,
            "seed": seed,
            "model_params": sum(p.numel() for p in model.parameters()),
            "positions": "index i is the loss of byte i + 1 given i + 1 bytes of context; "
            "velocity v(t) = E[-log p(x_t | x_<t)], minus_dv_dt = -(dv/dt) around t",
        },
        "train": train,
        "eval_seconds": eval_seconds,
        "unigram_nll": unigram,
    }
    curves: dict[str, Curve] = {}
    for key, (label, nll) in learners.items():
        curve = kinematics.velocity(nll)
        assert isinstance(curve, Curve)
        report = kinematics.deceleration(nll)
        curves[label] = curve
        result[key] = _curve_json(curve, report) | {"label": label} | _in_context_summary(nll)
        v = result[key]["velocity"]
        line = ", ".join(f"v({t}) = {m['mean']:.3f} ± {m['stderr']:.3f}" for t, m in v.items())
        log(f"[stdlib] {label}: {line}")
        log(f"[stdlib] {label}: {report.summary()}")
    if plot:
        path = out / "figure1_stdlib.png"
        kinematics.plot_kinematics(
            curves,  # type: ignore[arg-type]
            floor=unigram,
            floor_label="unigram of the training files (no context)",
            title=(
                f"In-context learning on held-out Python stdlib sources ({corpus.heldout_files} "
                f"files, {num_eval} windows)"
            ),
            path=str(path),
        )
        result["png"] = str(path)
    return result


# ------------------------------------------------------------------ driver
def reproduce_figure1(
    out_dir: str | Path = "figure1",
    *,
    scale: float = 1.0,
    parts: Sequence[str] = PARTS,
    seed: int = 0,
    plot: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Reproduce the paper's Figure 1 (in-context velocity and acceleration).

    Args:
        out_dir: where ``figure1.json`` and the PNGs go (created if needed).
            Parts not run keep their entries from a figure1.json already there.
        scale: multiplies training steps and evaluation sizes (1.0 ≈ minutes
            on two CPU cores; 0.05 ≈ seconds, for tests).
        parts: any of ``"markov"`` (random Markov chains with the Bayes-optimal
            curve and the entropy floor) and ``"stdlib"`` (bytes of the Python
            standard library: a trained byte transformer with a context of 256
            and the in-context-only CTW and KT predictors over 1024 bytes).
        seed: seeds the model initialisations and the data.
        plot: write the PNGs (needs matplotlib).
        progress: progress bars during evaluation.
        log: called with progress lines (None: silent).

    Returns:
        The dict written to ``figure1.json``: per part, the configuration, the
        training summary, the curves (mean and standard error per position),
        their :func:`fisherprec.kinematics.deceleration` reports, and for
        ``markov`` the Bayes-optimal curve, the entropy floor and the paired
        gap model − Bayes.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"Invalid scale value: {scale}")
    parts = tuple(parts)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ValueError(f"Invalid parts value: {list(parts)} (choose from {list(PARTS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say: Callable[[str], None] = log if log is not None else (lambda _msg: None)
    # Parts not run this time keep what an earlier run wrote to the same folder, so one
    # panel can be remade alone (e.g. ``--parts stdlib``) without losing the other.
    result = _earlier_parts(out / "figure1.json", keep=[p for p in PARTS if p not in parts])
    result |= {"scale": scale, "torch_threads": torch.get_num_threads()}
    start = time.perf_counter()
    runners = {"markov": _markov_part, "stdlib": _stdlib_part}
    for part in PARTS:
        if part in parts:
            part_start = time.perf_counter()
            result[part] = runners[part](out, scale, seed, plot, say, progress)
            result[part]["scale"] = scale
            result[part]["torch_threads"] = torch.get_num_threads()
            result[part]["seconds"] = time.perf_counter() - part_start
    result["seconds"] = time.perf_counter() - start
    with open(out / "figure1.json", "w") as fh:
        json.dump(result, fh, indent=1)
    say(f"wrote {out / 'figure1.json'} in {result['seconds']:.0f} s")
    return result


def _earlier_parts(path: Path, keep: Sequence[str]) -> dict[str, Any]:
    """The entries of ``keep`` from an earlier figure1.json at ``path`` (none if absent
    or unreadable), with that run's settings under "earlier" for the record."""
    if not keep or not path.exists():
        return {}
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(earlier, dict):
        return {}
    kept: dict[str, Any] = {part: earlier[part] for part in keep if part in earlier}
    if kept:
        settings = {k: earlier[k] for k in ("scale", "torch_threads", "note") if k in earlier}
        if settings:
            kept["earlier"] = {"parts": sorted(kept), **settings}
    return kept


# --------------------------------------------------------------------- CLI
def _run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    reproduce_figure1(
        args.out,
        scale=args.scale,
        parts=args.parts,
        seed=args.seed,
        plot=not args.no_plot,
        progress=args.progress,
    )
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``kinematics`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "kinematics",
        help="reproduce Figure 1: in-context velocity and acceleration (Insight 1)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--out", default="figure1", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies training steps and evaluation sizes: 1.0 (default) makes the "
        "figures of docs/figure1 (minutes per part on 2 CPU cores), 0.01 runs in seconds",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="which panels to make; the others keep their entries of an existing "
        "figure1.json in --out",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-plot", action="store_true", help="write the JSON only")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.set_defaults(func=_run)
    return parser
