from __future__ import annotations

import pytest
import torch


@pytest.fixture
def generator(request: pytest.FixtureRequest) -> torch.Generator:
    """A fresh, reproducible generator per test (seeded from the test's name)."""
    seed = sum(map(ord, request.node.nodeid)) % (2**31)
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def one_thread():
    """Run the test with torch on one thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
