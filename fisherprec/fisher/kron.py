"""The Kronecker-factored empirical Fisher of parameter tensors (docs/theory.md,
section "Kronecker-factored empirical Fisher").

A tensor is viewed as a matrix G (m × n); a side longer than ``max_dim`` is cut
into blocks of ``max_dim`` (the last block of a side may be shorter), and each
sub-matrix G_k has its own factors L_k = E[G_k G_kᵀ], R_k = E[G_kᵀ G_k] and

    F_k = (L_k ⊗ R_k) / tr L_k      (vec = row-major flattening of G_k).

``KronLayout`` is the matrix view and the blocking (shared with
``fisherprec.optim.KronFisher``); ``safe_eigh`` the batched eigensolver that
reports a status per matrix instead of failing the batch; ``Kron`` the estimator.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from fisherprec import ops
from fisherprec.fisher._base import FisherEstimator
from fisherprec.fisher.registry import register

__all__ = ["BlockClass", "Kron", "KronLayout", "lapack_threads", "matrix_shape", "safe_eigh"]


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(m, n) of the matrix view of a tensor of `shape`: 0-D → (1, 1); 1-D (n,)
    → (1, n); 2-D as it is; k-D (d0, d1, …) → (d0, d1·…·d_{k-1}), so a conv
    weight (o, i, kh, kw) is (o, i·kh·kw). The row-major flattening of this
    matrix is the tensor's own row-major order."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


@dataclass(frozen=True)
class BlockClass:
    """Sub-matrices of one size: rows [row_start, row_stop) × cols [col_start,
    col_stop) of the matrix, cut into row_blocks × col_blocks tiles of rows × cols.
    Tile (i, j) is block i·col_blocks + j of the class."""

    rows: int
    cols: int
    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    @property
    def row_blocks(self) -> int:
        return (self.row_stop - self.row_start) // self.rows

    @property
    def col_blocks(self) -> int:
        return (self.col_stop - self.col_start) // self.cols

    @property
    def count(self) -> int:
        return self.row_blocks * self.col_blocks

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """(B, m, n) → (B, count, rows, cols), a copy."""
        b = x.shape[0]
        region = x[:, self.row_start : self.row_stop, self.col_start : self.col_stop]
        tiles = region.reshape(b, self.row_blocks, self.rows, self.col_blocks, self.cols)
        return tiles.permute(0, 1, 3, 2, 4).reshape(b, self.count, self.rows, self.cols)

    def place(self, out: torch.Tensor, blocks: torch.Tensor) -> None:
        """Write (B, count, rows, cols) `blocks` where they sit in `out` (B, m, n)."""
        b = out.shape[0]
        region = out[:, self.row_start : self.row_stop, self.col_start : self.col_stop]
        tiles = region.view(b, self.row_blocks, self.rows, self.col_blocks, self.cols)
        tiles.permute(0, 1, 3, 2, 4).copy_(
            blocks.reshape(b, self.row_blocks, self.col_blocks, self.rows, self.cols)
        )


def _side(size: int, max_dim: int) -> list[tuple[int, int, int]]:
    """(block, start, stop) runs of one side: full blocks of min(size, max_dim), then a tail."""
    block = min(size, max_dim)
    full = (size // block) * block
    runs = [(block, 0, full)]
    if full < size:
        runs.append((size - full, full, size))
    return runs


class KronLayout:
    """The matrix view of one tensor and its blocking into at most four classes
    of equal-size sub-matrices (full/tail rows × full/tail columns), so that
    every product runs batched over the blocks of a class."""

    def __init__(self, shape: Sequence[int], max_dim: int) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.numel = math.prod(self.shape)
        self.max_dim = max_dim
        self.m, self.n = matrix_shape(self.shape)
        self.classes = [
            BlockClass(r, c, r0, r1, c0, c1)
            for (r, r0, r1) in _side(self.m, max_dim)
            for (c, c0, c1) in _side(self.n, max_dim)
        ]

    @property
    def num_blocks(self) -> int:
        return sum(c.count for c in self.classes)

    def factor_numel(self) -> int:
        """Numbers in the factors L_k and R_k of all blocks (one copy of each)."""
        return sum(c.count * (c.rows * c.rows + c.cols * c.cols) for c in self.classes)

    def blocks(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """(B, numel) → one (B, count, rows, cols) tensor per class."""
        x = flat.reshape(flat.shape[0], self.m, self.n)
        return [c.extract(x) for c in self.classes]

    def unblocks(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Inverse of ``blocks``: one (B, count, rows, cols) per class → (B, numel)."""
        first = blocks[0]
        out = first.new_empty(first.shape[0], self.m, self.n)
        for c, b in zip(self.classes, blocks, strict=True):
            c.place(out, b)
        return out.reshape(first.shape[0], self.numel)

    def __repr__(self) -> str:
        return (
            f"KronLayout(shape={self.shape}, matrix=({self.m}, {self.n}), max_dim={self.max_dim})"
        )


