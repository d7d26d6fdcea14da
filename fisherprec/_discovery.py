"""Importing every module of a package, so that a variant that registers
itself where it is defined needs no line in a shared ``__init__``.

`fisherprec.optim`, `fisherprec.fisher`, `fisherprec.benchmarks` and
`fisherprec.tasks` all find their members this way: adding a Fisher variant
is new files plus one registry entry per registry (docs/adding-a-variant.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, MutableMapping


def import_submodules(package: str, path: Iterable[str]) -> list[str]:
    """Import every module of `package` (found on its ``__path__`` `path`)
    whose name does not start with an underscore, in name order, so that the
    registrations they run at import do not depend on the file system's
    listing order. Returns the imported module names."""
    names = sorted(m.name for m in pkgutil.iter_modules(list(path)) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


def export(namespace: MutableMapping[str, object], members: Iterable[type]) -> list[str]:
    """Bind each class in `members` under its own name in `namespace` (a
    package's ``globals()``) and return those names, for ``__all__``. Two
    different classes under one name are an error, not a silent shadowing."""
    exported: list[str] = []
    for cls in members:
        bound = namespace.get(cls.__name__)
        if bound is not None and bound is not cls:
            raise RuntimeError(f"two classes named {cls.__name__!r} would be exported")
        namespace[cls.__name__] = cls
        exported.append(cls.__name__)
    return sorted(set(exported))
