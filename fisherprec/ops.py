"""Custom ops over the native kernels: the one place that declares, validates
and fakes them.

Every kernel follows the same pattern, shown here by ``sum_of_squares``:

1. a public function (``sum_of_squares``) that validates every argument with
   the ``check_*`` helpers below and raises ``TypeError`` / ``ValueError`` /
   ``RuntimeError`` naming the bad argument;
2. a ``torch.library.custom_op`` in the ``fisherprec`` namespace whose CPU
   implementation hands raw pointers to ``fisherprec._C`` (the native layer
   trusts what it is given), plus a CUDA kernel registration when the CUDA
   kernels were built;
3. a fake (meta) implementation so that ``torch.compile`` can trace it.

Kernel families append a section at the end of this file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fisherprec import _C

__all__ = [
    "FLOATING_DTYPES",
    "LOWRANK_WINDOW_DTYPES",
    "lowrank_combine",
    "lowrank_dots",
    "lowrank_insert",
    "lowrank_stats",
    "sum_of_squares",
]

# Must match csrc/include/fisherprec/common.h:DType.
_DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 0,
    torch.float64: 1,
    torch.bfloat16: 2,
    torch.float16: 3,
}
FLOATING_DTYPES: tuple[torch.dtype, ...] = tuple(_DTYPE_CODES)
CUDA_BUILT: bool = bool(_C.build_info()["cuda_built"])


# ----------------------------------------------------------------- helpers
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
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_sparse or tensor.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {tensor.layout}")
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


def check_no_overlap(named_lists: dict[str, Sequence[torch.Tensor]]) -> None:
    """Kernels that write must not see two arguments sharing memory."""
    spans: list[tuple[int, int, str]] = []
    for name, tensors in named_lists.items():
        for i, t in enumerate(tensors):
            if t.numel():
                start = t.data_ptr()
                spans.append((start, start + t.numel() * t.element_size(), f"{name}[{i}]"))
    spans.sort()
    end, owner = -1, ""
    for start, stop, name in spans:
        if start < end:
            raise ValueError(f"{owner} and {name} share memory; pass distinct tensors")
        if stop > end:
            end, owner = stop, name


# ------------------------------------------------- reduce (foundation)
@torch.library.custom_op("fisherprec::sum_of_squares", mutates_args=(), device_types="cpu")
def _sum_of_squares(tensors: list[torch.Tensor]) -> torch.Tensor:
    value = _C.sum_of_squares_cpu(
        data_ptrs(tensors), numels(tensors), dtype_code(tensors[0].dtype), num_threads()
    )
    return torch.tensor(value, dtype=torch.float64)


if CUDA_BUILT:

    @_sum_of_squares.register_kernel("cuda")
    def _sum_of_squares_cuda(tensors: list[torch.Tensor]) -> torch.Tensor:
        device = tensors[0].device
        out = torch.empty((), dtype=torch.float64, device=device)
        _C.sum_of_squares_cuda(
            data_ptrs(tensors),
            numels(tensors),
            dtype_code(tensors[0].dtype),
            out.data_ptr(),
            cuda_stream(device),
        )
        return out


@_sum_of_squares.register_fake
def _(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].new_empty((), dtype=torch.float64)


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


# ----------------------------------------------------------- lowrank
# The window G of the low-rank Fisher is one (r, P) buffer per param group:
# row j is a past gradient, and the group's tensors are consecutive segments
# of the flat vector of length P (math: csrc/include/fisherprec/lowrank.h).
LOWRANK_WINDOW_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16)
LOWRANK_MAX_RANK = 256  # must match csrc/include/fisherprec/lowrank.h:kLowrankMaxRank


def _check_window(window: object, columns: object, tensors: object, name: str = "tensors"):
    window = check_tensor("window", window, dtypes=LOWRANK_WINDOW_DTYPES, ndim=2)
    if window.shape[0] > LOWRANK_MAX_RANK:
        raise ValueError(
            f"window has {window.shape[0]} rows; at most {LOWRANK_MAX_RANK} are supported"
        )
    if isinstance(columns, bool) or not isinstance(columns, int):
        raise TypeError(f"columns must be an int, got {type(columns).__name__}")
    if not 0 <= columns <= window.shape[0]:
        raise ValueError(f"columns={columns} is outside [0, {window.shape[0]}] (the window's rows)")
    tensors = check_tensor_list(name, tensors, dtypes=FLOATING_DTYPES)
    if tensors[0].device != window.device:
        raise RuntimeError(f"{name}[0] is on {tensors[0].device} but window is on {window.device}")
    total = sum(t.numel() for t in tensors)
    if total != window.shape[1]:
        raise ValueError(
            f"{name} hold {total} elements in all but the window has {window.shape[1]} columns per row"
        )
    return window, tensors


def _check_slot(slot: object, columns: int) -> int:
    if isinstance(slot, bool) or not isinstance(slot, int):
        raise TypeError(f"slot must be an int, got {type(slot).__name__}")
    if not 0 <= slot < columns:
        raise ValueError(f"slot={slot} is outside [0, columns={columns})")
    return slot


def _lowrank_workspace(tensors: list[torch.Tensor], nout: int) -> torch.Tensor:
    size = _C.lowrank_workspace_doubles(numels(tensors), nout)
    return torch.empty(max(size, 1), dtype=torch.float64, device=tensors[0].device)


@torch.library.custom_op(
    "fisherprec::lowrank_dots", mutates_args=("window", "out"), device_types="cpu"
)
def _lowrank_dots(
    window: torch.Tensor, columns: int, slot: int, tensors: list[torch.Tensor], out: torch.Tensor
) -> None:
    _C.lowrank_dots_cpu(
        window.data_ptr(),
        dtype_code(window.dtype),
        window.shape[1],
        columns,
        slot,
        data_ptrs(tensors),
        numels(tensors),
        dtype_code(tensors[0].dtype),
        out.data_ptr(),
        num_threads(),
    )


@torch.library.custom_op(
    "fisherprec::lowrank_stats",
    mutates_args=("exp_avg", "exp_avg_sq", "window", "out"),
    device_types="cpu",
)
def _lowrank_stats(
    grads: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    window: torch.Tensor,
    columns: int,
    slot: int,
    beta1: float,
    beta2: float,
    inv_c2_root: float,
    eps: float,
    maximize: bool,
    out: torch.Tensor,
) -> None:
    _C.lowrank_stats_cpu(
        data_ptrs(grads),
        numels(grads),
        dtype_code(grads[0].dtype),
        data_ptrs(exp_avg),
        data_ptrs(exp_avg_sq),
        window.data_ptr(),
        dtype_code(window.dtype),
        window.shape[1],
        columns,
        slot,
        beta1,
        beta2,
        inv_c2_root,
        eps,
        maximize,
        out.data_ptr(),
        num_threads(),
    )


@torch.library.custom_op("fisherprec::lowrank_combine", mutates_args=("out",), device_types="cpu")
def _lowrank_combine(
    out: list[torch.Tensor],
    x: list[torch.Tensor],
    window: torch.Tensor,
    columns: int,
    coef: torch.Tensor,
    decay: float,
) -> None:
    _C.lowrank_combine_cpu(
        data_ptrs(out),
        numels(out),
        dtype_code(out[0].dtype),
        data_ptrs(x),
        dtype_code(x[0].dtype),
        window.data_ptr(),
        dtype_code(window.dtype),
        window.shape[1],
        columns,
        coef.data_ptr(),
        decay,
        num_threads(),
    )


if CUDA_BUILT:

    @_lowrank_dots.register_kernel("cuda")
    def _lowrank_dots_cuda(window, columns, slot, tensors, out) -> None:
        workspace = _lowrank_workspace(tensors, columns)
        _C.lowrank_dots_cuda(
            window.data_ptr(),
            dtype_code(window.dtype),
            window.shape[1],
            columns,
            slot,
            data_ptrs(tensors),
            numels(tensors),
            dtype_code(tensors[0].dtype),
            out.data_ptr(),
            workspace.data_ptr(),
            cuda_stream(window.device),
        )

    @_lowrank_stats.register_kernel("cuda")
    def _lowrank_stats_cuda(
        grads,
        exp_avg,
        exp_avg_sq,
        window,
        columns,
        slot,
        beta1,
        beta2,
        inv_c2_root,
        eps,
        maximize,
        out,
    ) -> None:
        workspace = _lowrank_workspace(grads, 2 * columns + 2)
        _C.lowrank_stats_cuda(
            data_ptrs(grads),
            numels(grads),
            dtype_code(grads[0].dtype),
            data_ptrs(exp_avg),
            data_ptrs(exp_avg_sq),
            window.data_ptr(),
            dtype_code(window.dtype),
            window.shape[1],
            columns,
            slot,
            beta1,
            beta2,
            inv_c2_root,
            eps,
            maximize,
            out.data_ptr(),
            workspace.data_ptr(),
            cuda_stream(window.device),
        )

    @_lowrank_combine.register_kernel("cuda")
    def _lowrank_combine_cuda(out, x, window, columns, coef, decay) -> None:
        _C.lowrank_combine_cuda(
            data_ptrs(out),
            numels(out),
            dtype_code(out[0].dtype),
            data_ptrs(x),
            dtype_code(x[0].dtype),
            window.data_ptr(),
            dtype_code(window.dtype),
            window.shape[1],
            columns,
            coef.data_ptr(),
            decay,
            cuda_stream(window.device),
        )


@_lowrank_dots.register_fake
def _(window, columns, slot, tensors, out) -> None:
    return None


@_lowrank_stats.register_fake
def _(
    grads, exp_avg, exp_avg_sq, window, columns, slot, beta1, beta2, inv_c2_root, eps, maximize, out
) -> None:
    return None


@_lowrank_combine.register_fake
def _(out, x, window, columns, coef, decay) -> None:
    return None


def lowrank_dots(
    window: torch.Tensor, columns: int, tensors: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Gᵀx: the inner products of the first `columns` rows of `window` with the
    flat vector formed by `tensors`, in one pass, accumulated in float64.

    Args:
        window: (r, P) contiguous float32, float64 or bfloat16 tensor, r ≤ 256.
        columns: how many leading rows take part (0 ≤ columns ≤ r).
        tensors: contiguous tensors of one floating dtype on window's device,
            P elements in all, in flat-vector order.

    Returns:
        A (columns,) float64 tensor. On the CPU it does not depend on the thread count.

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> G = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
        >>> ops.lowrank_dots(G, 2, [torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
        tensor([7., 5.], dtype=torch.float64)
    """
    window, tensors = _check_window(window, columns, tensors)
    out = torch.empty(columns, dtype=torch.float64, device=window.device)
    torch.ops.fisherprec.lowrank_dots(window, columns, -1, tensors, out)
    return out