def check_max_dim(max_dim: int) -> int:
    if isinstance(max_dim, bool) or not isinstance(max_dim, int) or max_dim < 1:
        raise ValueError(f"Invalid max_dim value: {max_dim!r} (must be a positive int)")
    return max_dim


@contextlib.contextmanager
def lapack_threads(device: torch.device) -> Iterator[None]:
    """Run torch's CPU LAPACK calls (eigh, qr) on one thread. Measured here
    (2 cores shared with other jobs): eigh of one 256 × 256 matrix 7 ms on one
    thread against ~5 s on two, 1024 × 1024 0.24 s against ~11 s: the threaded
    path spends its time waiting for a busy core. The thread pool takes ~30 ms
    to come back afterwards, so callers enter it once around many calls on
    large matrices. Other devices are untouched."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _finite_per_matrix(x: torch.Tensor) -> torch.Tensor:
    """(K,) bool: whether every entry of x[k] is finite. A sum per matrix
    decides in one pass (NaN and ±Inf make it non-finite); only when some sum
    is not finite (a non-finite entry, or finite entries that overflow) are
    those entries checked one by one."""
    flat = x.flatten(1)
    finite = torch.isfinite(flat.sum(dim=1))
    if x.device.type != "meta" and not bool(finite.all()):
        finite = torch.isfinite(flat).all(dim=1)
    return finite


# Up to these sizes a CPU batch goes to the native solver (ops.symmetric_eigh,
# float64 inside), above them to LAPACK in the batch's own dtype. On the same
# batch the native solver measured, against float64 LAPACK, 1.5-1.7× at
# d = 96-128 and 0.98-1.2× at 256; against float32 LAPACK, which does half the
# arithmetic work, about 1.4× at 64 and 0.7× at 128 (`fisherprec bench eigh`,
# docs/benchmarks.md, "the batched symmetric eigensolver").
NATIVE_EIGH_MAX_DIM = {torch.float64: 128, torch.float32: 64}


def safe_eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigen-decompositions of a (K, d, d) batch of symmetric matrices, one
    outcome per matrix instead of one exception for the batch.

    CPU batches of d ≤ ``NATIVE_EIGH_MAX_DIM[dtype]`` run the native batched
    solver (float64 inside); larger ones and other devices run
    ``torch.linalg.eigh``.

    Returns (eigenvalues (K, d) ascending, eigenvectors (K, d, d), status (K,)
    int32): ``ops.ROOT_OK``; ``ops.ROOT_NONFINITE_INPUT`` for a matrix holding
    NaN/Inf (it is not handed to the solver); ``ops.ROOT_NO_CONVERGENCE`` when
    the solver fails on it; ``ops.ROOT_NONFINITE_OUTPUT`` when its result (in
    the dtype of `matrices`) is not finite. Failed entries hold NaN. Results
    are in the dtype of `matrices` (KronFisher passes its float32 factors)."""
    k, d = matrices.shape[0], matrices.shape[-1]
    if (
        matrices.device.type == "cpu"
        and d <= NATIVE_EIGH_MAX_DIM.get(matrices.dtype, 0)
        and not torch.compiler.is_compiling()
    ):
        eigvals, eigvecs, status = ops.symmetric_eigh(matrices.contiguous())
        if matrices.dtype == torch.float64:  # the solver's own status covers its result
            return eigvals, eigvecs, status
        eigvals, eigvecs = eigvals.to(matrices.dtype), eigvecs.to(matrices.dtype)
        # float64 results beyond float32's range become Inf in the cast.
        cast_overflow = (status == ops.ROOT_OK) & ~(
            _finite_per_matrix(eigvals) & _finite_per_matrix(eigvecs)
        )
        if bool(cast_overflow.any()):
            status = torch.where(cast_overflow, ops.ROOT_NONFINITE_OUTPUT, status).to(torch.int32)
            eigvals = eigvals.masked_fill(cast_overflow[:, None], math.nan)
            eigvecs = eigvecs.masked_fill(cast_overflow[:, None, None], math.nan)
        return eigvals, eigvecs, status
    meta = matrices.device.type == "meta"
    ok = torch.tensor(ops.ROOT_OK, dtype=torch.int32, device=matrices.device)
    finite = _finite_per_matrix(matrices)
    status = torch.where(finite, ok, ops.ROOT_NONFINITE_INPUT).to(torch.int32)
    sym = torch.add(matrices, matrices.mT).mul_(0.5)
    if meta or not bool(finite.all()):
        eye = torch.eye(d, dtype=matrices.dtype, device=matrices.device)
        sym = torch.where(finite[:, None, None], sym, eye)
    try:
        eigvals, eigvecs = torch.linalg.eigh(sym)
    except RuntimeError:  # LAPACK failed on some matrix: find which, one at a time
        eigvals = sym.new_full((k, d), math.nan)
        eigvecs = sym.new_full((k, d, d), math.nan)
        for i in range(k):
            try:
                eigvals[i], eigvecs[i] = torch.linalg.eigh(sym[i])
            except RuntimeError:
                status[i] = ops.ROOT_NO_CONVERGENCE
    good_output = _finite_per_matrix(eigvals) & _finite_per_matrix(eigvecs)
    status = torch.where((status == ops.ROOT_OK) & ~good_output, ops.ROOT_NONFINITE_OUTPUT, status)
    failed = status != ops.ROOT_OK
    if meta or bool(failed.any()):
        eigvals = eigvals.masked_fill(failed[:, None], math.nan)
        eigvecs = eigvecs.masked_fill(failed[:, None, None], math.nan)
    return eigvals, eigvecs, status


