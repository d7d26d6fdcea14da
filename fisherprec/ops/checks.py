"""The checks every op runs before anything reaches ``fisherprec._C``: the
native layer trusts its arguments, so a plain strided tensor with a real data
pointer, on a device with kernels, of a supported dtype and shape, written
buffers that alias nothing, and finite scalars in range are established here,
each failure a TypeError / ValueError / RuntimeError naming the argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from fisherprec.ops._native import CUDA_BUILT


def _names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_device(name: str, device: torch.device) -> None:
    """Raise unless fisherprec has kernels for `device`."""
    if device.type == "cpu" or device.type == "meta":
        return
    if device.type == "cuda":
        if not CUDA_BUILT:
            raise RuntimeError(
                f"{name} is on {device}, but fisherprec was built without CUDA kernels; "
                "rebuild with a CUDA compiler available (FISHERPREC_CUDA=ON) or move it to the CPU"
            )
        return
    raise RuntimeError(f"{name} is on {device}: fisherprec has kernels for cpu and cuda only")


def check_tensor(
    name: str,
    tensor: object,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    device: torch.device | None = None,
    shape: Sequence[int] | None = None,
    ndim: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Validate one tensor handed to a kernel; return it (typed)."""
    tensor = check_plain_tensor(name, tensor)
    if dtypes is not None and tensor.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {tensor.dtype}; supported: {_names(dtypes)}")
    if device is not None and tensor.device != device:
        raise RuntimeError(f"{name} is on {tensor.device}, expected {device}")
    check_device(name, tensor.device)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if tensor.dim() not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(tensor.shape)}"
            )
    if shape is not None and tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    if not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
    return tensor


def check_tensor_list(
    name: str,
    tensors: object,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    like: Sequence[torch.Tensor] | None = None,
    like_name: str = "",
    same_dtype: bool = True,
) -> list[torch.Tensor]:
    """Validate a multi-tensor argument: a non-empty list of contiguous tensors
    on one device (and of one dtype unless `same_dtype=False`). With `like`,
    tensor i must have the shape and device of like[i]."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"{name} must be a list of tensors, got {type(tensors).__name__}")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name} must not be empty")
    if like is not None and len(like) != len(tensors):
        raise ValueError(f"{name} has {len(tensors)} tensors but {like_name} has {len(like)}")
    first = check_tensor(f"{name}[0]", tensors[0], dtypes=dtypes)
    for i, t in enumerate(tensors):
        check_tensor(f"{name}[{i}]", t, dtypes=dtypes, device=first.device)
        if same_dtype and t.dtype != first.dtype:
            raise TypeError(
                f"{name}[{i}] has dtype {t.dtype} but {name}[0] has {first.dtype}; one dtype per call"
            )
        if like is not None and t.shape != like[i].shape:
            raise ValueError(
                f"{name}[{i}] has shape {tuple(t.shape)} but {like_name}[{i}] has {tuple(like[i].shape)}"
            )
        if like is not None and t.device != like[i].device:
            raise RuntimeError(
                f"{name}[{i}] is on {t.device} but {like_name}[{i}] is on {like[i].device}"
            )
    return tensors


def check_plain_tensor(name: str, tensor: object) -> torch.Tensor:
    """Raise unless `tensor` is a plain strided tensor (or nn.Parameter) whose
    memory the kernels can address: no tensor subclass such as DTensor (its
    data_ptr() is 0: the data lives in its local shard), no sparse layout,
    no storage-less tensor outside the meta device."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if is_traceable_wrapper_subclass(tensor):
        raise TypeError(
            f"{name} is a {type(tensor).__name__}, a tensor subclass fisherprec kernels cannot "
            "address; pass plain tensors (for a DTensor, its .to_local() shard)"
        )
    if tensor.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {tensor.layout}")
    if (
        not torch.compiler.is_compiling()  # traced tensors have no data pointer to read
        and tensor.device.type != "meta"
        and tensor.numel()
        and not is_fake(tensor)
        and tensor.data_ptr() == 0
    ):
        raise TypeError(f"{name} has no addressable memory (data_ptr() is 0)")
    return tensor


def check_no_overlap(
    named_lists: dict[str, Sequence[torch.Tensor]], *, read_only: Sequence[str] = ()
) -> None:
    """Raise if a tensor a kernel writes shares memory with any other argument.

    Arguments named in `read_only` may share memory with each other (two
    reads of one buffer are harmless) but not with a written one. Meta and
    fake tensors have no memory and are skipped, and so is the whole check
    while torch.compile traces (it ran, on real tensors, in eager mode)."""
    if torch.compiler.is_compiling():
        return
    spans: list[tuple[int, int, str, bool]] = []
    for name, tensors in named_lists.items():
        for i, t in enumerate(tensors):
            if t.numel() and t.device.type != "meta" and not is_fake(t):
                start = t.data_ptr()
                stop = start + t.numel() * t.element_size()
                spans.append((start, stop, f"{name}[{i}]", name not in read_only))
    spans.sort()
    # Sorted by start, a span overlaps an earlier one iff it starts before the
    # furthest end seen so far (of any span, or of a written one).
    end_any, owner_any, end_written, owner_written = -1, "", -1, ""
    for start, stop, name, written in spans:
        if written and start < end_any:
            raise ValueError(f"{owner_any} and {name} share memory; pass distinct tensors")
        if not written and start < end_written:
            raise ValueError(f"{owner_written} and {name} share memory; pass distinct tensors")
        if stop > end_any:
            end_any, owner_any = stop, name
        if written and stop > end_written:
            end_written, owner_written = stop, name


def is_fake(tensor: torch.Tensor) -> bool:
    return torch._subclasses.fake_tensor.is_fake(tensor)


# ------------------------------------------------------------------ scalars
def check_real(
    name: str, value: object, *, positive: bool = False, nonnegative: bool = False
) -> float:
    """A finite real number (not a bool), optionally > 0 or >= 0, as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Invalid {name} value: {value} (must be finite)")
    if positive and value <= 0.0:
        raise ValueError(f"Invalid {name} value: {value} (must be > 0)")
    if nonnegative and value < 0.0:
        raise ValueError(f"Invalid {name} value: {value} (must be >= 0)")
    return value


def check_betas(beta1: object, beta2: object) -> tuple[float, float]:
    """The two EMA weights every moment kernel takes, each in [0, 1)."""
    out = []
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        value = check_real(name, value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Invalid {name} value: {value} (must be in [0, 1))")
        out.append(value)
    return out[0], out[1]


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """An int (not a bool) in [low, high] (no upper bound when high is None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"Invalid {name} value: {value} (must be {bounds})")
    return value
