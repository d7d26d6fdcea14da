"""Custom ops over the native kernels: the one place that declares, validates
and fakes them.

One module per kernel family (``reduce``, ``bellman``, ``design``, ``diag``,
``block``, ``lowrank``), each written the same way (``reduce`` is the smallest):

1. a device-agnostic op body, decorated with :func:`~fisherprec.ops._native.native_op`,
   that turns tensors into the raw pointers, sizes and dtype codes of
   ``fisherprec._C`` and calls :func:`~fisherprec.ops._native.run`; the decorator
   makes it the op's CPU kernel, its CUDA kernel in a CUDA build, adds the fake that
   torch.compile traces, and records the op in :data:`REGISTRY`;
2. a public function that validates every argument with :mod:`fisherprec.ops.checks`
   (the native layer trusts what it is given) and raises ``TypeError`` /
   ``ValueError`` / ``RuntimeError`` naming the bad argument, then calls
   ``torch.ops.fisherprec.<name>``.

A new family is a new module here plus its binding file in csrc/bindings/;
nothing in this file names it: importing ``fisherprec.ops`` imports every
module of the package (which defines its ops) and re-exports each family's
``__all__`` here (``ops.block_inv_root_``).
"""

from __future__ import annotations

import sys

from fisherprec._discovery import import_submodules
from fisherprec.ops._native import (
    CUDA_BUILT,
    FLOATING_DTYPES,
    REGISTRY,
    OpEntry,
    cuda_stream,
    data_ptrs,
    dtype_code,
    num_threads,
    numels,
)
from fisherprec.ops.checks import (
    check_betas,
    check_device,
    check_int,
    check_no_overlap,
    check_plain_tensor,
    check_real,
    check_tensor,
    check_tensor_list,
)

_modules = [sys.modules[f"{__name__}.{name}"] for name in import_submodules(__name__, __path__)]
# A family is a module that defines ops (checks.py defines none).
FAMILIES = tuple(
    m for m in _modules if any(e.family == m.__name__.rsplit(".", 1)[-1] for e in REGISTRY.values())
)
for _family in FAMILIES:
    globals().update({name: getattr(_family, name) for name in _family.__all__})

__all__ = [
    "FLOATING_DTYPES",
    "REGISTRY",
    *(name for family in FAMILIES for name in family.__all__),
]
