r"""The Hamiltonian view of reinforcement learning
(docs/theory.md, "The Hamiltonian view of reinforcement learning").

Deterministic control, ``s_{k+1} = f(s_k, a_k)``, with the objective

.. math::
    J = h(s_n) + \sum_{k<n} r(s_k, a_k, k)

**maximised**: ``r`` is a reward and ``h`` a terminal reward (a cost c enters
as r = −c). With multipliers λ the stationarity conditions of the Lagrangian
are the discrete Pontryagin principle, in terms of the Hamiltonian
H^(k)(s, a, λ) = r(s, a, k) + f(s, a)ᵀλ:

* λ_n = ∇h(s_n),
* λ_k = ∂r/∂s (s_k, a_k, k) + (∂f/∂s (s_k, a_k))ᵀ λ_{k+1} = ∂H^(k)/∂s,
* ∂H^(k)/∂a (s_k, a_k, λ_{k+1}) = 0,

and at the optimum λ_k = ∇V_k(s_k), the gradient of the value-to-go: the
Bellman equation V_k(s) = max_u [r(s, u, k) + V_{k+1}(f(s, u))].
:func:`pontryagin` solves the first system; :func:`lqr` gives V in closed form
for linear dynamics and quadratic rewards, which makes λ_k = ∇V_k(s_k)
checkable. For LQR the convention is r(s, a) = −½(sᵀQs + aᵀRa),
h(s) = −½ sᵀQ_f s, so V_k(s) = −½ sᵀP_k s and λ_k = −P_k s_k.

Finite MDPs (stochastic transitions, discount γ ∈ [0, 1)) are solved by
:func:`value_iteration`, :func:`policy_iteration` and
:func:`q_value_iteration` on a native Bellman backup
(:func:`fisherprec.ops.bellman_backup`); :func:`from_gymnasium` reads a
toy-text environment's transition table into an :class:`MDP`, which every
solver takes as it is (``value_iteration(mdp, gamma)``).

The package is split by topic; every name is re-exported here, so
``fisherprec.bellman.X`` is the one public path:

* :mod:`~fisherprec.bellman._pontryagin`: the Hamiltonian and :func:`pontryagin`;
* :mod:`~fisherprec.bellman._lqr`: :func:`lqr` and :class:`LQRSolution`;
* :mod:`~fisherprec.bellman._mdp`: :class:`MDP`, :class:`CSRTransitions`,
  :class:`MDPSolution`, input validation and :func:`random_mdp`;
* :mod:`~fisherprec.bellman._solvers`: value, Q-value and policy iteration;
* :mod:`~fisherprec.bellman._gym`: :func:`from_gymnasium` (optional gymnasium).
"""

from __future__ import annotations

from fisherprec._doctests import doctest_targets
from fisherprec.bellman import _pontryagin
from fisherprec.bellman._gym import from_gymnasium
from fisherprec.bellman._lqr import LQRSolution, lqr
from fisherprec.bellman._mdp import MDP, CSRTransitions, MDPSolution, random_mdp
from fisherprec.bellman._pontryagin import PontryaginResult, hamiltonian, pontryagin
from fisherprec.bellman._solvers import policy_iteration, q_value_iteration, value_iteration

# The callable types of pontryagin's arguments: importable from here as before
# the split, though not in __all__.
Dynamics, Reward, Terminal = _pontryagin.Dynamics, _pontryagin.Reward, _pontryagin.Terminal

__all__ = [
    "MDP",
    "CSRTransitions",
    "LQRSolution",
    "MDPSolution",
    "PontryaginResult",
    "from_gymnasium",
    "hamiltonian",
    "lqr",
    "policy_iteration",
    "pontryagin",
    "q_value_iteration",
    "random_mdp",
    "value_iteration",
]

# Run the examples of the re-exported names as the package's own (see
# fisherprec._doctests for why).
__test__ = doctest_targets(globals(), __all__)
