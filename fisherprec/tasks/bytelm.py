"""Byte-level language model on the running Python's standard-library sources.

A one-layer causal transformer (width 64, 4 heads, 64-byte context, learned
positions) predicts the next byte of windows drawn at random from the training
files of :func:`fisherprec.tasks.stdlib_text.load_stdlib_corpus`; the
generalization error is the mean next-byte cross-entropy (nats/byte) on 64
fixed windows from the held-out files. Predicting uniform bytes scores
ln 256 ≈ 5.55; byte frequencies alone about 3.1.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from fisherprec.tasks.registry import Problem, Task, register, seeded_module
from fisherprec.tasks.stdlib_text import VOCAB_SIZE, Corpus, load_stdlib_corpus, random_windows

WIDTH, HEADS, CONTEXT = 64, 4, 64
BATCH = 16
HELDOUT_WINDOWS = 64
CORPUS_BYTES = 1_000_000


class Block(torch.nn.Module):
    """Pre-norm transformer block: causal self-attention, then a GELU MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.norm2 = torch.nn.LayerNorm(width)
        self.up = torch.nn.Linear(width, 4 * width)
        self.down = torch.nn.Linear(4 * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch, length, _ = h.shape
        qkv = self.qkv(self.norm1(h)).view(batch, length, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return h + self.down(F.gelu(self.up(self.norm2(h))))


class CausalTransformer(torch.nn.Module):
    """Byte embeddings + learned positions, `layers` pre-norm blocks, a byte head."""

    def __init__(
        self, width: int = WIDTH, heads: int = HEADS, context: int = CONTEXT, layers: int = 1
    ) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB_SIZE, width)
        self.position = torch.nn.Parameter(0.02 * torch.randn(context, width))
        self.blocks = torch.nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, VOCAB_SIZE)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        return self.head(self.norm(self.blocks(h)))


def next_byte_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


@functools.lru_cache(maxsize=1)
def _corpus() -> Corpus:
    return load_stdlib_corpus(max_bytes=CORPUS_BYTES)


def make(seed: int, device: torch.device) -> Problem:
    corpus = _corpus()
    generator = torch.Generator().manual_seed(seed)
    heldout = random_windows(
        corpus.heldout, HELDOUT_WINDOWS, CONTEXT, torch.Generator().manual_seed(0)
    )

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = random_windows(corpus.train, BATCH, CONTEXT, generator)
        return x.to(device), y.to(device)

    return Problem(
        model=seeded_module(seed, CausalTransformer).to(device),
        batch=batch,
        loss=next_byte_loss,
        heldout=(heldout[0].to(device), heldout[1].to(device)),
    )


register(
    Task(
        name="bytelm",
        description=(
            "byte-level causal transformer (1 layer, width 64, context 64) on the "
            "Python standard library's sources"
        ),
        make=make,
        steps=400,
        threshold=2.3,
        samples_per_step=BATCH * CONTEXT,
        sample_unit="tokens",
        loss_name="held-out cross-entropy (nats/byte)",
        # The best of lr × (0.1, 0.3, 1, 3, 10) in full-length runs on seed 10000 (the
        # --tune seed) for sgd and adamw. The Fisher variants graft the
        # diagonal (Adam) step size, so they start from AdamW's learning rate.
        lrs={"sgd": 0.3, "adamw": 1e-2},
    )
)
