"""OptimizerInfo-style table of the Fisher optimizers: for each registry entry,
the extra keyword arguments that exercise it on tiny models, and the invalid
inputs that must be clear errors. tests/test_optim_conformance.py runs every
check over every entry; a new variant adds its row here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# Invalid settings every Fisher optimizer shares with torch.optim.AdamW.
COMMON_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"lr": -1.0}, "Invalid learning rate"),
    ({"betas": (1.0, 0.9)}, "Invalid beta parameter at index 0"),
    ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1"),
    ({"eps": -1.0}, "Invalid epsilon"),
    ({"weight_decay": -0.1}, "Invalid weight_decay"),
    ({"weight_decay": float("nan")}, "Invalid weight_decay"),
    ({"nonfinite": "ignore"}, "Invalid nonfinite"),
]


@dataclass(frozen=True)
class OptimizerInfo:
    name: str  # the registry name
    # Settings that make the structured parts act within a few steps on small
    # tensors (refresh every step, small blocks).
    small: dict[str, Any] = field(default_factory=dict)
    errors: list[tuple[dict[str, Any], str]] = field(default_factory=list)


INFOS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in [
        OptimizerInfo("diag", errors=[({"power": 0.0}, "Invalid power")]),
        OptimizerInfo(
            "block",
            small={"block_size": 4, "update_every": 1},
            errors=[
                ({"power": 0.0}, "Invalid power"),
                ({"block_size": 0}, "Invalid block_size value: 0"),
                ({"block_size": 300}, "Invalid block_size value: 300"),
                ({"damping": -1e-3}, "Invalid damping value"),
                ({"update_every": 0}, "Invalid update_every value"),
                ({"graft": "adam"}, "Invalid graft value: 'adam'"),
            ],
        ),
        OptimizerInfo(
            "lowrank",
            small={"rank": 3, "update_every": 1},
            errors=[
                ({"rank": 0}, "Invalid rank"),
                ({"rank": 300}, "Invalid rank"),
                ({"damping": -1.0}, "Invalid damping"),
                ({"update_every": 0}, "Invalid update_every"),
                ({"graft": "adam"}, "Invalid graft"),
                ({"buffer_dtype": torch.float16}, "Invalid buffer_dtype"),
                ({"decay": 1.5}, "Invalid decay"),
            ],
        ),
        OptimizerInfo(
            "kron",
            small={"update_every": 1, "max_dim": 4},
            errors=[
                ({"betas": 0.9}, "Invalid betas"),
                ({"mode": "shampoo"}, "Invalid mode"),
                ({"power": 0.0}, "Invalid power"),
                ({"damping": -1.0}, "Invalid damping"),
                ({"mode": "kron", "damping": 0.0}, "needs damping > 0"),
                ({"max_dim": 0}, "Invalid max_dim"),
                ({"update_every": 0}, "Invalid update_every"),
                ({"refresh": "svd"}, "Invalid refresh"),
                ({"graft": "adam"}, "Invalid graft"),
                ({"precondition_1d": 1}, "Invalid precondition_1d"),
                ({"maximize": "yes"}, "Invalid maximize"),
            ],
        ),
    ]
}
