"""The native Bellman backup (fisherprec::bellman_backup) against the float64 reference."""

import pytest
import torch

from fisherprec import ops
from fisherprec.bellman import CSRTransitions
from tests import reference

# Odd sizes around the CPU kernel's 1024-state chunks; A = 1 is policy evaluation's shape.
SHAPES = [(1, 1), (2, 3), (7, 4), (33, 1), (1023, 2), (1025, 3), (2049, 1)]


def random_csr(S, A, generator, dtype=torch.float64, index_dtype=torch.int64, max_successors=6):
    """CSR rows of random length 0..max_successors (empty rows end the episode),
    repeated columns allowed, row sums in (0, 1]."""
    lengths = torch.randint(0, max_successors + 1, (A * S,), generator=generator)
    indptr = torch.zeros(A * S + 1, dtype=torch.int64)
    indptr[1:] = lengths.cumsum(0)
    nnz = int(indptr[-1])
    indices = torch.randint(0, S, (nnz,), generator=generator).to(index_dtype)
    values = torch.rand(nnz, generator=generator, dtype=torch.float64) / max_successors
    return CSRTransitions(indptr, indices, values.to(dtype), S, A)


def inputs(S, A, generator, dtype=torch.float64, index_dtype=torch.int64):
    csr = random_csr(S, A, generator, dtype, index_dtype)
    reward = torch.randn(S, A, generator=generator, dtype=torch.float64).to(dtype)
    v = (10 * torch.randn(S, generator=generator, dtype=torch.float64)).to(dtype)
    return csr, reward, v


