"""A batched symmetric eigensolver for many small matrices of one size
(csrc/include/fisherprec/eigh.h): the block root's Householder + implicit QL
solver in float64, one matrix per thread, with a status per matrix instead of
one exception for the batch. Kron's factor bases use it below the size from
which LAPACK (``torch.linalg.eigh``) is faster (``fisherprec.fisher.kron``)."""

from __future__ import annotations

import torch

from fisherprec.ops._native import dtype_code, native_op, run
from fisherprec.ops.checks import check_tensor

__all__ = ["EIGH_DTYPES", "EIGH_MAX_DIM", "symmetric_eigh"]

EIGH_DTYPES = (torch.float32, torch.float64)
# The largest n accepted: an O(n³) solve per thread. LAPACK is as fast from
# about n = 256 (float64) and faster beyond (docs/benchmarks.md); callers
# dispatch there well below this bound (fisher.kron.NATIVE_EIGH_MAX_DIM).
EIGH_MAX_DIM = 1024


@native_op("symmetric_eigh", mutates_args=("eigenvalues", "eigenvectors", "status"))
def _symmetric_eigh(
    matrices: torch.Tensor,
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    status: torch.Tensor,
) -> None:
    count, n = matrices.shape[0], matrices.shape[-1]
    device = matrices.device
    keep: list[torch.Tensor] = []

    def workspace() -> tuple[int]:  # the CUDA kernel's off-diagonal scratch, n doubles per matrix
        keep.append(torch.empty(max(1, count * n), dtype=torch.float64, device=device))
        return (keep[0].data_ptr(),)

    run(
        "symmetric_eigh",
        device,
        matrices.data_ptr(),
        eigenvalues.data_ptr(),
        eigenvectors.data_ptr(),
        status.data_ptr(),
        count,
        n,
        dtype_code(matrices.dtype),
        cuda_extra=workspace,
    )


def symmetric_eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigendecompositions of a (K, n, n) batch of symmetric matrices.

    Each matrix M is read as (M + Mᵀ)/2 and decomposed in float64, whatever
    its dtype (float32 or float64), with one outcome per matrix.

    Returns:
        ``(eigenvalues, eigenvectors, status)``: eigenvalues (K, n) float64,
        ascending; eigenvectors (K, n, n) float64 with the vector of
        ``eigenvalues[k, c]`` in column c, as ``torch.linalg.eigh`` returns them
        (a transposed view of row-major storage); status (K,) int32, per matrix
        ``ROOT_OK``, ``ROOT_NONFINITE_INPUT`` (NaN/Inf in M), ``ROOT_NO_CONVERGENCE``
        or ``ROOT_NONFINITE_OUTPUT``. A failed matrix's eigenpairs are NaN.
        On the CPU the result does not depend on the thread count.

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> w, q, status = ops.symmetric_eigh(torch.tensor([[[2.0, 1.0], [1.0, 2.0]]]))
        >>> w.round(decimals=12)
        tensor([[1., 3.]], dtype=torch.float64)
        >>> bool(torch.allclose(q @ torch.diag_embed(w) @ q.mT, torch.tensor([[[2.0, 1], [1, 2]]], dtype=torch.float64)))
        True
        >>> status.tolist() == [ops.ROOT_OK]
        True
    """
    matrices = check_tensor("matrices", matrices, dtypes=EIGH_DTYPES, ndim=3)
    count, rows, n = matrices.shape
    if rows != n:
        raise ValueError(f"matrices must be square, got shape {tuple(matrices.shape)}")
    if n < 1 or n > EIGH_MAX_DIM:
        raise ValueError(
            f"matrices must be n×n with 1 ≤ n ≤ {EIGH_MAX_DIM}, got n = {n} "
            "(use torch.linalg.eigh beyond that)"
        )
    f64, device = torch.float64, matrices.device
    eigenvalues = torch.empty((count, n), dtype=f64, device=device)
    vectors_as_rows = torch.empty((count, n, n), dtype=f64, device=device)
    status = torch.empty((count,), dtype=torch.int32, device=matrices.device)
    if count:
        torch.ops.fisherprec.symmetric_eigh(matrices, eigenvalues, vectors_as_rows, status)
    return eigenvalues, vectors_as_rows.mT, status
