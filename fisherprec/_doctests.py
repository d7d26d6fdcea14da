"""Doctest discovery for packages that re-export names from private submodules
(:mod:`fisherprec.bellman`, :mod:`fisherprec.design`).

``doctest.DocTestFinder().find(package)`` (and ``doctest.testmod(package)``)
only look at objects whose ``__module__`` is the package itself. The
re-exported functions and classes keep their submodule's ``__module__``, so
that ``inspect.getsource`` and ``typing.get_type_hints`` still find their file
and globals; a package lists them in its ``__test__`` instead, which doctest
searches whatever their module. Each submodule's own doctests run as well
(``tests/test_docs.py`` walks every module).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any


def doctest_targets(namespace: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A ``__test__`` dict: each named object and, for a class, each of its
    methods whose docstring has examples (doctest does not recurse into the
    methods of a class from another module).

    Example:
        >>> from fisherprec import bellman
        >>> "CSRTransitions.from_dense" in doctest_targets(vars(bellman), ["CSRTransitions"])
        True
    """
    targets: dict[str, Any] = {}
    for name in names:
        obj = namespace[name]
        targets[name] = obj
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            member = getattr(member, "__func__", member)  # classmethod, staticmethod
            if inspect.isfunction(member) and ">>>" in (member.__doc__ or ""):
                targets[f"{name}.{attr}"] = member
    return targets
