"""fisherprec.sequential: KT and CTW against direct computations on short strings."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from fisherprec import sequential


def _rng(generator: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator)))


# ----------------------------------------------------------------------- KT
def test_kt_by_hand() -> None:
    # x = a a b a c over M = 3: p = 1/3, (1 + ½)/(1 + 3/2), ½/(2 + 3/2), (2 + ½)/(3 + 3/2), ½/(4 + 3/2)
    x = torch.tensor([0, 0, 1, 0, 2])
    want = [Fraction(1, 3), Fraction(3, 5), Fraction(1, 7), Fraction(5, 9), Fraction(1, 11)]
    got = sequential.kt_nll(x, alphabet=3)
    assert got.shape == (1, 5) and got.dtype == torch.float64
    torch.testing.assert_close(
        got[0], torch.tensor([-math.log(p) for p in want], dtype=torch.float64)
    )


@pytest.mark.parametrize(("N", "T", "M"), [(1, 1, 2), (3, 17, 5), (4, 40, 256)])
def test_kt_matches_a_direct_loop(generator: torch.Generator, N: int, T: int, M: int) -> None:
    rng = _rng(generator)
    x = rng.integers(0, min(M, 7), (N, T))  # few distinct symbols: counts repeat
    got = sequential.kt_nll(x, alphabet=M)
    for row in range(N):
        counts = np.zeros(M)
        for t in range(T):
            p = (counts[x[row, t]] + 0.5) / (t + M / 2)
            assert float(got[row, t]) == pytest.approx(-math.log(p), rel=1e-12)
            counts[x[row, t]] += 1
    # The joint probability is the Dirichlet(½) mixture in closed form.
    for row in range(N):
        n = np.bincount(x[row], minlength=M)
        log_joint = sum(math.lgamma(c + 0.5) - math.lgamma(0.5) for c in n)
        log_joint += math.lgamma(M / 2) - math.lgamma(T + M / 2)
        assert -float(got[row].sum()) == pytest.approx(log_joint, rel=1e-10)


# ---------------------------------------------------------------------- CTW
def _log_kt(zeros: int, ones: int) -> float:
    """log P_e(a, b) = log Γ(a + ½)Γ(b + ½) / (π Γ(a + b + 1))."""
    return (
        math.lgamma(zeros + 0.5)
        + math.lgamma(ones + 0.5)
        - math.log(math.pi)
        - math.lgamma(zeros + ones + 1)
    )


def _brute_ctw_log_prob(x: list[int], depth: int, bits: int, all_children: bool) -> float:
    """log P_w(x_1 … x_T) by the definition: for each bit-tree node, the counts of
    its bits in every context, then the recursion P_w(s) = ½P_e(s) + ½Π_c P_w(cs)
    from the root. With ``all_children`` the product runs over every symbol and
    the padding symbol (an unseen child contributes P_w = 1); else over seen ones."""
    PAD = -1
    counts: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for t, symbol in enumerate(x):
        past = tuple(x[t - i] if t - i >= 0 else PAD for i in range(1, depth + 1))
        for j in range(bits):
            node = (1 << j) | (symbol >> (bits - j))
            bit = (symbol >> (bits - 1 - j)) & 1
            for d in range(depth + 1):
                counts.setdefault((node, past[:d]), [0, 0])[bit] += 1
    alphabet = [PAD, *range(1 << bits)]

    @functools.cache
    def log_pw(node: int, context: tuple[int, ...]) -> float:
        a, b = counts.get((node, context), (0, 0))
        pe = _log_kt(a, b)
        if len(context) == depth:
            return pe
        children = (
            alphabet if all_children else [c for c in alphabet if (node, (*context, c)) in counts]
        )
        product = sum(log_pw(node, (*context, c)) for c in children)
        return float(np.logaddexp(pe, product) + math.log(0.5))

    return sum(log_pw(node, ()) for node in range(1, 1 << bits))


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_ctw_joint_probability_matches_brute_force(
    generator: torch.Generator, bits: int, depth: int
) -> None:
    rng = _rng(generator)
    for length in (1, 5, 7, 10):
        x = rng.integers(0, 1 << bits, length)
        nll = sequential.ctw_nll(x, depth=depth, bits=bits)
        assert nll.shape == (1, length)
        # Every prefix: the sequential conditionals multiply to P_w of the prefix.
        for t in range(1, length + 1):
            want = _brute_ctw_log_prob(x[:t].tolist(), depth, bits, all_children=True)
            assert -float(nll[0, :t].sum()) == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_ctw_on_bytes_matches_brute_force(generator: torch.Generator, depth: int) -> None:
    rng = _rng(generator)
    text = list(b"abracadabra")  # repeats, so contexts recur
    noise = rng.integers(0, 256, 8).tolist()  # and arbitrary bytes
    batch = np.array([text[:8], noise, text[3:]])
    nll = sequential.ctw_nll(batch, depth=depth)  # several windows in one pass
    for row, x in enumerate(batch.tolist()):
        for t in (1, 2, 5, 8):
            want = _brute_ctw_log_prob(x[:t], depth, 8, all_children=False)
            assert -float(nll[row, :t].sum()) == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("depth", [0, 2])
def test_ctw_predictions_are_normalised(generator: torch.Generator, depth: int) -> None:
    # p(· | x_<t) sums to 1 over the 256 bytes: run every continuation of one prefix.
    rng = _rng(generator)
    prefix = rng.integers(0, 256, 9)
    batch = np.concatenate([np.tile(prefix, (256, 1)), np.arange(256)[:, None]], axis=1)
    nll = sequential.ctw_nll(batch, depth=depth, chunk=100)  # chunks give the same answer
    assert float(torch.exp(-nll[:, -1]).sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((nll[:, :-1] == nll[0, :-1]).all())
    # The first byte is uniform, and CTW of depth 0 on a binary stream is KT.
    torch.testing.assert_close(nll[:, 0], torch.full((256,), math.log(256), dtype=torch.float64))
    bits = rng.integers(0, 2, (3, 30))
    torch.testing.assert_close(
        sequential.ctw_nll(bits, depth=0, bits=1), sequential.kt_nll(bits, alphabet=2)
    )


def test_ctw_learns_a_repeated_pattern() -> None:
    # A period-3 byte pattern: at depth 2 the context fixes the next byte, so the
    # loss per byte falls towards 0, at KT's rate (≈ 8 · ½ / t per bit-tree node).
    x = torch.tensor([list(b"xyz" * 100)])
    nll = sequential.ctw_nll(x, depth=2)[0]
    assert float(nll[:3].mean()) > 3.0
    assert float(nll[-50:].mean()) < 0.05
    assert float(nll[-50:].mean()) < float(nll[100:150].mean())


def test_bad_input_is_refused() -> None:
    with pytest.raises(TypeError, match="sequences must hold integer symbols"):
        sequential.ctw_nll(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"sequences must lie in \[0, 256\)"):
        sequential.ctw_nll(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match=r"sequences must lie in \[0, 2\)"):
        sequential.kt_nll(torch.tensor([[-1, 0]]), alphabet=2)
    with pytest.raises(ValueError, match=r"sequences must have shape \(T,\) or \(N, T\)"):
        sequential.kt_nll(torch.zeros(2, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="holds no symbols"):
        sequential.ctw_nll(np.zeros((2, 0), dtype=np.int64))
    with pytest.raises(ValueError, match="Invalid depth value: -1"):
        sequential.ctw_nll([[1, 2]], depth=-1)
    with pytest.raises(TypeError, match="depth must be an int"):
        sequential.ctw_nll([[1, 2]], depth=2.0)
    with pytest.raises(ValueError, match="overflows the int64 context keys"):
        sequential.ctw_nll([[1, 2]], depth=8)
    with pytest.raises(ValueError, match="Invalid alphabet value: 1"):
        sequential.kt_nll([[0]], alphabet=1)


def test_docstring_example() -> None:
    import doctest

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    tests = finder.find(sequential)
    assert sum(len(t.examples) for t in tests) >= 3
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
