"""The batched symmetric eigensolver against float64 LAPACK (torch.linalg.eigh)
on random, clustered-spectrum, rank-deficient and NaN-holding matrices."""

import pytest
import torch

from fisherprec import ops

SIZES = [1, 2, 3, 7, 16, 33, 64, 97]


def _spd(g, k, n, rank=None):
    x = torch.randn(k, n, rank or n, generator=g, dtype=torch.float64)
    return x @ x.mT


def _check_decomposition(matrices, w, q, tol):
    a = 0.5 * (matrices + matrices.mT).to(torch.float64)
    n = a.shape[-1]
    scale = torch.linalg.matrix_norm(a, ord=2).clamp_min(1e-300)[:, None]
    reference = torch.linalg.eigvalsh(a)
    assert (w[:, 1:] >= w[:, :-1]).all(), "eigenvalues must ascend"
    assert ((w - reference).abs() / scale).max() < tol
    residual = a @ q - q * w[:, None, :]
    assert (torch.linalg.matrix_norm(residual, ord=2) / scale[:, 0]).max() < tol
    eye = torch.eye(n, dtype=torch.float64)
    assert (q.mT @ q - eye).abs().max() < tol


@pytest.mark.parametrize("n", SIZES)
def test_random_symmetric_matrices_match_lapack(n):
    g = torch.Generator().manual_seed(n)
    m = torch.randn(4, n, n, generator=g, dtype=torch.float64)
    m = m + m.mT  # indefinite
    w, q, status = ops.symmetric_eigh(m)
    assert status.tolist() == [ops.ROOT_OK] * 4
    assert w.dtype == q.dtype == torch.float64 and q.shape == (4, n, n)
    _check_decomposition(m, w, q, 1e-12 * max(1, n))


@pytest.mark.parametrize("n", [5, 33, 64])
def test_clustered_and_rank_deficient_spectra(n):
    g = torch.Generator().manual_seed(100 + n)
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    clustered = torch.ones(n, dtype=torch.float64)
    clustered[: n // 2] += 1e-10 * torch.arange(
        n // 2, dtype=torch.float64
    )  # near-equal eigenvalues
    spectra = torch.stack([clustered, torch.zeros(n, dtype=torch.float64)])
    spectra[1, : max(1, n // 3)] = torch.rand(max(1, n // 3), generator=g, dtype=torch.float64) + 1
    m = basis @ torch.diag_embed(spectra) @ basis.mT
    m = torch.cat([m, _spd(g, 1, n, rank=max(1, n // 4))])
    w, q, status = ops.symmetric_eigh(m)
    assert status.tolist() == [ops.ROOT_OK] * 3
    _check_decomposition(m, w, q, 1e-12 * n)


def test_the_symmetric_part_is_decomposed():
    g = torch.Generator().manual_seed(7)
    m = torch.randn(2, 9, 9, generator=g, dtype=torch.float64)  # not symmetric
    w, q, status = ops.symmetric_eigh(m)
    assert status.tolist() == [ops.ROOT_OK] * 2
    _check_decomposition(m, w, q, 1e-11)


def test_float32_input_is_decomposed_in_float64():
    g = torch.Generator().manual_seed(3)
    m = _spd(g, 3, 12).to(torch.float32)
    w, q, status = ops.symmetric_eigh(m)
    assert w.dtype == torch.float64 and status.tolist() == [ops.ROOT_OK] * 3
    _check_decomposition(m.to(torch.float64), w, q, 1e-12)


def test_a_matrix_holding_nan_or_inf_fails_alone():
    g = torch.Generator().manual_seed(5)
    m = _spd(g, 4, 6)
    m[1, 2, 3] = float("nan")
    m[3, 0, 0] = float("inf")
    w, q, status = ops.symmetric_eigh(m)
    assert status.tolist() == [
        ops.ROOT_OK,
        ops.ROOT_NONFINITE_INPUT,
        ops.ROOT_OK,
        ops.ROOT_NONFINITE_INPUT,
    ]
    for bad in (1, 3):
        assert w[bad].isnan().all() and q[bad].isnan().all()
    _check_decomposition(m[[0, 2]], w[[0, 2]], q[[0, 2]], 1e-12)


def test_result_does_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(11)
    m = _spd(g, 9, 20)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = ops.symmetric_eigh(m)
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(max(2, threads))
    try:
        several = ops.symmetric_eigh(m)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, several, strict=True):
        assert torch.equal(a, b)


def test_empty_batch_and_bad_input():
    w, q, status = ops.symmetric_eigh(torch.empty(0, 4, 4))
    assert w.shape == (0, 4) and q.shape == (0, 4, 4) and status.shape == (0,)
    with pytest.raises(ValueError, match="square"):
        ops.symmetric_eigh(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="3 dimensions"):
        ops.symmetric_eigh(torch.ones(3, 3))
    with pytest.raises(TypeError, match="dtype"):
        ops.symmetric_eigh(torch.ones(1, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="contiguous"):
        ops.symmetric_eigh(torch.ones(1, 3, 6)[:, :, ::2])
    with pytest.raises(ValueError, match="1 ≤ n"):
        ops.symmetric_eigh(torch.ones(1, 0, 0))


def test_gpu_check_compares_devices_and_runs_on_the_cpu():
    from fisherprec.benchmarks.eigh import gpu_check_eigh

    report = gpu_check_eigh("cpu")  # the CPU against itself: the comparison code runs
    assert report and all(v == 0.0 for v in report.values())
