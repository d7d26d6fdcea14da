"""fisherprec: Fisher preconditioning for PyTorch.

Diagonal, block-diagonal, low-rank and Kronecker-factored empirical Fisher
approximations with fused native kernels, the optimizers built on them
(``fisherprec.optim``), the estimators themselves (``fisherprec.fisher``) and
the theory API of "Physics of Learning" (``lagrangian``, ``kinematics``,
``bellman``, ``design``).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from fisherprec import _C
from fisherprec._version import __version__

__all__ = ["__version__", "build_info", "cuda_available"]

# Submodules load on first access: `import fisherprec` stays cheap, and a new
# module needs no edit here.
_SUBMODULES = frozenset(
    {"ops", "fisher", "optim", "lagrangian", "kinematics", "bellman", "design", "tasks", "cli"}
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"fisherprec.{name}")
    raise AttributeError(f"module 'fisherprec' has no attribute {name!r}")


def _cuda_device_count() -> tuple[int, str | None]:
    """(usable devices, why none) as seen by the native CUDA runtime."""
    if not _C.build_info()["cuda_built"]:
        return 0, "fisherprec was built without CUDA kernels"
    try:
        count = int(_C.cuda_device_count())
    except RuntimeError as err:  # e.g. no driver: reported, never a crash
        return 0, str(err)
    return count, None if count else "no CUDA device found"


def cuda_available() -> bool:
    """True when the CUDA kernels were built *and* a CUDA device is usable by
    both them and torch."""
    count, _ = _cuda_device_count()
    return count > 0 and torch.cuda.is_available()


def build_info() -> dict[str, Any]:
    """How this installation was built and what it can use right now.

    Keys: ``version``, ``compiler``, ``openmp``, ``openmp_max_threads``,
    ``threads`` (what the kernels will use: torch's intra-op thread count),
    ``cuda_built``, ``cuda_archs``, ``cuda_compiler_version``,
    ``cuda_available``, ``cuda_unavailable_reason``, ``torch``.
    """
    info: dict[str, Any] = dict(_C.build_info())
    count, reason = _cuda_device_count()
    info["threads"] = torch.get_num_threads()
    info["cuda_available"] = count > 0 and torch.cuda.is_available()
    if count > 0 and not torch.cuda.is_available():
        reason = f"torch {torch.__version__} cannot use CUDA"
    info["cuda_unavailable_reason"] = None if info["cuda_available"] else reason
    info["torch"] = torch.__version__
    return info
