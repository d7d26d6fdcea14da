"""Custom ops over the native kernels: the one place that declares, validates
and fakes them.

One module per kernel family (``reduce``, ``bellman``, ``design``, ``diag``,
``block``, ``lowrank``, ``eigh``), each written the same way (``reduce`` is the smallest):

1. a device-agnostic op body, decorated with :func:`~fisherprec.ops._native.native_op`,
   that turns tensors into the raw pointers, sizes and dtype codes of
   ``fisherprec._C`` and calls :func:`~fisherprec.ops._native.run`; the decorator
   makes it the op's CPU kernel, its CUDA kernel in a CUDA build, adds the fake that
   torch.compile traces, and records the op in :data:`REGISTRY`;
2. a public function that validates every argument with :mod:`fisherprec.ops.checks`
   (the native layer trusts what it is given) and raises ``TypeError`` /
   ``ValueError`` / ``RuntimeError`` naming the bad argument, then calls
   ``torch.ops.fisherprec.<name>``.

A new family is a new module here plus its binding file in csrc/bindings/, and
one line in this file: it imports the families by name, so that importing
``fisherprec.ops`` defines every op and type checkers see every public name
(tests/test_discovery.py fails while a family or a name is missing here).
"""

from __future__ import annotations

from fisherprec.ops import bellman, block, design, diag, eigh, lowrank, reduce
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
from fisherprec.ops.bellman import (
    BELLMAN_DTYPES,
    _bellman_backup_checked,
    bellman_backup,
    check_csr_structure,
)
from fisherprec.ops.block import (
    BLOCK_STATE_DTYPES,
    MAX_BLOCK_SIZE,
    ROOT_NO_CONVERGENCE,
    ROOT_NONE,
    ROOT_NONFINITE_INPUT,
    ROOT_NONFINITE_OUTPUT,
    ROOT_OK,
    block_fisher_step_,
    block_inv_root_,
    block_outer_update_,
    block_shape,
    check_block_size,
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
from fisherprec.ops.design import design_score_step
from fisherprec.ops.diag import (
    DIAG_PARAM_DTYPES,
    DIAG_STATE_DTYPES,
    check_diag_step_args,
    diag_fisher_update_,
    diag_step_,
    diag_step_unchecked_,
)
from fisherprec.ops.eigh import EIGH_DTYPES, EIGH_MAX_DIM, symmetric_eigh
from fisherprec.ops.lowrank import (
    LOWRANK_MAX_RANK,
    LOWRANK_WINDOW_DTYPES,
    lowrank_combine,
    lowrank_dots,
    lowrank_insert,
    lowrank_stats,
)
from fisherprec.ops.reduce import sum_of_squares

FAMILIES = (reduce, bellman, design, diag, block, lowrank, eigh)

__all__ = [
    "FLOATING_DTYPES",
    "REGISTRY",
    *(name for family in FAMILIES for name in family.__all__),
]
