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

from collections.abc import Sequence

import torch

from fisherprec import _C

__all__ = ["FLOATING_DTYPES", "sum_of_squares"]

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


# ----------------------------------------------------------- block
# Block-diagonal Fisher (csrc/include/fisherprec/block.h). A tensor of n
# elements is cut into ceil(n/b) blocks of b contiguous elements (the last one
# may be shorter); its statistic and its root are (ceil(n/b), b, b) arrays
# whose slot k holds block k in its leading corner.
BLOCK_STATE_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
MAX_BLOCK_SIZE = 256
# Must match csrc/include/fisherprec/block.h:BlockRootStatus.
ROOT_OK, ROOT_NONFINITE_INPUT, ROOT_NO_CONVERGENCE, ROOT_NONFINITE_OUTPUT, ROOT_NONE = range(5)
__all__ += [
    "BLOCK_STATE_DTYPES",
    "MAX_BLOCK_SIZE",
    "block_fisher_step_",
    "block_inv_root_",
    "block_outer_update_",
    "block_shape",
]


def block_shape(numel: int, block_size: int) -> tuple[int, int, int]:
    """Shape of the statistic (and root) of a tensor with `numel` elements."""
    return (-(-numel // block_size), block_size, block_size)


def _check_block_size(block_size: object) -> int:
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, int)
        or not 1 <= block_size <= MAX_BLOCK_SIZE
    ):
        raise ValueError(
            f"Invalid block_size value: {block_size!r} (an int in [1, {MAX_BLOCK_SIZE}])"
        )
    return block_size


def _check_finite(name: str, value: float, *, positive: bool = False, nonnegative: bool = False):
    value = float(value)
    if not abs(value) < float("inf") or (positive and value <= 0) or (nonnegative and value < 0):
        raise ValueError(f"Invalid {name} value: {value}")
    return value


def _check_blocked(
    name: str,
    tensors: object,
    numels_: Sequence[int],
    block_size: int,
    device: torch.device,
    *,
    dtypes: Sequence[torch.dtype],
    per_block: bool = False,
) -> list[torch.Tensor]:
    """A list of (ceil(n/b), b, b) arrays (or (ceil(n/b),) vectors when per_block)."""
    tensors = check_tensor_list(name, tensors, dtypes=dtypes)
    if len(tensors) != len(numels_):
        raise ValueError(f"{name} has {len(tensors)} tensors, expected {len(numels_)}")
    for i, (t, n) in enumerate(zip(tensors, numels_, strict=True)):
        shape = block_shape(n, block_size)
        want = shape[:1] if per_block else shape
        if tuple(t.shape) != want:
            raise ValueError(
                f"{name}[{i}] has shape {tuple(t.shape)}, expected {want} for {n} elements "
                f"in blocks of {block_size}"
            )
        if t.device != device:
            raise RuntimeError(f"{name}[{i}] is on {t.device}, expected {device}")
    return tensors


@torch.library.custom_op(
    "fisherprec::block_outer_update", mutates_args=("states",), device_types="cpu"
)
def _block_outer_update(
    states: list[torch.Tensor],
    rows: list[torch.Tensor],
    block_size: int,
    old_weight: float,
    new_weight: float,
) -> None:
    _C.block_outer_update_cpu(
        data_ptrs(states),
        data_ptrs(rows),
        [r.shape[1] for r in rows],
        rows[0].shape[0],
        block_size,
        old_weight,
        new_weight,
        dtype_code(states[0].dtype),
        dtype_code(rows[0].dtype),
        num_threads(),
    )


@torch.library.custom_op(
    "fisherprec::block_inv_root", mutates_args=("roots", "status"), device_types="cpu"
)
def _block_inv_root(
    states: list[torch.Tensor],
    roots: list[torch.Tensor],
    status: list[torch.Tensor],
    numels: list[int],
    block_size: int,
    scale: float,
    damping: float,
    power: float,
) -> None:
    _C.block_inv_root_cpu(
        data_ptrs(states),
        data_ptrs(roots),
        data_ptrs(status),
        numels,
        block_size,
        scale,
        damping,
        power,
        dtype_code(states[0].dtype),
        num_threads(),
    )


