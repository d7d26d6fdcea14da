from __future__ import annotations

import pytest
import torch


@pytest.fixture
def generator(request: pytest.FixtureRequest) -> torch.Generator:
    """A fresh, reproducible generator per test (seeded from the test's name)."""
    seed = sum(map(ord, request.node.nodeid)) % (2**31)
    return torch.Generator().manual_seed(seed)
