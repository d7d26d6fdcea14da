"""Importing every module of a package, so that whatever registers itself
where it is defined is found without a list of module names.

`fisherprec.benchmarks` and `fisherprec.tasks` find their members this way.
The public packages (`optim`, `fisher`, `ops`) import their modules by name
instead, so that type checkers and IDEs see every public class and op;
tests/test_discovery.py imports all of their modules this way and fails while
a registered variant is missing from those names (docs/adding-a-variant.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_submodules(package: str, path: Iterable[str]) -> list[str]:
    """Import every module of `package` (found on its ``__path__`` `path`)
    whose name does not start with an underscore, in name order, so that the
    registrations they run at import do not depend on the file system's
    listing order. Returns the imported module names."""
    names = sorted(m.name for m in pkgutil.iter_modules(list(path)) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
