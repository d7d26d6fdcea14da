"""fisher.Kron against the float64 dense definition (tests/reference.kron_fisher):
matrix views of 1-D, 2-D, conv and 3-D tensors, blocked sides with tails,
several tensors at once, inverse roots for several powers, the K-FAC exactness
case, failed decompositions, and fisher.empirical(kind="kron")."""

from __future__ import annotations

import pytest
import torch

import fisherprec as fp
from fisherprec import ops
from fisherprec.fisher.kron import KronLayout, matrix_shape
from tests import reference

# (shape, max_dim): odd sizes, tails on one side, on both, a side of 1, conv, 3-D.
SHAPES = [
    ((5, 7), 1024),
    ((13, 9), 4),  # rows 4+4+4+1, cols 4+4+1: all four block classes
    ((1, 11), 4),
    ((11, 1), 4),
    ((6,), 4),  # 1-D → (1, 6): tiles of (1, 4) and (1, 2)
    ((3, 2, 3, 3), 5),  # conv (o, i, kh, kw) → (3, 18), cols 5+5+5+3
    ((4, 3, 5), 7),  # 3-D → (4, 15)
    ((1,), 8),
]


def _observations(shape, generator):
    numel = torch.Size(shape).numel()
    return [
        torch.randn(numel, generator=generator),
        torch.randn(4, numel, generator=generator) * 3,
        torch.randn(2, numel, generator=generator, dtype=torch.float64) * 0.5,
    ]


def _close(got, want, rtol):
    scale = want.abs().max().clamp_min(1e-30)
    err = float((got.to(torch.float64) - want).abs().max() / scale)
    assert err <= rtol, f"relative error {err:.3g} > {rtol:.1g}"


def test_matrix_view():
    assert matrix_shape(()) == (1, 1)
    assert matrix_shape((7,)) == (1, 7)
    assert matrix_shape((3, 4)) == (3, 4)
    assert matrix_shape((8, 3, 5, 5)) == (8, 75)
    layout = KronLayout((13, 9), 4)
    assert [(c.rows, c.cols, c.count) for c in layout.classes] == [
        (4, 4, 6),
        (4, 1, 3),
        (1, 4, 2),
        (1, 1, 1),
    ]
    assert layout.num_blocks == 12
    x = torch.randn(3, 13 * 9)
    assert torch.equal(layout.unblocks(layout.blocks(x)), x)


@pytest.mark.parametrize(("shape", "max_dim"), SHAPES)
@pytest.mark.parametrize("beta", [None, 0.8])
def test_dense_matches_definition(shape, max_dim, beta, generator):
    updates = _observations(shape, generator)
    est = fp.fisher.Kron(shape, beta=beta, max_dim=max_dim, damping=1e-3)
    for g in updates:
        est.update(g)
    want = reference.kron_fisher(updates, shape, max_dim, beta)
    _close(est.to_dense(), want, 1e-12)
    assert est.trace() == pytest.approx(float(want.trace()), rel=1e-12)
    v = torch.randn(3, est.num_params, generator=generator, dtype=torch.float64)
    _close(est.mv(v), v @ want, 1e-12)


@pytest.mark.parametrize(("shape", "max_dim"), SHAPES)
@pytest.mark.parametrize("power", [0.25, 0.5, 1.0, 1.5])
def test_inv_root_matches_dense_eigh(shape, max_dim, power, generator):
    updates = _observations(shape, generator)
    est = fp.fisher.Kron(shape, max_dim=max_dim, damping=0.05)
    for g in updates:
        est.update(g)
    root = reference.inv_root(reference.kron_fisher(updates, shape, max_dim), 0.05, power)
    v = torch.randn(2, est.num_params, generator=generator, dtype=torch.float64)
    _close(est.inv_root_mv(v, power=power), v @ root, 1e-10)
    _close(est.inv_root_mv(v[0].float(), power=power), v[0] @ root, 1e-5)
    assert (est.eig_status() == ops.ROOT_OK).all()


def test_rank_one_gradients_with_independent_factors_are_exact(generator):
    """Gradients u vᵀ over all pairs (u_i, v_j): E[g gᵀ] = E[uuᵀ] ⊗ E[vvᵀ] exactly,
    and the Kronecker factorization recovers it (the K-FAC assumption)."""
    us = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    vs = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    grads = torch.stack([torch.outer(u, v).reshape(-1) for u in us for v in vs])
    est = fp.fisher.Kron((4, 3)).update(grads)
    exact = reference.empirical_fisher([grads])
    _close(est.to_dense(), exact, 1e-12)
    # A generic gradient distribution is not Kronecker-structured: the check can fail.
    generic = torch.randn(30, 12, generator=generator, dtype=torch.float64)
    other = fp.fisher.Kron((4, 3)).update(generic)
    err = (other.to_dense() - reference.empirical_fisher([generic])).abs().max()
    assert err > 1e-3


def test_one_row_is_the_dense_fisher_of_each_tile(generator):
    grads = torch.randn(9, 10, generator=generator)
    est = fp.fisher.Kron((10,), max_dim=6).update(grads)
    dense = reference.empirical_fisher([grads])
    want = reference.block_diagonal(dense, [6, 4])
    _close(est.to_dense(), want, 1e-12)