def lowrank_insert(
    window: torch.Tensor, slot: int, columns: int, tensors: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Store the flat vector x (`tensors`) in row `slot` of `window` (rounded to
    its dtype) and return G[:columns] x̂ in the same pass: the new row of
    K = GᵀG, computed from the stored values (x̂ = the rounded x).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> G = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
        >>> ops.lowrank_insert(G, 1, 2, [torch.tensor([3.0, 4.0])])
        tensor([11., 25.], dtype=torch.float64)
        >>> G[1]
        tensor([3., 4.])
    """
    window, tensors = _check_window(window, columns, tensors)
    slot = _check_slot(slot, columns)
    check_no_overlap({"window": [window], "tensors": tensors})
    out = torch.empty(columns, dtype=torch.float64, device=window.device)
    torch.ops.fisherprec.lowrank_dots(window, columns, slot, tensors, out)
    return out


def lowrank_stats(
    grads: Sequence[torch.Tensor],
    exp_avg: Sequence[torch.Tensor],
    exp_avg_sq: Sequence[torch.Tensor],
    window: torch.Tensor,
    columns: int,
    slot: int | None,
    *,
    beta1: float,
    beta2: float,
    bias_correction2: float = 1.0,
    eps: float = 1e-8,
    maximize: bool = False,
) -> torch.Tensor:
    """The first pass of a LowRankFisher step, over every tensor of a group.

    Per element (g = ±grad): m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g²
    (the Adam moments of diag.h; `exp_avg_sq` may be empty: no v); with a
    `slot`, g is stored in that row of `window` first. Returns a float64
    tensor ``[Gᵀĝ (columns), Gᵀm (columns), Σ m², Σ (m / (√(v/c2) + ε))²]``
    with G = window[:columns] and c2 = `bias_correction2` (the last entry is 0
    without `exp_avg_sq`).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> G = torch.zeros(2, 3)
        >>> m = [torch.zeros(3)]
        >>> ops.lowrank_stats([torch.tensor([1.0, 2.0, 2.0])], m, [], G, 1, 0, beta1=0.5, beta2=0.9)
        tensor([9.0000, 4.5000, 2.2500, 0.0000], dtype=torch.float64)
    """
    window, grads = _check_window(window, columns, grads, "grads")
    exp_avg = check_tensor_list(
        "exp_avg", exp_avg, dtypes=(torch.float32,), like=grads, like_name="grads"
    )
    exp_avg_sq = list(exp_avg_sq)
    if exp_avg_sq:
        exp_avg_sq = check_tensor_list(
            "exp_avg_sq", exp_avg_sq, dtypes=(torch.float32,), like=grads, like_name="grads"
        )
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Invalid {name} value: {value}")
    if not 0.0 < bias_correction2 <= 1.0:
        raise ValueError(f"Invalid bias_correction2 value: {bias_correction2}")
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"Invalid eps value: {eps}")
    slot_code = -1 if slot is None else _check_slot(slot, columns)
    check_no_overlap(
        {"grads": grads, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "window": [window]}
    )
    out = torch.empty(2 * columns + 2, dtype=torch.float64, device=window.device)
    torch.ops.fisherprec.lowrank_stats(
        grads,
        exp_avg,
        exp_avg_sq,
        window,
        columns,
        slot_code,
        float(beta1),
        float(beta2),
        1.0 / math.sqrt(bias_correction2),
        float(eps),
        bool(maximize),
        out,
    )
    return out


def lowrank_combine(
    out: Sequence[torch.Tensor],
    x: Sequence[torch.Tensor],
    window: torch.Tensor,
    columns: int,
    coef: torch.Tensor,
    decay: float = 1.0,
) -> None:
    """In place, over every tensor of a group: y ← decay·y + coef[0]·x + G coef[1:]
    with G = window[:columns] (one pass, float64 arithmetic, one rounding to
    y's dtype). ``decay=0`` does not read y. The second pass of a LowRankFisher
    step (y = θ, x = m) and of ``LowRank.inv_root_mv``.

    Args:
        out: the tensors y (any floating dtype), P elements in all.
        x: float32 or float64 tensors shaped like `out`.
        coef: (columns + 1,) float64 tensor on the window's device (read by the
            kernel: no host synchronisation).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> y = [torch.ones(2)]
        >>> G = torch.tensor([[1.0, 2.0]])
        >>> ops.lowrank_combine(y, [torch.ones(2)], G, 1, torch.tensor([0.5, 2.0], dtype=torch.float64), 3.0)
        >>> y[0]
        tensor([5.5000, 7.5000])
    """
    window, out = _check_window(window, columns, out, "out")
    x = check_tensor_list("x", x, dtypes=(torch.float32, torch.float64), like=out, like_name="out")
    check_tensor("coef", coef, dtypes=(torch.float64,), device=window.device, shape=(columns + 1,))
    if not math.isfinite(decay):
        raise ValueError(f"Invalid decay value: {decay}")
    check_no_overlap({"out": out, "x": x, "window": [window], "coef": [coef]})
    torch.ops.fisherprec.lowrank_combine(out, x, window, columns, coef, float(decay))
