"""The foundation op: a fused, float64-accumulated sum of squares over many
tensors (csrc/include/fisherprec/reduce.h). It is also the smallest complete
example of a family: schema and body, fake, validated public wrapper."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fisherprec.ops._native import FLOATING_DTYPES, data_ptrs, dtype_code, native_op, numels, run
from fisherprec.ops.checks import check_tensor_list

__all__ = ["sum_of_squares"]


def _sum_of_squares_fake(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].new_empty((), dtype=torch.float64)


@native_op("sum_of_squares", fake=_sum_of_squares_fake)
def _sum_of_squares(tensors: list[torch.Tensor]) -> torch.Tensor:
    device = tensors[0].device
    args = (data_ptrs(tensors), numels(tensors), dtype_code(tensors[0].dtype))
    if device.type == "cuda":  # the CUDA kernel writes the sum to device memory
        out = torch.empty((), dtype=torch.float64, device=device)
        run("sum_of_squares", device, *args, cuda_extra=lambda: (out.data_ptr(),))
        return out
    return torch.tensor(run("sum_of_squares", device, *args), dtype=torch.float64)


def sum_of_squares(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over all `tensors` of Σ x², in one native pass, accumulated in float64.

    Args:
        tensors: a non-empty list of contiguous tensors of one floating dtype
            (float32, float64, bfloat16, float16) on one device.

    Returns:
        A 0-dim float64 tensor on that device. On the CPU the result does not
        depend on the thread count.

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> ops.sum_of_squares([torch.ones(3), torch.full((2,), 2.0)])
        tensor(11., dtype=torch.float64)
    """
    return torch.ops.fisherprec.sum_of_squares(
        check_tensor_list("tensors", tensors, dtypes=FLOATING_DTYPES)
    )