def test_several_tensors_are_block_diagonal(generator):
    shapes = [(3, 5), (5,), (2, 2, 2)]
    grads = torch.randn(7, 15 + 5 + 8, generator=generator)
    est = fp.fisher.Kron(shapes, max_dim=4).update(grads)
    want = torch.block_diag(
        reference.kron_fisher([grads[:, :15]], shapes[0], 4),
        reference.kron_fisher([grads[:, 15:20]], shapes[1], 4),
        reference.kron_fisher([grads[:, 20:]], shapes[2], 4),
    )
    _close(est.to_dense(), want, 1e-12)
    root = reference.inv_root(want, 1e-2, 0.5)
    est.damping = 1e-2
    v = torch.randn(28, generator=generator, dtype=torch.float64)
    _close(est.inv_root_mv(v), root @ v, 1e-10)


def test_empirical_kind_kron_uses_the_parameter_shapes(generator):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x = torch.randn(10, 4, generator=generator)
    y = torch.randn(10, 2, generator=generator)
    loss = torch.nn.functional.mse_loss
    est = fp.fisher.empirical(model, loss, x, y, kind="kron", max_dim=8)
    assert [lay.shape for lay in est.layouts] == [tuple(p.shape) for p in model.parameters()]
    grads = fp.fisher.per_sample_grads(model, loss, x, y)
    pieces, start = [], 0
    for p in model.parameters():
        pieces.append(reference.kron_fisher([grads[:, start : start + p.numel()]], p.shape, 8))
        start += p.numel()
    _close(est.to_dense(), torch.block_diag(*pieces), 1e-10)


def test_nonfinite_factor_gives_nan_products_and_a_status(generator):
    est = fp.fisher.Kron((6, 4), max_dim=3, damping=1e-3)
    g = torch.randn(24, generator=generator)
    est.update(g)
    # update() refuses a non-finite g; a statistic that became non-finite
    # (say, by overflow) in block (0, 0) of the first size class:
    est.left[0][0][0, 0, 0] = float("nan")
    status = est.eig_status()
    assert status[0] == ops.ROOT_NONFINITE_INPUT
    assert (status[1:] == ops.ROOT_OK).all()
    out = est.inv_root_mv(torch.randn(24, generator=generator)).reshape(6, 4)
    assert torch.isnan(out[:3, :3]).all() and torch.isfinite(out[3:]).all()
    assert torch.isfinite(out[:, 3:]).all()


def test_memory_bytes_counts_factors_and_cached_decompositions(generator):
    est = fp.fisher.Kron((13, 9), max_dim=4)
    factors = 8 * KronLayout((13, 9), 4).factor_numel()
    assert est.memory_bytes() == factors
    est.update(torch.randn(117, generator=generator))
    est.inv_root_mv(torch.randn(117, generator=generator))
    assert est.memory_bytes() > 2 * factors


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"shape": (3, 0)}, ValueError, "num_params"),
        ({"shape": [(3, 2), (0,)]}, ValueError, "num_params"),
        ({"shape": (3, -1)}, ValueError, "negative"),
        ({"shape": "3x3"}, TypeError, "shape must be"),
        ({"shape": (2.5, 3)}, TypeError, "shape must be"),
        ({"shape": (3, 3), "max_dim": 0}, ValueError, "Invalid max_dim"),
        ({"shape": (3, 3), "max_dim": 2.0}, ValueError, "Invalid max_dim"),
    ],
)
def test_bad_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        fp.fisher.Kron(**kwargs)


def test_lapack_threads_restores_the_thread_count():
    from fisherprec.fisher.kron import lapack_threads

    threads = torch.get_num_threads()
    with lapack_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError), lapack_threads(torch.device("cpu")):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safe_eigh_dispatches_small_cpu_batches_to_the_native_solver(dtype, monkeypatch):
    from fisherprec.fisher.kron import NATIVE_EIGH_MAX_DIM, safe_eigh

    native = ops.symmetric_eigh
    sizes: list[int] = []

    def counted(m):
        sizes.append(m.shape[-1])
        return native(m)

    monkeypatch.setattr(ops, "symmetric_eigh", counted)
    g = torch.Generator().manual_seed(2)
    limit = NATIVE_EIGH_MAX_DIM[dtype]
    for d in (3, limit, limit + 1):
        x = torch.randn(3, d, d + 2, generator=g, dtype=torch.float64)
        m = (x @ x.mT).to(dtype)
        sizes.clear()
        w, q, status = safe_eigh(m)
        assert sizes == ([d] if d <= limit else []), d
        assert w.dtype == q.dtype == dtype and status.tolist() == [ops.ROOT_OK] * 3
        if d <= limit:  # the native solver's float64 result, rounded to the dtype
            w64, q64, _ = native(m)
            assert torch.equal(w, w64.to(dtype)) and torch.equal(q, q64.to(dtype))
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        a = m.to(torch.float64)
        recon = q.to(torch.float64) @ torch.diag_embed(w.to(torch.float64)) @ q.to(torch.float64).mT
        assert ((recon - a).abs().max() / a.abs().max()) < tol


def test_safe_eigh_reports_float32_overflow_of_the_native_result():
    from fisherprec.fisher.kron import safe_eigh

    m = torch.diag_embed(torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float32))
    # Finite float32 entries whose largest eigenvalue, 6e38, is not a float32.
    m[1, 0, 0] = 3e38
    m[1, 1, 1] = 3e38
    m[1, 0, 1] = m[1, 1, 0] = 3e38
    w, q, status = safe_eigh(m)
    assert status.tolist() == [ops.ROOT_OK, ops.ROOT_NONFINITE_OUTPUT]
    assert w[1].isnan().all() and q[1].isnan().all() and torch.isfinite(w[0]).all()
