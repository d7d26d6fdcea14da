"""The bridge to ``fisherprec._C``: dtype codes, raw pointers, and the one helper
that turns a family's device-agnostic marshalling function into a custom op.

Every native kernel is bound twice, ``_C.<kernel>_cpu(..., threads)`` and
``_C.<kernel>_cuda(..., stream)`` with the same leading arguments (see
csrc/bindings/). A family writes one op body that computes those arguments and
calls :func:`run`; :func:`native_op` registers that body as the op's CPU kernel
and, in a CUDA build, as its CUDA kernel too, adds the fake and records the op in
:data:`REGISTRY`. So a CUDA build can never lack a kernel that the CPU build has
(tests/cuda_import_check.py asserts it from :data:`REGISTRY`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from fisherprec import _C

# Must match csrc/include/fisherprec/common.h:DType.
_DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 0,
    torch.float64: 1,
    torch.bfloat16: 2,
    torch.float16: 3,
}
FLOATING_DTYPES: tuple[torch.dtype, ...] = tuple(_DTYPE_CODES)
CUDA_BUILT: bool = bool(_C.build_info()["cuda_built"])
NAMESPACE = "fisherprec"


def dtype_code(dtype: torch.dtype) -> int:
    return _DTYPE_CODES[dtype]


def num_threads() -> int:
    """Threads for CPU kernels: torch's intra-op count, so we never oversubscribe."""
    return max(1, torch.get_num_threads())


def data_ptrs(tensors: Sequence[torch.Tensor]) -> list[int]:
    return [t.data_ptr() for t in tensors]


def numels(tensors: Sequence[torch.Tensor]) -> list[int]:
    return [t.numel() for t in tensors]


def cuda_stream(device: torch.device) -> int:
    """Handle of torch's current stream on `device`: our kernels queue behind torch's."""
    return int(torch.cuda.current_stream(device).cuda_stream)


def run(
    kernel: str,
    device: torch.device,
    *args: Any,
    cuda_extra: Callable[[], tuple[Any, ...]] | None = None,
) -> Any:
    """Call ``_C.<kernel>_cpu(*args, threads)`` or, on a CUDA device,
    ``_C.<kernel>_cuda(*args, *cuda_extra(), stream)`` under that device's guard.
    `cuda_extra` builds what only the CUDA kernel takes (a workspace): it is not
    called on the CPU."""
    if device.type == "cuda":
        extra = cuda_extra() if cuda_extra is not None else ()
        with torch.cuda.device(device):
            return getattr(_C, f"{kernel}_cuda")(*args, *extra, cuda_stream(device))
    return getattr(_C, f"{kernel}_cpu")(*args, num_threads())


@dataclass(frozen=True)
class OpEntry:
    """One registered op: its qualified name, the family (module) that defines
    it, what it writes, and the custom op itself."""

    qualname: str
    family: str
    mutates_args: tuple[str, ...]
    op: Any


_REGISTRY: dict[str, OpEntry] = {}
REGISTRY = MappingProxyType(_REGISTRY)  # name → OpEntry, in definition order


def _no_output(*args: Any, **kwargs: Any) -> None:
    return None


def native_op(
    name: str,
    *,
    mutates_args: Sequence[str] = (),
    fake: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: define ``fisherprec::<name>`` from a device-agnostic body.

    The body's annotations give the schema; it must call :func:`run` (or
    otherwise work on both devices). `fake` computes the outputs' metadata for
    torch.compile; the default suits ops that only write their arguments."""

    def define(body: Callable[..., Any]) -> Any:
        if name in _REGISTRY:
            raise RuntimeError(f"op {NAMESPACE}::{name} is defined twice")
        # Resolve string annotations (PEP 563) here, where the body's module
        # globals are at hand, so that the schema never depends on torch's eval.
        body.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
        op = torch.library.custom_op(
            f"{NAMESPACE}::{name}", mutates_args=tuple(mutates_args), device_types="cpu"
        )(body)
        if CUDA_BUILT:
            op.register_kernel("cuda")(body)
        op.register_fake(fake or _no_output)
        family = body.__module__.rsplit(".", 1)[-1]
        _REGISTRY[name] = OpEntry(f"{NAMESPACE}::{name}", family, tuple(mutates_args), op)
        return op

    return define
