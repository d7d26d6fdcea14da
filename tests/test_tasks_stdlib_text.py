import pytest
import torch

from fisherprec.tasks.stdlib_text import load_stdlib_corpus, random_windows


def test_corpus_is_real_split_and_deterministic():
    a = load_stdlib_corpus(max_bytes=200_000)
    b = load_stdlib_corpus(max_bytes=200_000)
    assert a.train.dtype == torch.uint8 and a.train.numel() == 200_000
    assert a.heldout.numel() > 0 and a.heldout_files > 0 and a.train_files > 0
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)
    assert b"def " in bytes(a.train[:50_000].tolist())


def test_random_windows_targets_are_shifted_inputs():
    data = torch.arange(100, dtype=torch.uint8)
    x, y = random_windows(data, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="shorter than seq_len"):
        random_windows(data, 1, 100)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_bytes"):
        load_stdlib_corpus(max_bytes=0)
    with pytest.raises(ValueError, match="heldout_fraction"):
        load_stdlib_corpus(heldout_fraction=1.0)
