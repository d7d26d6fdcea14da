r"""Fermat's principle as experimental design: A-optimal data paths (docs/theory.md,
"Fermat's principle and A-optimal design").

For the linear model y = xᵀβ + e, Var e = σ², fitted by least squares on a
design X ∈ R^{n×p} (rows x_i), the expected squared error on a test point
x ~ D with second moment M = E[x xᵀ] is

.. math::
    \varepsilon(X) = \sigma^2 + \sigma^2 \operatorname{tr}\big((X^\top X)^{-1} M\big).

With unit-norm rows and M = I/p, Jensen gives ε ≥ σ² + σ²p/n, attained iff
XᵀX = (n/p) I: the optimal path to an error δ needs ⌈pσ²/(δ − σ²)⌉ samples
(p for δ = 2σ², 2p for δ = 1.5σ²), while a random path needs about twice as
many. This package computes these quantities, builds optimal designs for every
n ≥ p, and selects data A-optimally from a pool (greedy with a native O(N·p)
Sherman–Morrison step, Frank–Wolfe with a certificate, and Fisher-based active
selection for nonlinear models).

Example:
    >>> import fisherprec as fp
    >>> fp.design.min_samples(2.0, p=64, sigma2=1.0), fp.design.min_samples(1.5 * 0.7, 64, 0.7)
    (64, 128)
    >>> X = fp.design.optimal_design(70, 64)            # 70 unit rows, XᵀX = (70/64) I
    >>> round(fp.design.generalization_error(X, 1.0), 12) == round(fp.design.min_error(70, 64, 1.0), 12)
    True

The package is split by topic; every name is re-exported here, so
``fisherprec.design.X`` is the one public path:

* :mod:`~fisherprec.design._closed_forms`: :func:`generalization_error`,
  :func:`min_error`, :func:`min_samples`, :func:`optimal_design`,
  :func:`plan` (:class:`DesignPath`), :func:`path_errors`, :func:`t_sample`;
* :mod:`~fisherprec.design._greedy_selection`: :func:`greedy` (:class:`GreedyResult`);
* :mod:`~fisherprec.design._frank_wolfe`: :func:`frank_wolfe` (:class:`FrankWolfeResult`);
* :mod:`~fisherprec.design._active`: :func:`fisher_active` (:class:`ActiveResult`);
* :mod:`~fisherprec.design._common`: validation and linear algebra they share.
"""

from __future__ import annotations

from fisherprec._doctests import doctest_targets
from fisherprec.design import _active, _greedy_selection
from fisherprec.design._active import ActiveResult, fisher_active
from fisherprec.design._closed_forms import (
    DesignPath,
    generalization_error,
    min_error,
    min_samples,
    optimal_design,
    path_errors,
    plan,
    t_sample,
)
from fisherprec.design._frank_wolfe import FrankWolfeResult, frank_wolfe
from fisherprec.design._greedy_selection import GreedyResult, greedy

# Private entry points used outside the package: fisherprec.benchmarks.design
# times _greedy with a torch scoring step; tests check _fisher_factors.
_fisher_factors = _active._fisher_factors
_greedy = _greedy_selection._greedy

__all__ = [
    "ActiveResult",
    "DesignPath",
    "FrankWolfeResult",
    "GreedyResult",
    "fisher_active",
    "frank_wolfe",
    "generalization_error",
    "greedy",
    "min_error",
    "min_samples",
    "optimal_design",
    "path_errors",
    "plan",
    "t_sample",
]

# Run the examples of the re-exported names as the package's own (see
# fisherprec._doctests for why).
__test__ = doctest_targets(globals(), __all__)
