"""Ill-conditioned teacher-student regression.

A fixed random teacher MLP maps whitened inputs z ~ N(0, I_32) to 4 targets;
the student (an MLP of the same shape) sees x = z · diag(s) · Qᵀ, a random
rotation of z with scales s from 1 down to 10⁻² (input covariance condition
number 10⁴). To match the teacher the student must undo that scaling in
directions that are not axis-aligned: plain SGD crawls along the small
directions, a diagonal preconditioner helps only partly, and a preconditioner
that captures the input correlations (block, low-rank, Kronecker) can
undo it. Training targets carry Gaussian noise (10% of the target scale); the
generalization error is the MSE against the clean teacher on 4096 held-out
inputs, normalized so that predicting zero scores about 1.
"""

from __future__ import annotations

import torch

from fisherprec.tasks.registry import Problem, Task, register, seeded_module

DIM, HIDDEN, OUTPUTS = 32, 64, 4
BATCH = 128
HELDOUT = 4096
SMALLEST_SCALE = 1e-2  # x = z · diag(s) · Qᵀ with s log-spaced from 1 to this
LABEL_NOISE = 0.1


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(DIM, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, OUTPUTS)
    )


def make(seed: int, device: torch.device) -> Problem:
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator))
    mixing = torch.diag(torch.logspace(0.0, torch.log10(torch.tensor(SMALLEST_SCALE)), DIM))
    mixing = mixing @ rotation.T
    teacher = seeded_module(seed + 1, _mlp).requires_grad_(False)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, DIM, generator=generator)
        return z @ mixing, teacher(z)

    heldout_x, heldout_y = sample(HELDOUT)
    scale = heldout_y.std()

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = sample(BATCH)
        y = y / scale + LABEL_NOISE * torch.randn(y.shape, generator=generator)
        return x.to(device), y.to(device)

    return Problem(
        model=seeded_module(seed + 2, _mlp).to(device),
        batch=batch,
        loss=torch.nn.functional.mse_loss,
        heldout=(heldout_x.to(device), (heldout_y / scale).to(device)),
    )


register(
    Task(
        name="regression",
        description=(
            "ill-conditioned teacher-student regression: a tanh MLP (32-64-4) learns a "
            "random teacher from rotated inputs with scales 1..1e-2 (condition number 1e4)"
        ),
        make=make,
        steps=3000,
        threshold=0.04,
        samples_per_step=BATCH,
        sample_unit="examples",
        loss_name="held-out MSE (normalized)",
        # The best of lr × (0.1, 0.3, 1, 3, 10) in full-length runs on seed 10000 (the
        # --tune seed) for sgd and adamw. The Fisher variants graft the diagonal
        # (Adam) step size, so they start from AdamW's learning rate.
        lrs={"sgd": 0.1, "adamw": 3e-3},
        log_scale=True,
    )
)
