"""The custom-op pattern, proven on `sum_of_squares`: reference, compile, opcheck, bad input."""

import pytest
import torch

from fisherprec import ops
from tests import reference

SIZES = [0, 1, 7, 31, 1000, 65535, 65537, 200_003]


@pytest.mark.parametrize("dtype", ops.FLOATING_DTYPES)
def test_sum_of_squares_matches_float64_reference(dtype, generator):
    tensors = [torch.randn(n, generator=generator).to(dtype) for n in SIZES]
    tensors.append(torch.randn(3, 5, 7, generator=generator).to(dtype))
    got = ops.sum_of_squares(tensors)
    assert got.dtype == torch.float64 and got.shape == ()
    want = reference.sum_of_squares(tensors)  # of the same (rounded) inputs
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_sum_of_squares_does_not_depend_on_thread_count(generator):
    tensors = [torch.randn(n, generator=generator) for n in (300_001, 5, 70_000)]
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(ops.sum_of_squares(tensors).item())
    finally:
        torch.set_num_threads(threads)
    assert results[0] == results[1] == results[2]


def test_sum_of_squares_handles_specials():
    x = torch.tensor([1.0, float("inf")])
    assert ops.sum_of_squares([x]).item() == float("inf")
    assert torch.isnan(ops.sum_of_squares([torch.tensor([float("nan"), 1.0])]))
    # Values whose squares overflow float32 are exact in float64 accumulation.
    big = torch.full((4,), 3e38)
    assert ops.sum_of_squares([big]).item() == pytest.approx(4 * 3e38**2, rel=1e-6)


def test_sum_of_squares_under_torch_compile(generator):
    tensors = [torch.randn(n, generator=generator) for n in (17, 4096)]

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(a, b):
        return ops.sum_of_squares([a * 2, b]) + 1

    got = f(*tensors).item()
    assert got == pytest.approx(
        reference.sum_of_squares([tensors[0] * 2, tensors[1]]) + 1, rel=1e-12
    )


def test_sum_of_squares_opcheck(generator):
    tensors = [torch.randn(n, generator=generator) for n in (3, 129)]
    torch.library.opcheck(torch.ops.fisherprec.sum_of_squares.default, (tensors,))


@pytest.mark.parametrize(
    ("tensors", "error", "message"),
    [
        ([], ValueError, "tensors must not be empty"),
        (torch.ones(3), TypeError, "must be a list of tensors"),
        ([torch.ones(3), "x"], TypeError, r"tensors\[1\] must be a torch.Tensor"),
        ([torch.ones(3, dtype=torch.int32)], TypeError, r"tensors\[0\] has dtype torch.int32"),
        ([torch.ones(3), torch.ones(3, dtype=torch.float64)], TypeError, "one dtype per call"),
        ([torch.ones(4, 4).T], ValueError, r"tensors\[0\] must be contiguous"),
        ([torch.ones(3), torch.ones(8)[::2]], ValueError, r"tensors\[1\] must be contiguous"),
        ([torch.ones(3).to_sparse()], TypeError, "dense"),
        ([torch.ones(3, device="meta")], None, None),
    ],
)
def test_sum_of_squares_rejects_bad_input(tensors, error, message):
    if error is None:  # meta tensors trace through the fake
        assert ops.sum_of_squares(tensors).device.type == "meta"
        return
    with pytest.raises(error, match=message):
        ops.sum_of_squares(tensors)


def test_cuda_tensor_on_cpu_only_build_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ops.checks, "CUDA_BUILT", False)
    with pytest.raises(RuntimeError, match="built without CUDA"):
        ops.check_device("tensors[0]", torch.device("cuda", 0))


def test_unsupported_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cpu and cuda only"):
        ops.check_device("x", torch.device("mps"))


def test_check_no_overlap():
    base = torch.zeros(10)
    ops.check_no_overlap({"a": [base[:5]], "b": [base[5:]]})
    with pytest.raises(ValueError, match=r"a\[0\] and b\[0\] share memory"):
        ops.check_no_overlap({"a": [base[:6]], "b": [base[5:]]})
    with pytest.raises(ValueError, match="share memory"):
        ops.check_no_overlap({"a": [base], "b": [torch.zeros(2), base[8:]]})


def test_every_op_in_the_namespace_is_registered_with_its_family():
    """native_op registers an op's CUDA kernel together with its CPU one, so an op
    that bypassed it could lack a CUDA kernel with no GPU around to notice."""
    namespace = torch.ops.fisherprec
    defined = {
        name
        for name in dir(namespace)
        if isinstance(getattr(namespace, name, None), torch._ops.OpOverloadPacket)
    }
    assert defined == set(ops.REGISTRY)
    families = {module.__name__.rsplit(".", 1)[-1] for module in ops.FAMILIES}
    for name, entry in ops.REGISTRY.items():
        assert entry.qualname == f"fisherprec::{name}"
        assert entry.family in families
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(
            getattr(namespace, name).default.name(), "CUDA"
        )
        assert has_cuda == ops.CUDA_BUILT, name


def test_every_op_family_has_its_native_bindings():
    from fisherprec import _C

    assert sorted(_C.families) == sorted(m.__name__.rsplit(".", 1)[-1] for m in ops.FAMILIES)