@pytest.mark.parametrize(("S", "A"), SHAPES)
@pytest.mark.parametrize("dtype", ops.BELLMAN_DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_backup_matches_float64_reference(S, A, dtype, index_dtype, generator):
    csr, reward, v = inputs(S, A, generator, dtype, index_dtype)
    gamma = float(torch.rand((), generator=generator))
    v_new, policy, q, delta = ops.bellman_backup(
        csr.indptr, csr.indices, csr.values, reward, v, gamma, with_q=True
    )
    # The reference sees the same (rounded) inputs, in float64.
    want_v, want_policy, want_q = reference.bellman_backup(csr.to_dense(), reward, v, gamma)
    assert v_new.dtype == q.dtype == dtype and policy.dtype == torch.int64
    assert v_new.shape == (S,) and q.shape == (S, A) and delta.shape == (2,)
    if dtype == torch.float64:
        torch.testing.assert_close(q, want_q, rtol=1e-13, atol=1e-12)
        torch.testing.assert_close(v_new, want_v, rtol=1e-13, atol=1e-12)
        assert torch.equal(policy, want_policy)
    else:  # float64 accumulation, one rounding at the end
        torch.testing.assert_close(q, want_q.float(), rtol=2e-7, atol=1e-6)
        torch.testing.assert_close(v_new, want_v.float(), rtol=2e-7, atol=1e-6)
        chosen = want_q.gather(1, policy.unsqueeze(1)).squeeze(1)
        assert bool((chosen >= want_v - 1e-5).all())
    diff = v_new.double() - v.double()
    assert delta.tolist() == pytest.approx([float(diff.min()), float(diff.max())], rel=1e-12)


@pytest.mark.parametrize("dtype", ops.BELLMAN_DTYPES)
def test_backup_with_fixed_policy_evaluates_it(dtype, generator):
    S, A = 1500, 3
    csr, reward, v = inputs(S, A, generator, dtype)
    policy = torch.randint(0, A, (S,), generator=generator)
    v_new, policy_out, q, _ = ops.bellman_backup(
        csr.indptr, csr.indices, csr.values, reward, v, 0.9, policy=policy
    )
    want, _, _ = reference.bellman_backup(csr.to_dense(), reward, v, 0.9, policy=policy)
    tol = {"rtol": 1e-13, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-7, "atol": 1e-6}
    torch.testing.assert_close(v_new, want.to(dtype), **tol)
    assert torch.equal(policy_out, policy) and q.shape == (0, A)


def test_backup_ties_pick_the_lowest_action_and_gamma_zero_is_the_reward():
    # Identical actions: every Q row is a tie.
    S, A = 5, 3
    indptr = torch.arange(0, A * S + 1, dtype=torch.int64)
    indices = torch.arange(S).repeat_interleave(A)  # row s·A + a → s
    values = torch.ones(A * S, dtype=torch.float64)
    reward = torch.tensor([[1.0, 1.0, 1.0]] * S, dtype=torch.float64)
    v = torch.arange(S, dtype=torch.float64)
    v_new, policy, _, _ = ops.bellman_backup(indptr, indices, values, reward, v, 0.5)
    assert torch.equal(policy, torch.zeros(S, dtype=torch.int64))
    torch.testing.assert_close(v_new, 1 + 0.5 * v)
    reward = torch.tensor([[0.0, 2.0, -1.0]] * S, dtype=torch.float64)
    v_new, policy, _, _ = ops.bellman_backup(indptr, indices, values, reward, v, 0.0)
    assert torch.equal(v_new, torch.full((S,), 2.0, dtype=torch.float64))
    assert torch.equal(policy, torch.ones(S, dtype=torch.int64))


def test_backup_handles_zero_states_and_empty_rows():
    reward = torch.zeros(0, 2, dtype=torch.float64)
    v_new, policy, q, delta = ops.bellman_backup(
        torch.zeros(1, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, dtype=torch.float64),
        reward,
        torch.zeros(0, dtype=torch.float64),
        0.9,
        with_q=True,
    )
    assert v_new.shape == (0,) and policy.shape == (0,) and q.shape == (0, 2)
    assert delta.tolist() == [0.0, 0.0]
    # No stored successor at all: every episode ends, V' = max_a r.
    reward = torch.tensor([[1.0, -2.0], [-3.0, 0.5]], dtype=torch.float64)
    v_new, policy, _, _ = ops.bellman_backup(
        torch.zeros(5, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, dtype=torch.float64),
        reward,
        torch.tensor([7.0, 9.0], dtype=torch.float64),
        0.9,
    )
    assert v_new.tolist() == [1.0, 0.5] and policy.tolist() == [0, 1]


def test_backup_does_not_depend_on_thread_count(generator):
    csr, reward, v = inputs(5000, 4, generator)
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(
                ops.bellman_backup(
                    csr.indptr, csr.indices, csr.values, reward, v, 0.95, with_q=True
                )
            )
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_backup_opcheck(generator):
    csr, reward, v = inputs(37, 3, generator)
    op = torch.ops.fisherprec.bellman_backup.default
    args = (csr.indptr, csr.indices, csr.values, reward, v, 0.9)
    torch.library.opcheck(op, (*args, None, True))
    torch.library.opcheck(op, (*args, torch.randint(0, 3, (37,), generator=generator), False))


def test_backup_under_torch_compile(generator):
    csr, reward, v = inputs(50, 2, generator)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def sweep(v):
        v_new, _, _, _ = torch.ops.fisherprec.bellman_backup(
            csr.indptr, csr.indices, csr.values, reward, v * 1.0, 0.9, None, False
        )
        return v_new + 0

    want, _, _ = reference.bellman_backup(csr.to_dense(), reward, v, 0.9)
    torch.testing.assert_close(sweep(v), want, rtol=1e-13, atol=1e-12)


def test_backup_on_meta_tensors_runs_the_fake():
    S, A, nnz = 6, 2, 10
    meta = {"device": "meta"}
    out = ops.bellman_backup(
        torch.empty(A * S + 1, dtype=torch.int64, **meta),
        torch.empty(nnz, dtype=torch.int32, **meta),
        torch.empty(nnz, dtype=torch.float32, **meta),
        torch.empty(S, A, dtype=torch.float32, **meta),
        torch.empty(S, dtype=torch.float32, **meta),
        0.5,
        with_q=True,
    )
    assert [tuple(t.shape) for t in out] == [(S,), (S,), (S, A), (2,)]
    assert all(t.device.type == "meta" for t in out)


def _good():
    S, A = 3, 2
    return {
        "indptr": torch.tensor([0, 1, 2, 3, 4, 5, 6]),
        "indices": torch.tensor([0, 1, 2, 0, 1, 2]),
        "values": torch.ones(6, dtype=torch.float64),
        "reward": torch.zeros(S, A, dtype=torch.float64),
        "v": torch.zeros(S, dtype=torch.float64),
        "gamma": 0.9,
    }


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"reward": torch.zeros(3, 2, dtype=torch.int64)},
            TypeError,
            "reward has dtype torch.int64",
        ),
        ({"reward": torch.zeros(3, 2, dtype=torch.float16)}, TypeError, "reward has dtype"),
        (
            {"reward": torch.zeros(3, dtype=torch.float64)},
            ValueError,
            "reward must have 2 dimensions",
        ),
        ({"reward": torch.zeros(3, 0, dtype=torch.float64)}, ValueError, "at least one action"),
        (
            {"v": torch.zeros(4, dtype=torch.float64)},
            ValueError,
            r"v has shape \(4,\), expected \(3,\)",
        ),
        ({"v": torch.zeros(3, dtype=torch.float32)}, TypeError, "v has dtype torch.float32"),
        ({"v": torch.zeros(6, dtype=torch.float64)[::2]}, ValueError, "v must be contiguous"),
        ({"values": torch.ones(6)}, TypeError, "values has dtype torch.float32"),
        ({"indices": torch.zeros(6)}, TypeError, "indices has dtype torch.float32"),
        ({"indices": torch.zeros(5, dtype=torch.int64)}, ValueError, "indices has shape"),
        ({"indptr": torch.tensor([0, 6])}, ValueError, r"indptr has shape \(2,\), expected \(7,\)"),
        ({"indptr": torch.tensor([0, 1, 2, 3, 4, 5, 6], dtype=torch.int32)}, TypeError, "indptr"),
        ({"indptr": torch.tensor([1, 1, 2, 3, 4, 5, 6])}, ValueError, "must start at 0"),
        ({"indptr": torch.tensor([0, 1, 2, 3, 4, 5, 5])}, ValueError, "must end at"),
        ({"indptr": torch.tensor([0, 2, 1, 3, 4, 5, 6])}, ValueError, "non-decreasing"),
        (
            {"indices": torch.tensor([0, 1, 3, 0, 1, 2])},
            ValueError,
            r"indices must lie in \[0, 3\)",
        ),
        ({"indices": torch.tensor([0, -1, 2, 0, 1, 2])}, ValueError, "indices must lie"),
        ({"gamma": 1.5}, ValueError, "Invalid gamma value: 1.5"),
        ({"gamma": -0.1}, ValueError, "Invalid gamma value"),
        ({"gamma": float("nan")}, ValueError, "Invalid gamma value"),
        ({"reward": torch.zeros(3, 2, dtype=torch.float64).to_sparse()}, TypeError, "dense"),
    ],
)
def test_backup_rejects_bad_input(change, error, message):
    args = _good() | change
    with pytest.raises(error, match=message):
        ops.bellman_backup(**args)