@torch.library.custom_op(
    "fisherprec::block_fisher_step",
    mutates_args=("params", "exp_avgs", "exp_avg_sqs"),
    device_types="cpu",
)
def _block_fisher_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    roots: list[torch.Tensor],
    status: list[torch.Tensor],
    block_size: int,
    beta1: float,
    beta2: float,
    step_size: float,
    inv_c2_root: float,
    eps: float,
    decay: float,
    maximize: bool,
    graft: bool,
) -> None:
    _C.block_fisher_step_cpu(
        data_ptrs(params),
        data_ptrs(grads),
        data_ptrs(exp_avgs),
        data_ptrs(exp_avg_sqs),
        data_ptrs(roots),
        data_ptrs(status),
        numels(params),
        block_size,
        beta1,
        beta2,
        step_size,
        inv_c2_root,
        eps,
        decay,
        maximize,
        graft,
        dtype_code(params[0].dtype),
        num_threads(),
    )


if CUDA_BUILT:

    @_block_outer_update.register_kernel("cuda")
    def _block_outer_update_cuda(states, rows, block_size, old_weight, new_weight) -> None:
        _C.block_outer_update_cuda(
            data_ptrs(states),
            data_ptrs(rows),
            [r.shape[1] for r in rows],
            rows[0].shape[0],
            block_size,
            old_weight,
            new_weight,
            dtype_code(states[0].dtype),
            dtype_code(rows[0].dtype),
            cuda_stream(states[0].device),
        )

    @_block_inv_root.register_kernel("cuda")
    def _block_inv_root_cuda(
        states, roots, status, numels, block_size, scale, damping, power
    ) -> None:
        device = states[0].device
        per_block = block_size * block_size + 6 * block_size  # block_root_workspace(b)
        most = max(block_shape(n, block_size)[0] for n in numels)
        blocks = max(1, min(most, (256 << 20) // (8 * per_block)))  # ≤ 256 MiB of float64
        work = torch.empty(blocks * per_block, dtype=torch.float64, device=device)
        _C.block_inv_root_cuda(
            data_ptrs(states),
            data_ptrs(roots),
            data_ptrs(status),
            numels,
            block_size,
            scale,
            damping,
            power,
            dtype_code(states[0].dtype),
            work.data_ptr(),
            blocks,
            cuda_stream(device),
        )

    @_block_fisher_step.register_kernel("cuda")
    def _block_fisher_step_cuda(
        params, grads, exp_avgs, exp_avg_sqs, roots, status, block_size, beta1, beta2,
        step_size, inv_c2_root, eps, decay, maximize, graft,
    ) -> None:  # fmt: skip
        _C.block_fisher_step_cuda(
            data_ptrs(params),
            data_ptrs(grads),
            data_ptrs(exp_avgs),
            data_ptrs(exp_avg_sqs),
            data_ptrs(roots),
            data_ptrs(status),
            numels(params),
            block_size,
            beta1,
            beta2,
            step_size,
            inv_c2_root,
            eps,
            decay,
            maximize,
            graft,
            dtype_code(params[0].dtype),
            cuda_stream(params[0].device),
        )


@_block_outer_update.register_fake
def _(states, rows, block_size, old_weight, new_weight) -> None:
    return None


@_block_inv_root.register_fake
def _(states, roots, status, numels, block_size, scale, damping, power) -> None:
    return None


@_block_fisher_step.register_fake
def _(
    params, grads, exp_avgs, exp_avg_sqs, roots, status, block_size, beta1, beta2,
    step_size, inv_c2_root, eps, decay, maximize, graft,
) -> None:  # fmt: skip
    return None


def block_outer_update_(
    states: Sequence[torch.Tensor],
    rows: Sequence[torch.Tensor],
    block_size: int,
    old_weight: float,
    new_weight: float,
) -> None:
    """In place, per block of every tensor: F ← old_weight·F + new_weight·Σ_r g_r g_rᵀ.

    One pass over the rows; F stays exactly symmetric.

    Args:
        states: per tensor a (ceil(n/b), b, b) float32 or float64 statistic
            (see :func:`block_shape`), all of one dtype.
        rows: per tensor a (B, n) matrix of B observations (per-sample
            gradients; B = 1 for a minibatch gradient), any floating dtype,
            the same B for all tensors.
        block_size: b, in [1, 256].

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> F = torch.zeros(ops.block_shape(3, 2))
        >>> ops.block_outer_update_([F], [torch.tensor([[1.0, 2.0, 3.0]])], 2, 0.0, 1.0)
        >>> F[0], F[1, :1, :1]
        (tensor([[1., 2.],
                [2., 4.]]), tensor([[9.]]))
    """
    block_size = _check_block_size(block_size)
    rows = check_tensor_list("rows", rows, dtypes=FLOATING_DTYPES, same_dtype=True)
    for i, r in enumerate(rows):
        if r.dim() != 2:
            raise ValueError(f"rows[{i}] must be a (B, n) matrix, got shape {tuple(r.shape)}")
        if r.shape[0] != rows[0].shape[0]:
            raise ValueError(f"rows[{i}] has {r.shape[0]} rows but rows[0] has {rows[0].shape[0]}")
    states = _check_blocked(
        "states",
        states,
        [r.shape[1] for r in rows],
        block_size,
        rows[0].device,
        dtypes=BLOCK_STATE_DTYPES,
    )
    old_weight = _check_finite("old_weight", old_weight)
    new_weight = _check_finite("new_weight", new_weight)
    check_no_overlap({"states": states, "rows": rows})
    torch.ops.fisherprec.block_outer_update(states, rows, block_size, old_weight, new_weight)


def block_inv_root_(
    states: Sequence[torch.Tensor],
    roots: Sequence[torch.Tensor],
    status: Sequence[torch.Tensor],
    numels: Sequence[int],
    block_size: int,
    *,
    scale: float = 1.0,
    damping: float,
    power: float = 0.5,
) -> None:
    """In place, per block: R = (scale·F + damping·I)^(-power), eigenvalues of
    scale·F clamped at 0 first (THEORY.md §5).

    A native batched symmetric eigensolver (Householder + implicit QL, in
    float64 whatever the storage dtype) runs on every block. ``status[t][k]``
    receives the outcome of block k of tensor t: ``ROOT_OK`` (0),
    ``ROOT_NONFINITE_INPUT`` (the block holds NaN/Inf), ``ROOT_NO_CONVERGENCE``
    or ``ROOT_NONFINITE_OUTPUT`` (e.g. damping 0 on a singular block); the root
    of a failed block is filled with NaN. Padding outside a tail block is zero.

    Args:
        states: per tensor a (ceil(n/b), b, b) symmetric statistic, float32 or float64.
        roots: like `states` (same dtype), overwritten.
        status: per tensor an int32 (ceil(n/b),) vector, overwritten.
        numels: n per tensor (the true length; the last block has n − (nb−1)·b).
        block_size: b, in [1, 256].

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> F = torch.tensor([[[4.0, 0.0], [0.0, 16.0]]])
        >>> R, status = torch.empty_like(F), torch.empty(1, dtype=torch.int32)
        >>> ops.block_inv_root_([F], [R], [status], [2], 2, damping=0.0)
        >>> R[0], status
        (tensor([[0.5000, 0.0000],
                [0.0000, 0.2500]]), tensor([0], dtype=torch.int32))
    """
    block_size = _check_block_size(block_size)
    numels = [int(n) for n in numels]
    if any(n < 0 for n in numels):
        raise ValueError(f"Invalid numels: {numels}")
    states = check_tensor_list("states", states, dtypes=BLOCK_STATE_DTYPES)
    device = states[0].device
    states = _check_blocked("states", states, numels, block_size, device, dtypes=BLOCK_STATE_DTYPES)
    roots = _check_blocked("roots", roots, numels, block_size, device, dtypes=(states[0].dtype,))
    status = _check_blocked(
        "status", status, numels, block_size, device, dtypes=(torch.int32,), per_block=True
    )
    scale = _check_finite("scale", scale, positive=True)
    damping = _check_finite("damping", damping, nonnegative=True)
    power = _check_finite("power", power, positive=True)
    check_no_overlap({"states": states, "roots": roots, "status": status})
    torch.ops.fisherprec.block_inv_root(
        states, roots, status, numels, block_size, scale, damping, power
    )


def block_fisher_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    roots: Sequence[torch.Tensor],
    status: Sequence[torch.Tensor],
    *,
    block_size: int,
    beta1: float,
    beta2: float,
    step_size: float,
    inv_c2_root: float,
    eps: float,
    decay: float,
    maximize: bool = False,
    graft: bool = True,
) -> None:
    """The fused BlockFisher step, in place on params, exp_avgs (m) and exp_avg_sqs (v).

    Per block: m, v ← the Adam EMAs of g (diag.h); the Adam direction
    a = m / (sqrt(v)·inv_c2_root + eps); where status is ROOT_OK,
    u = R m (times ‖a‖/‖R m‖ when `graft`), else u = a (the diagonal
    fallback); θ ← θ·decay − step_size·u. The caller folds the bias
    corrections in: step_size = lr/(1−β1^t), inv_c2_root = (1−β2^t)^(-1/2),
    and R = (F/(1−β2^t) + λI)^(-p), so R m·step_size = lr·R m̂.

    Args:
        params, grads: one floating dtype; exp_avgs, exp_avg_sqs: float32 like params;
        roots: float32 (ceil(n/b), b, b) per param; status: int32 (ceil(n/b),) per param.
    """
    block_size = _check_block_size(block_size)
    params = check_tensor_list("params", params, dtypes=FLOATING_DTYPES)
    grads = check_tensor_list(
        "grads", grads, dtypes=(params[0].dtype,), like=params, like_name="params"
    )
    exp_avgs = check_tensor_list(
        "exp_avgs", exp_avgs, dtypes=(torch.float32,), like=params, like_name="params"
    )
    exp_avg_sqs = check_tensor_list(
        "exp_avg_sqs", exp_avg_sqs, dtypes=(torch.float32,), like=params, like_name="params"
    )
    sizes = numels(params)
    device = params[0].device
    roots = _check_blocked("roots", roots, sizes, block_size, device, dtypes=(torch.float32,))
    status = _check_blocked(
        "status", status, sizes, block_size, device, dtypes=(torch.int32,), per_block=True
    )
    scalars = {
        "beta1": _check_finite("beta1", beta1, nonnegative=True),
        "beta2": _check_finite("beta2", beta2, nonnegative=True),
        "step_size": _check_finite("step_size", step_size),
        "inv_c2_root": _check_finite("inv_c2_root", inv_c2_root, positive=True),
        "eps": _check_finite("eps", eps, nonnegative=True),
        "decay": _check_finite("decay", decay),
    }
    check_no_overlap(
        {"params": params, "grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    )
    check_no_overlap({"params": params, "exp_avgs": exp_avgs, "roots": roots, "status": status})
    torch.ops.fisherprec.block_fisher_step(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        roots,
        status,
        block_size,
        scalars["beta1"],
        scalars["beta2"],
        scalars["step_size"],
        scalars["inv_c2_root"],
        scalars["eps"],
        scalars["decay"],
        bool(maximize),
        bool(graft),
    )
