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
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from fisherprec import _C

__all__ = ["FLOATING_DTYPES", "bellman_backup", "design_score_step", "sum_of_squares"]

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
        and not _is_fake(tensor)
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
            if t.numel() and t.device.type != "meta" and not _is_fake(t):
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


def _is_fake(tensor: torch.Tensor) -> bool:
    return torch._subclasses.fake_tensor.is_fake(tensor)


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


# ----------------------------------------------------------- bellman
BELLMAN_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
_INDEX_CODES: dict[torch.dtype, int] = {torch.int32: 0, torch.int64: 1}


@torch.library.custom_op("fisherprec::bellman_backup", mutates_args=(), device_types="cpu")
def _bellman_backup(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    reward: torch.Tensor,
    v: torch.Tensor,
    gamma: float,
    policy: torch.Tensor | None,
    with_q: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    num_states, num_actions = reward.shape
    v_out = torch.empty_like(v)
    policy_out = torch.empty(num_states, dtype=torch.int64)
    q = reward.new_empty((num_states if with_q else 0, num_actions))
    lo, hi = _C.bellman_backup_cpu(
        indptr.data_ptr(),
        indices.data_ptr(),
        _INDEX_CODES[indices.dtype],
        values.data_ptr(),
        reward.data_ptr(),
        v.data_ptr(),
        gamma,
        0 if policy is None else policy.data_ptr(),
        num_states,
        num_actions,
        dtype_code(v.dtype),
        v_out.data_ptr(),
        policy_out.data_ptr(),
        q.data_ptr() if with_q else 0,
        num_threads(),
    )
    return v_out, policy_out, q, torch.tensor([lo, hi], dtype=torch.float64)


# ----------------------------------------------------------------- design
# One step of sequential A-optimal selection (docs/theory.md, "Fermat's principle and A-optimal design"); the math is in
# csrc/include/fisherprec/design.h, the algorithm around it in fisherprec/design.py.
@torch.library.custom_op(
    "fisherprec::design_score_step", mutates_args=("s", "t", "out"), device_types="cpu"
)
def _design_score_step(
    pool: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    beta: float,
    gamma: float,
    eta: float,
    s: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    out: torch.Tensor,
) -> None:
    n, p = pool.shape
    _C.design_score_step_cpu(
        pool.data_ptr(),
        n,
        p,
        dtype_code(pool.dtype),
        b.data_ptr(),
        c.data_ptr(),
        beta,
        gamma,
        eta,
        s.data_ptr(),
        t.data_ptr(),
        mask.data_ptr(),
        out.data_ptr(),
        num_threads(),
    )


if CUDA_BUILT:

    @_bellman_backup.register_kernel("cuda")
    def _bellman_backup_cuda(
        indptr: torch.Tensor,
        indices: torch.Tensor,
        values: torch.Tensor,
        reward: torch.Tensor,
        v: torch.Tensor,
        gamma: float,
        policy: torch.Tensor | None,
        with_q: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        num_states, num_actions = reward.shape
        device = v.device
        v_out = torch.empty_like(v)
        policy_out = torch.empty(num_states, dtype=torch.int64, device=device)
        q = reward.new_empty((num_states if with_q else 0, num_actions))
        _C.bellman_backup_cuda(
            indptr.data_ptr(),
            indices.data_ptr(),
            _INDEX_CODES[indices.dtype],
            values.data_ptr(),
            reward.data_ptr(),
            v.data_ptr(),
            gamma,
            0 if policy is None else policy.data_ptr(),
            num_states,
            num_actions,
            dtype_code(v.dtype),
            v_out.data_ptr(),
            policy_out.data_ptr(),
            q.data_ptr() if with_q else 0,
            cuda_stream(device),
        )
        if num_states == 0:
            return v_out, policy_out, q, torch.zeros(2, dtype=torch.float64, device=device)
        lo, hi = torch.aminmax(v_out.double() - v.double())
        return v_out, policy_out, q, torch.stack([lo, hi])


@_bellman_backup.register_fake
def _(indptr, indices, values, reward, v, gamma, policy, with_q):
    num_states, num_actions = reward.shape
    return (
        torch.empty_like(v),
        v.new_empty(num_states, dtype=torch.int64),
        reward.new_empty((num_states if with_q else 0, num_actions)),
        v.new_empty(2, dtype=torch.float64),
    )


def check_csr_structure(
    indptr: torch.Tensor, indices: torch.Tensor, num_columns: int, *, name: str = "P"
) -> None:
    """Raise unless (indptr, indices) is a valid CSR structure with column
    indices in [0, num_columns): O(nnz), so solvers run it once per problem."""
    if indptr.device.type == "meta":
        return
    if indptr.numel() and int(indptr[0]) != 0:
        raise ValueError(f"{name}.indptr must start at 0, got {int(indptr[0])}")
    if indptr.numel() and int(indptr[-1]) != indices.numel():
        raise ValueError(
            f"{name}.indptr must end at the number of stored entries {indices.numel()}, "
            f"got {int(indptr[-1])}"
        )
    if indptr.numel() > 1 and bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError(f"{name}.indptr must be non-decreasing")
    if indices.numel():
        lo, hi = torch.aminmax(indices)
        if int(lo) < 0 or int(hi) >= num_columns:
            raise ValueError(
                f"{name}.indices must lie in [0, {num_columns}), got values in [{int(lo)}, {int(hi)}]"
            )


def bellman_backup(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    reward: torch.Tensor,
    v: torch.Tensor,
    gamma: float,
    *,
    policy: torch.Tensor | None = None,
    with_q: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One synchronous Bellman backup of a finite MDP in one native pass.

    The transitions are compressed sparse rows of the (S·A) × S matrix whose
    row ``s·A + a`` is P(·|s, a) (state-major: an (S, A, S) tensor with its
    first two axes merged). For every state s:

    .. math::
        Q(s, a) = r(s, a) + γ \\sum_{s'} P(s'|s, a) V(s'), \\qquad
        V'(s) = \\max_a Q(s, a), \\qquad π(s) = \\operatorname{argmax}_a Q(s, a)

    (the first maximising action on ties). A row summing to less than 1 ends
    the episode with the missing probability (no continuation value). With
    ``policy`` the backup evaluates that policy instead: V'(s) = Q(s, π(s)).
    Sums are accumulated in float64.

    Args:
        indptr: (S·A + 1,) int64 row offsets.
        indices: (nnz,) int32 or int64 successor states.
        values: (nnz,) probabilities, float32 or float64.
        reward: (S, A) expected rewards r(s, a), the dtype of ``values``.
        v: (S,) current values, the dtype of ``values``.
        gamma: discount factor in [0, 1].
        policy: optional (S,) int64 actions in [0, A) to evaluate.
        with_q: also return Q as (S, A) (not with ``policy``).

    Returns:
        ``(v_new, policy, q, delta_range)``: V' (S,), the greedy actions (S,)
        int64, Q (S, A) (or (0, A) without ``with_q``) and the float64 tensor
        ``[min_s, max_s] (V'(s) − V(s))`` ([0, 0] when S = 0). On the CPU the
        result does not depend on the thread count.

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> # two states, one action: 0 → 1 → 1, reward 1 in state 0
        >>> indptr = torch.tensor([0, 1, 2]); indices = torch.tensor([1, 1])
        >>> values = torch.ones(2, dtype=torch.float64)
        >>> reward = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
        >>> v_new, pi, q, delta = ops.bellman_backup(indptr, indices, values, reward,
        ...                                          torch.tensor([0.0, 2.0], dtype=torch.float64), 0.5)
        >>> v_new
        tensor([2., 1.], dtype=torch.float64)

    The CSR structure is validated on every call (O(nnz): row offsets
    non-decreasing from 0 to nnz, successors in [0, S)); the solvers of
    :mod:`fisherprec.bellman` validate it once per problem instead.
    """
    return _bellman_backup_checked(
        indptr, indices, values, reward, v, gamma, policy, with_q, check_structure=True
    )


def _bellman_backup_checked(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    reward: torch.Tensor,
    v: torch.Tensor,
    gamma: float,
    policy: torch.Tensor | None,
    with_q: bool,
    *,
    check_structure: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """bellman_backup; ``check_structure=False`` is for callers that ran
    check_csr_structure on these very tensors (private: out-of-range indices
    would reach the native kernel)."""
    reward = check_tensor("reward", reward, dtypes=BELLMAN_DTYPES, ndim=2)
    num_states, num_actions = reward.shape
    if num_actions == 0:
        raise ValueError("reward must have at least one action column, got shape (S, 0)")
    device = reward.device
    v = check_tensor("v", v, dtypes=(reward.dtype,), device=device, shape=(num_states,))
    values = check_tensor("values", values, dtypes=(reward.dtype,), device=device, ndim=1)
    indices = check_tensor(
        "indices", indices, dtypes=tuple(_INDEX_CODES), device=device, shape=values.shape
    )
    indptr = check_tensor(
        "indptr",
        indptr,
        dtypes=(torch.int64,),
        device=device,
        shape=(num_actions * num_states + 1,),
    )
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"Invalid gamma value: {gamma}")
    if policy is not None:
        policy = check_tensor(
            "policy", policy, dtypes=(torch.int64,), device=device, shape=(num_states,)
        )
        if with_q:
            raise ValueError("with_q=True is not supported together with a fixed policy")
        if device.type != "meta" and num_states:
            lo, hi = torch.aminmax(policy)
            if int(lo) < 0 or int(hi) >= num_actions:
                raise ValueError(
                    f"policy must hold actions in [0, {num_actions}), got values in [{int(lo)}, {int(hi)}]"
                )
    if check_structure:
        check_csr_structure(indptr, indices, num_states, name="transitions")
    return torch.ops.fisherprec.bellman_backup(
        indptr, indices, values, reward, v, float(gamma), policy, bool(with_q)
    )


if CUDA_BUILT:

    @_design_score_step.register_kernel("cuda")
    def _design_score_step_cuda(
        pool: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        beta: float,
        gamma: float,
        eta: float,
        s: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        n, p = pool.shape
        workspace = torch.empty(
            2 * _C.design_workspace_blocks(), dtype=torch.float64, device=pool.device
        )
        _C.design_score_step_cuda(
            pool.data_ptr(),
            n,
            p,
            dtype_code(pool.dtype),
            b.data_ptr(),
            c.data_ptr(),
            beta,
            gamma,
            eta,
            s.data_ptr(),
            t.data_ptr(),
            mask.data_ptr(),
            out.data_ptr(),
            workspace.data_ptr(),
            cuda_stream(pool.device),
        )


@_design_score_step.register_fake
def _(pool, b, c, beta, gamma, eta, s, t, mask, out) -> None:
    return None


def _check_betas(beta1: object, beta2: object) -> tuple[float, float]:
    """The two EMA weights every moment kernel takes, each in [0, 1)."""
    out = []
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        value = _check_finite_scalar(name, value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Invalid {name} value: {value} (must be in [0, 1))")
        out.append(value)
    return out[0], out[1]


def _check_finite_scalar(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Invalid {name} value: {value} (must be finite)")
    return value


def design_score_step(
    pool: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    beta: float,
    gamma: float,
    eta: float,
    s: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """One scoring step of sequential A-optimal design, in one native pass over `pool`.

    For every row x_i of `pool` whose `mask` entry is False, with u_i = x_iᵀb and
    v_i = x_iᵀc (skipped when beta == 0):

    .. math::
        s_i \\leftarrow s_i - \\beta u_i^2, \\qquad
        t_i \\leftarrow t_i - 2\\beta u_i v_i + \\beta^2 \\gamma u_i^2, \\qquad
        \\Delta_i = t_i / (1 + \\eta s_i)

    (the Sherman–Morrison update of s_i = x_iᵀBx_i and t_i = x_iᵀBMBx_i after
    B ← B − β b bᵀ, with c = BMb, γ = bᵀMb; see csrc/include/fisherprec/design.h),
    then writes out = [max Δ_i, argmax i] (ties: lowest index; [-inf, -1] when every
    row is masked or the pool is empty). O(N·p) work.

    Args:
        pool: (N, p) float32/float64/bfloat16/float16 candidates, contiguous.
        b, c: (p,) float64.
        beta, gamma, eta: finite floats.
        s, t: (N,) float64, updated in place.
        mask: (N,) bool, True for rows to skip (their s, t are left as they are).
        out: (2,) float64, overwritten.

    Returns:
        `out`.

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> pool = torch.eye(3)
        >>> s, t = torch.ones(3, dtype=torch.float64), torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
        >>> z = torch.zeros(3, dtype=torch.float64)
        >>> out = torch.empty(2, dtype=torch.float64)
        >>> ops.design_score_step(pool, z, z, 0.0, 0.0, 1.0, s, t, torch.zeros(3, dtype=torch.bool), out)
        tensor([1.5000, 1.0000], dtype=torch.float64)
    """
    pool = check_tensor("pool", pool, dtypes=FLOATING_DTYPES, ndim=2)
    n, p = pool.shape
    device = pool.device
    f64 = (torch.float64,)
    check_tensor("b", b, dtypes=f64, device=device, shape=(p,))
    check_tensor("c", c, dtypes=f64, device=device, shape=(p,))
    check_tensor("s", s, dtypes=f64, device=device, shape=(n,))
    check_tensor("t", t, dtypes=f64, device=device, shape=(n,))
    check_tensor("mask", mask, dtypes=(torch.bool,), device=device, shape=(n,))
    check_tensor("out", out, dtypes=f64, device=device, shape=(2,))
    beta = _check_finite_scalar("beta", beta)
    gamma = _check_finite_scalar("gamma", gamma)
    eta = _check_finite_scalar("eta", eta)
    check_no_overlap(
        {"s": [s], "t": [t], "out": [out], "pool": [pool], "b": [b], "c": [c], "mask": [mask]},
        read_only=("pool", "b", "c", "mask"),
    )
    torch.ops.fisherprec.design_score_step(pool, b, c, beta, gamma, eta, s, t, mask, out)
    return out


# ----------------------------------------------------------- diag
# The diagonal Fisher family (csrc/include/fisherprec/diag.h): the fused
# AdamW-order step over a (device, dtype) bucket and the per-sample diagonal
# Fisher update. Both mutate their outputs and return None.

DIAG_PARAM_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
DIAG_STATE_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
__all__ += ["DIAG_PARAM_DTYPES", "DIAG_STATE_DTYPES", "diag_fisher_update_", "diag_step_"]


def _diag_step_native(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: float,
    power: float,
    bias_correction: bool,
    maximize: bool,
) -> None:
    """Hand validated buckets to the native kernel of their device."""
    args = (
        data_ptrs(params),
        data_ptrs(grads),
        data_ptrs(exp_avgs),
        data_ptrs(exp_avg_sqs),
        numels(params),
        dtype_code(params[0].dtype),
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        float(step),
        float(power),
        bool(bias_correction),
        bool(maximize),
    )
    device = params[0].device
    if device.type == "cuda":
        with torch.cuda.device(device):
            _C.diag_step_cuda(*args, cuda_stream(device))
    else:
        _C.diag_step_cpu(*args, num_threads())


@torch.library.custom_op(
    "fisherprec::diag_step", mutates_args=("params", "exp_avgs", "exp_avg_sqs"), device_types="cpu"
)
def _diag_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: float,
    power: float,
    bias_correction: bool,
    maximize: bool,
) -> None:
    _diag_step_native(
        params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps, weight_decay, step, power,
        bias_correction, maximize,
    )  # fmt: skip


if CUDA_BUILT:
    _diag_step.register_kernel("cuda")(_diag_step_native)


@_diag_step.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps, weight_decay, step, power,
      bias_correction, maximize) -> None:  # fmt: skip
    return None


def _check_diag_hyperparameters(
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: float,
    power: float,
) -> None:
    for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"Invalid {name} value: {value}")
    _check_betas(beta1, beta2)
    if not (math.isfinite(step) and step >= 1.0):
        raise ValueError(f"Invalid step value: {step} (the step count after increment, >= 1)")
    if not (math.isfinite(power) and power > 0.0):
        raise ValueError(f"Invalid power value: {power} (must be finite and > 0)")


def check_diag_step_args(
    params: object, grads: object, exp_avgs: object, exp_avg_sqs: object
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Validate the buffers of one fused diagonal step (see ``diag_step_``)."""
    params = check_tensor_list("params", params, dtypes=DIAG_PARAM_DTYPES)
    grads = check_tensor_list(
        "grads", grads, dtypes=DIAG_PARAM_DTYPES, like=params, like_name="params"
    )
    if grads[0].dtype != params[0].dtype:
        raise TypeError(
            f"grads have dtype {grads[0].dtype} but params have {params[0].dtype}; they must match"
        )
    exp_avgs = check_tensor_list(
        "exp_avgs", exp_avgs, dtypes=(torch.float32,), like=params, like_name="params"
    )
    exp_avg_sqs = check_tensor_list(
        "exp_avg_sqs", exp_avg_sqs, dtypes=(torch.float32,), like=params, like_name="params"
    )
    # A grad sharing memory with a written buffer would be read after it is
    # overwritten; grads may share memory with each other (they are only read).
    check_no_overlap(
        {"params": params, "grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs},
        read_only=("grads",),
    )
    return params, grads, exp_avgs, exp_avg_sqs


def diag_step_unchecked_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: float,
    power: float,
    bias_correction: bool,
    maximize: bool,
) -> None:
    """``diag_step_`` without validation, for callers that built the buffers
    themselves (``DiagFisher`` validates its state when it creates or loads it).

    In eager mode it calls the kernel directly and bumps the version counters
    of the written tensors, as an in-place op would: the custom-op dispatcher
    costs about 1 µs per tensor, 20% of a step over 200 small tensors. Under
    ``torch.compile`` it goes through ``torch.ops.fisherprec.diag_step``.
    """
    args = (lr, beta1, beta2, eps, weight_decay, step, power, bias_correction, maximize)
    if torch.compiler.is_compiling() or params[0].device.type == "meta":
        torch.ops.fisherprec.diag_step(params, grads, exp_avgs, exp_avg_sqs, *args)
        return
    _diag_step_native(params, grads, exp_avgs, exp_avg_sqs, *args)
    torch.autograd.graph.increment_version([*params, *exp_avgs, *exp_avg_sqs])


def diag_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    step: float,
    power: float = 0.5,
    bias_correction: bool = True,
    maximize: bool = False,
) -> None:
    """One fused diagonal-Fisher (AdamW) step over many tensors, in place.

    For every element, in torch.optim.AdamW's order (docs/theory.md, "The learning Lagrangian and F^(-p) updates")::

        g = -grad if maximize else grad
        m = lerp(m, g, 1 - beta1)                  # exp_avgs
        v = beta2 * v + (1 - beta2) * g * g        # exp_avg_sqs
        c1, c2 = 1 - beta1**step, 1 - beta2**step  # 1, 1 without bias_correction
        param = param * (1 - lr * weight_decay) - (lr / c1) * m / (v**power / c2**power + eps)

    One native call and one pass over memory for the whole list; the
    coefficients are computed once, in double, on the host.

    Args:
        params: contiguous float32, bfloat16 or float16 tensors on one device
            (updated in place).
        grads: their gradients: same shapes and dtype.
        exp_avgs, exp_avg_sqs: float32 first and second moments, same shapes
            (updated in place).
        step: the step count *after* this step's increment (1 on the first step).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> p, g = torch.ones(3), torch.full((3,), 0.5)
        >>> m, v = torch.zeros(3), torch.zeros(3)
        >>> ops.diag_step_([p], [g], [m], [v], lr=0.1, step=1)
        >>> p
        tensor([0.9000, 0.9000, 0.9000])
    """
    lists = check_diag_step_args(params, grads, exp_avgs, exp_avg_sqs)
    _check_diag_hyperparameters(lr, beta1, beta2, eps, weight_decay, step, power)
    diag_step_unchecked_(
        *lists,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        step=step,
        power=power,
        bias_correction=bias_correction,
        maximize=maximize,
    )


def _diag_fisher_native(
    state: torch.Tensor, grads: torch.Tensor, old_weight: float, new_weight: float
) -> None:
    batch, numel = grads.shape
    args = (
        grads.data_ptr(),
        batch,
        numel,
        dtype_code(grads.dtype),
        state.data_ptr(),
        dtype_code(state.dtype),
        float(old_weight),
        float(new_weight),
    )
    if state.device.type == "cuda":
        with torch.cuda.device(state.device):
            _C.diag_fisher_update_cuda(*args, cuda_stream(state.device))
    else:
        _C.diag_fisher_update_cpu(*args, num_threads())


@torch.library.custom_op(
    "fisherprec::diag_fisher_update", mutates_args=("state",), device_types="cpu"
)
def _diag_fisher_update(
    state: torch.Tensor, grads: torch.Tensor, old_weight: float, new_weight: float
) -> None:
    _diag_fisher_native(state, grads, old_weight, new_weight)


if CUDA_BUILT:
    _diag_fisher_update.register_kernel("cuda")(_diag_fisher_native)


@_diag_fisher_update.register_fake
def _(state, grads, old_weight, new_weight) -> None:
    return None


def diag_fisher_update_(
    state: torch.Tensor, grads: torch.Tensor, *, old_weight: float, new_weight: float
) -> None:
    """Per-sample diagonal Fisher update, in place, in one pass::

        state ← old_weight · state + new_weight · Σ_i grads[i] ⊙ grads[i]

    ``grads`` is (B, P) per-sample gradients or one (P,) gradient, of any
    floating dtype; ``state`` is a (P,) float32 or float64 tensor on the same
    device. Squares are summed in float64, row by row (deterministic). With
    (old_weight, new_weight) = (n/(n+B), 1/(n+B)) it keeps a running mean; with
    (β, (1−β)/B) an EMA of batch means (see fisherprec/fisher/_base.py).

    Example:
        >>> import torch, fisherprec.ops as ops
        >>> state = torch.zeros(2, dtype=torch.float64)
        >>> ops.diag_fisher_update_(state, torch.tensor([[1.0, 2.0], [3.0, 0.0]]),
        ...                         old_weight=0.0, new_weight=0.5)
        >>> state
        tensor([5., 2.], dtype=torch.float64)
    """
    state = check_tensor("state", state, dtypes=DIAG_STATE_DTYPES, ndim=1)
    grads = check_tensor("grads", grads, dtypes=FLOATING_DTYPES, device=state.device, ndim=(1, 2))
    if grads.shape[-1] != state.shape[0]:
        raise ValueError(
            f"grads has {grads.shape[-1]} columns but state has {state.shape[0]} entries"
        )
    for name, value in (("old_weight", old_weight), ("new_weight", new_weight)):
        if not math.isfinite(value):
            raise ValueError(f"Invalid {name} value: {value}")
    if not torch.compiler.is_compiling() and state.device.type != "meta":
        check_no_overlap({"state": [state], "grads": [grads]}, read_only=("grads",))
    batch = grads.reshape(-1, state.shape[0])
    if torch.compiler.is_compiling() or state.device.type == "meta":
        torch.ops.fisherprec.diag_fisher_update(state, batch, old_weight, new_weight)
    else:  # direct call: see diag_step_unchecked_
        _diag_fisher_native(state, batch, old_weight, new_weight)
        torch.autograd.graph.increment_version([state])


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
    check_no_overlap({"states": states, "rows": rows}, read_only=("rows",))
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
    scale·F at or below its rounding noise (√b·ε·λ_max, ε of the storage dtype)
    set to 0 first, so that a singular block without damping fails (and falls
    back) instead of returning amplified noise.

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
    check_no_overlap({"states": states, "roots": roots, "status": status}, read_only=("states",))
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
    beta1, beta2 = _check_betas(beta1, beta2)
    scalars = {
        "beta1": beta1,
        "beta2": beta2,
        "step_size": _check_finite("step_size", step_size),
        "inv_c2_root": _check_finite("inv_c2_root", inv_c2_root, positive=True),
        "eps": _check_finite("eps", eps, nonnegative=True),
        "decay": _check_finite("decay", decay),
    }
    check_no_overlap(
        {
            "params": params,
            "grads": grads,
            "exp_avgs": exp_avgs,
            "exp_avg_sqs": exp_avg_sqs,
            "roots": roots,
            "status": status,
        },
        read_only=("grads", "roots", "status"),
    )
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


# ----------------------------------------------------------- lowrank
# The window G of the low-rank Fisher is one (r, P) buffer per param group:
# row j is a past gradient, and the group's tensors are consecutive segments
# of the flat vector of length P (math: csrc/include/fisherprec/lowrank.h).
LOWRANK_WINDOW_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16)
LOWRANK_MAX_RANK = 256  # must match csrc/include/fisherprec/lowrank.h:kLowrankMaxRank
__all__ += [
    "LOWRANK_WINDOW_DTYPES",
    "lowrank_combine",
    "lowrank_dots",
    "lowrank_insert",
    "lowrank_stats",
]


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
    check_no_overlap({"window": [window], "tensors": tensors}, read_only=("tensors",))
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
    beta1, beta2 = _check_betas(beta1, beta2)
    if not 0.0 < bias_correction2 <= 1.0:
        raise ValueError(f"Invalid bias_correction2 value: {bias_correction2}")
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"Invalid eps value: {eps}")
    slot_code = -1 if slot is None else _check_slot(slot, columns)
    check_no_overlap(
        {"grads": grads, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "window": [window]},
        read_only=("grads",),
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
    check_no_overlap(
        {"out": out, "x": x, "window": [window], "coef": [coef]},
        read_only=("x", "window", "coef"),
    )
    torch.ops.fisherprec.lowrank_combine(out, x, window, columns, coef, float(decay))
