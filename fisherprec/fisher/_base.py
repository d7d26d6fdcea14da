"""The estimator contract shared by every Fisher approximation.

An estimator holds statistics of gradients g ∈ R^P and answers products with
F and (F + λI)^(-power) exactly for its structure (docs/theory.md, "Exact inverse roots for each structure"):

- ``update(g)``: a (P,) tensor is one observation; a (B, P) tensor is B
  observations (per-sample gradients). With ``beta=None`` the statistic is the
  running mean over all N observations, F = (1/N) Σ g gᵀ restricted to the
  structure; with a float ``beta`` it is an exponential moving average with
  bias correction, and a (B, P) update counts as one EMA step of its mean.
- ``mv(v)`` = F v; ``inv_root_mv(v, power=0.5)`` = (F + λI)^(-power) v, with
  λ = ``damping`` inside the root; v is (P,) or (K, P), float32 or float64.
- ``trace()``, ``to_dense()`` (a (P, P) float64 matrix, small P only),
  ``memory_bytes()`` (every state tensor), ``num_updates`` (``update`` calls),
  ``num_observations`` (gradients seen).

Subclasses implement ``_update(G, old_weight, new_weight)`` on a validated
(B, P) batch, and ``_mv`` / ``_inv_root_mv`` on a validated (K, P) block.
"""

from __future__ import annotations

import abc
import math

import torch

from fisherprec.ops import check_tensor

_VECTOR_DTYPES = (torch.float32, torch.float64)


class FisherEstimator(abc.ABC):
    """Base class: validation and the mean/EMA bookkeeping of every estimator."""

    def __init__(
        self,
        num_params: int,
        *,
        beta: float | None = None,
        damping: float = 1e-8,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(num_params, bool) or not isinstance(num_params, int) or num_params < 1:
            raise ValueError(f"num_params must be a positive int, got {num_params!r}")
        if beta is not None and not (0.0 <= beta < 1.0):
            raise ValueError(f"Invalid beta value: {beta} (must be None or in [0, 1))")
        if not (math.isfinite(damping) and damping >= 0.0):
            raise ValueError(f"Invalid damping value: {damping} (must be finite and >= 0)")
        self.num_params = num_params
        self.beta = beta
        self.damping = float(damping)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.num_updates = 0
        self.num_observations = 0

    # ---------------------------------------------------------------- update
    def update(self, g: torch.Tensor) -> FisherEstimator:
        """Add gradient observations: (P,) is one, (B, P) is B per-sample gradients."""
        check_tensor(
            "g",
            g,
            dtypes=(*_VECTOR_DTYPES, torch.bfloat16, torch.float16),
            device=self.device,
            ndim=(1, 2),
        )
        if g.shape[-1] != self.num_params:
            raise ValueError(f"g has {g.shape[-1]} columns, expected num_params={self.num_params}")
        batch = g.reshape(-1, self.num_params)
        if batch.shape[0] == 0:
            raise ValueError("g holds no observations (B = 0)")
        if not bool(torch.isfinite(batch).all()):
            raise ValueError("g holds NaN or Inf; the estimator is unchanged")
        if self.beta is None:  # running mean over all observations
            n, b = self.num_observations, batch.shape[0]
            old_weight, new_weight = n / (n + b), 1.0 / (n + b)
        else:  # one EMA step of the batch mean
            old_weight, new_weight = self.beta, (1.0 - self.beta) / batch.shape[0]
        # new_weight multiplies the *sum* over the batch of per-sample statistics.
        self._update(batch, old_weight, new_weight)
        self.num_updates += 1
        self.num_observations += batch.shape[0]
        return self

    @property
    def bias_correction(self) -> float:
        """Factor that turns the stored statistic into the estimate F (EMA debiasing)."""
        if self.beta is None or self.num_updates == 0:
            return 1.0
        return 1.0 / (1.0 - self.beta**self.num_updates)

    # -------------------------------------------------------------- products
    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """F v for v of shape (P,) or (K, P)."""
        block = self._vectors(v)
        return self._mv(block).reshape(v.shape)

    def inv_root_mv(self, v: torch.Tensor, power: float = 0.5) -> torch.Tensor:
        """(F + damping·I)^(-power) v for v of shape (P,) or (K, P)."""
        if not (math.isfinite(power) and power > 0.0):
            raise ValueError(f"Invalid power value: {power} (must be finite and > 0)")
        if self.damping == 0.0:
            raise ValueError("inv_root_mv needs damping > 0: F may be singular")
        block = self._vectors(v)
        return self._inv_root_mv(block, float(power)).reshape(v.shape)

    def _vectors(self, v: torch.Tensor) -> torch.Tensor:
        check_tensor("v", v, dtypes=_VECTOR_DTYPES, device=self.device, ndim=(1, 2))
        if v.shape[-1] != self.num_params:
            raise ValueError(
                f"v has {v.shape[-1]} entries per vector, expected num_params={self.num_params}"
            )
        return v.reshape(-1, self.num_params)

    # ------------------------------------------------------------ interface
    @abc.abstractmethod
    def _update(self, batch: torch.Tensor, old_weight: float, new_weight: float) -> None:
        """state ← old_weight · state + new_weight · Σ_{rows g of batch} stat(g)."""

    @abc.abstractmethod
    def _mv(self, vectors: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _inv_root_mv(self, vectors: torch.Tensor, power: float) -> torch.Tensor: ...

    @abc.abstractmethod
    def trace(self) -> float:
        """tr F."""

    @abc.abstractmethod
    def to_dense(self) -> torch.Tensor:
        """F as a (P, P) float64 matrix (for tests and small P)."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Bytes held by every state tensor."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_params={self.num_params}, beta={self.beta}, "
            f"damping={self.damping}, num_updates={self.num_updates})"
        )