def test_backup_rejects_bad_policies():
    args = _good()
    with pytest.raises(ValueError, match=r"policy must hold actions in \[0, 2\)"):
        ops.bellman_backup(**args, policy=torch.tensor([0, 2, 1]))
    with pytest.raises(TypeError, match=r"policy has dtype torch\.int32"):
        ops.bellman_backup(**args, policy=torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="with_q=True is not supported"):
        ops.bellman_backup(**args, policy=torch.zeros(3, dtype=torch.int64), with_q=True)


def test_benchmark_cases_compute_the_same_sweep():
    from fisherprec import benchmarks

    every = benchmarks.collect(["bellman"], ["1e4"], torch.device("cpu"))
    cases = [case for case in every if case.op == "sweep"]
    assert {case.impl for case in cases} == {"fisherprec", "numpy-reduceat", "torch-sparse-csr"}
    results = {case.impl: [torch.as_tensor(x) for x in case.run()] for case in cases}
    # The gather bound reads what the sweep reads: V at every stored successor.
    (gather,) = [case for case in every if case.op == "gather"]
    assert gather.run().shape == (10_000 * 4 * 8,)
    want_v, want_policy = results["fisherprec"]
    assert want_v.shape == (10_000,)
    for v, policy in results.values():
        torch.testing.assert_close(v, want_v, rtol=1e-12, atol=1e-12)
        assert torch.equal(policy, want_policy)
    with pytest.raises(ValueError, match="unknown bellman size '1e9'"):
        benchmarks.collect(["bellman"], ["1e9"], torch.device("cpu"))