def _shapes(shape: object) -> list[tuple[int, ...]]:
    """One shape (int, tuple of ints, torch.Size) or a sequence of shapes."""
    if isinstance(shape, bool):
        raise TypeError(f"shape must be a tuple of ints or a list of shapes, got {shape!r}")
    if isinstance(shape, int):
        return [(shape,)]
    if isinstance(shape, Sequence) and not isinstance(shape, str):
        items = list(shape)
        if items and all(isinstance(s, Sequence) and not isinstance(s, str) for s in items):
            return [s for item in items for s in _shapes(tuple(item))]
        if all(isinstance(s, int) and not isinstance(s, bool) for s in items):
            if any(s < 0 for s in items):
                raise ValueError(f"shape {tuple(items)} has a negative size")
            return [tuple(items)]
    raise TypeError(f"shape must be a tuple of ints or a list of shapes, got {shape!r}")


@register("kron")
class Kron(FisherEstimator):
    """F = blockdiag over tensors and their sub-matrices of (L_k ⊗ R_k) / tr L_k.

    The flat vector of size P is the concatenation of the tensors of `shape`
    (one shape, or a list of shapes such as ``[p.shape for p in
    model.parameters()]``), each in its own row-major order. Tensor views and
    blocking: see ``matrix_shape`` and ``KronLayout``. Factors are float64,
    (1/N) Σ G Gᵀ and (1/N) Σ Gᵀ G over the N observations (``beta=None``) or
    their bias-corrected EMA; tr L_k = tr R_k, so tr F = Σ_k tr L_k.

    Products are exact for this structure: ``mv`` is vec(L V R)/tr L per block,
    ``inv_root_mv`` uses L = Q_L diag(a) Q_Lᵀ, R = Q_R diag(b) Q_Rᵀ:

        (F + λI)^(-p) vec(V) = vec(Q_L [(Q_Lᵀ V Q_R) ⊘ (a bᵀ / tr L + λ)^p] Q_Rᵀ)

    (eigenvalues clamped at 0; a block with tr L = 0 has F_k = 0). The
    decompositions are cached until the next update; a block whose factor is
    non-finite gets NaN products (see ``eig_status``).

    Memory: per block of r × c, r² + c² float64 numbers (plus as many again
    once ``inv_root_mv`` has cached the eigenvectors): cheap for near-square
    blocks, and for a 1 × n tensor it is the dense Fisher of each block.

    Args:
        shape: the tensor's shape, or a list of shapes (an int n means (n,)).
        beta: ``None`` for the running mean, else the EMA factor (bias-corrected).
        damping: λ, inside the root.
        max_dim: the longest side of a block.
        device: where the factors live.

    Example:
        >>> import torch, fisherprec as fp
        >>> G = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
        >>> F = fp.fisher.Kron((2, 3)).update(G.reshape(-1))
        >>> F.left[0][0]
        tensor([[[5., 0.],
                 [0., 1.]]], dtype=torch.float64)
        >>> F.trace()
        6.0
    """

    # fisher.empirical hands it the parameters' shapes instead of P.
    structured_by_shapes = True

    def __init__(
        self,
        shape: Sequence[int] | Sequence[Sequence[int]] | int,
        *,
        beta: float | None = None,
        damping: float = 1e-8,
        max_dim: int = 1024,
        device: torch.device | str | None = None,
    ) -> None:
        shapes = _shapes(shape)
        self.max_dim = check_max_dim(max_dim)
        super().__init__(
            sum(math.prod(s) for s in shapes), beta=beta, damping=damping, device=device
        )
        if any(math.prod(s) == 0 for s in shapes):
            raise ValueError(f"num_params: every tensor needs elements, got shapes {shapes}")
        self.layouts = [KronLayout(s, self.max_dim) for s in shapes]
        self.offsets = [0]
        for layout in self.layouts:
            self.offsets.append(self.offsets[-1] + layout.numel)
        f64 = {"dtype": torch.float64, "device": self.device}
        # left[t][c]: (count, rows, rows) of class c of tensor t; right[t][c]: (count, cols, cols).
        self.left = [
            [torch.zeros(c.count, c.rows, c.rows, **f64) for c in lay.classes]
            for lay in self.layouts
        ]
        self.right = [
            [torch.zeros(c.count, c.cols, c.cols, **f64) for c in lay.classes]
            for lay in self.layouts
        ]
        self._eig: tuple[int, list] | None = None

    # ------------------------------------------------------------- update
    def _update(self, batch: torch.Tensor, old_weight: float, new_weight: float) -> None:
        b = batch.shape[0]
        for t, layout in enumerate(self.layouts):
            flat = batch[:, self.offsets[t] : self.offsets[t + 1]].to(torch.float64)
            for c, g in enumerate(layout.blocks(flat)):  # g: (B, K, r, c)
                k, r, cols = g.shape[1:]
                # Σ_b G_b G_bᵀ = X Xᵀ with X = [G_1 … G_B] side by side (K, r, B·c).
                side = g.permute(1, 2, 0, 3).reshape(k, r, b * cols)
                self.left[t][c].baddbmm_(side, side.mT, beta=old_weight, alpha=new_weight)
                # Σ_b G_bᵀ G_b = Yᵀ Y with Y = the G_b stacked (K, B·r, c).
                stacked = g.transpose(0, 1).reshape(k, b * r, cols)
                self.right[t][c].baddbmm_(stacked.mT, stacked, beta=old_weight, alpha=new_weight)
        self._eig = None

    # ------------------------------------------------------------ helpers
    def _per_block(self, vectors: torch.Tensor, apply) -> torch.Tensor:
        """Rows of `vectors` (K, P) → apply(t, c, V (K, count, r, c)) per class, placed back."""
        flat = vectors.to(torch.float64)
        pieces = []
        for t, layout in enumerate(self.layouts):
            blocks = layout.blocks(flat[:, self.offsets[t] : self.offsets[t + 1]])
            pieces.append(layout.unblocks([apply(t, c, v) for c, v in enumerate(blocks)]))
        return torch.cat(pieces, dim=1).to(vectors.dtype)

    def _traces(self, t: int, c: int) -> torch.Tensor:
        """tr L_k per block of class c of tensor t (raw, without bias correction)."""
        return self.left[t][c].diagonal(dim1=1, dim2=2).sum(dim=1)

    def eig(self) -> list[list[tuple[torch.Tensor, ...]]]:
        """Per tensor, per class: (a, Q_L, b, Q_R, status) of the bias-corrected
        factors, status = ``ops.ROOT_*`` per block (worst of its two factors)."""
        if self._eig is None or self._eig[0] != self.num_updates:
            largest = max(max(c.rows, c.cols) for lay in self.layouts for c in lay.classes)
            one_thread = largest >= 256  # see lapack_threads
            with lapack_threads(self.device) if one_thread else contextlib.nullcontext():
                out = []
                for lefts, rights in zip(self.left, self.right, strict=True):
                    per_class = []
                    for left, right in zip(lefts, rights, strict=True):
                        a, q_left, s_left = safe_eigh(left * self.bias_correction)
                        b, q_right, s_right = safe_eigh(right * self.bias_correction)
                        status = torch.maximum(s_left, s_right)
                        per_class.append((a, q_left, b, q_right, status))
                    out.append(per_class)
            self._eig = (self.num_updates, out)
        return self._eig[1]

    def eig_status(self) -> torch.Tensor:
        """``ops.ROOT_*`` outcome of every block's decomposition, in layout order."""
        return torch.cat([e[4] for per_class in self.eig() for e in per_class])

    # ----------------------------------------------------------- products
    def _mv(self, vectors: torch.Tensor) -> torch.Tensor:
        def apply(t: int, c: int, v: torch.Tensor) -> torch.Tensor:
            trace = self._traces(t, c)
            scale = torch.where(trace > 0, self.bias_correction / trace.clamp_min(1e-300), 0.0)
            return self.left[t][c] @ v @ self.right[t][c] * scale[:, None, None]

        return self._per_block(vectors, apply)

    def _inv_root_mv(self, vectors: torch.Tensor, power: float) -> torch.Tensor:
        eig = self.eig()

        def apply(t: int, c: int, v: torch.Tensor) -> torch.Tensor:
            a, q_left, b, q_right, _ = eig[t][c]
            trace = self._traces(t, c) * self.bias_correction
            inv_trace = torch.where(trace > 0, 1.0 / trace.clamp_min(1e-300), 0.0)
            fisher_eig = a.clamp_min(0)[:, :, None] * b.clamp_min(0)[:, None, :]
            scale = (fisher_eig * inv_trace[:, None, None] + self.damping).pow(-power)
            rotated = q_left.mT @ v @ q_right
            return q_left @ (rotated * scale) @ q_right.mT

        return self._per_block(vectors, apply)

    def trace(self) -> float:
        total = sum(
            float(self._traces(t, c).sum())
            for t, lay in enumerate(self.layouts)
            for c in range(len(lay.classes))
        )
        return total * self.bias_correction

    def to_dense(self) -> torch.Tensor:
        p = self.num_params
        dense = torch.zeros(p, p, dtype=torch.float64, device=self.device)
        index = torch.arange(p, device=self.device).reshape(1, p)
        for t, layout in enumerate(self.layouts):
            blocks = layout.blocks(index[:, self.offsets[t] : self.offsets[t + 1]])
            for c, idx in enumerate(blocks):
                trace = self._traces(t, c)
                for k in range(idx.shape[1]):
                    if trace[k] == 0:
                        continue
                    where = idx[0, k].reshape(-1)
                    kron = torch.kron(self.left[t][c][k], self.right[t][c][k]) / trace[k]
                    dense[where[:, None], where[None, :]] = kron * self.bias_correction
        return dense

    def memory_bytes(self) -> int:
        tensors = [x for per in (*self.left, *self.right) for x in per]
        if self._eig is not None:
            tensors += [x for per_class in self._eig[1] for e in per_class for x in e]
        return sum(x.numel() * x.element_size() for x in tensors)

    def __repr__(self) -> str:
        shapes = [lay.shape for lay in self.layouts]
        return super().__repr__()[:-1] + f", shapes={shapes}, max_dim={self.max_dim})"
