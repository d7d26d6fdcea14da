"""Packages that hold variants find their modules themselves, so a new variant
is new files plus registry entries, never a line in a shared __init__."""

import sys

import pytest

import fisherprec
from fisherprec import ops
from fisherprec._discovery import export, import_submodules
from fisherprec.fisher import registry as fisher_registry
from fisherprec.optim import FisherOptimizer
from fisherprec.optim import registry as optim_registry


def test_every_registered_fisher_optimizer_is_exported_under_its_class_name():
    classes = {e.factory for e in optim_registry.REGISTRY.values() if isinstance(e.factory, type)}
    fisher_classes = {c for c in classes if issubclass(c, FisherOptimizer)}
    assert len(fisher_classes) >= 4
    for cls in fisher_classes:
        assert getattr(fisherprec.optim, cls.__name__) is cls
        assert cls.__name__ in fisherprec.optim.__all__


def test_every_registered_estimator_is_exported_under_its_class_name():
    for cls in set(fisher_registry.REGISTRY.values()):
        assert getattr(fisherprec.fisher, cls.__name__) is cls
        assert cls.__name__ in fisherprec.fisher.__all__


def test_every_op_family_is_reexported():
    assert {m.__name__.rsplit(".", 1)[-1] for m in ops.FAMILIES} == {
        e.family for e in ops.REGISTRY.values()
    }
    for family in ops.FAMILIES:
        for name in family.__all__:
            assert getattr(ops, name) is getattr(family, name)
            assert name in ops.__all__


def test_a_new_module_is_imported_in_name_order_and_private_ones_are_not(tmp_path, monkeypatch):
    package = tmp_path / "pkg_for_discovery"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "b_variant.py").write_text(
        "import pkg_for_discovery as p\np.seen = [*getattr(p, 'seen', []), 'b']\n"
    )
    (package / "a_variant.py").write_text(
        "import pkg_for_discovery as p\np.seen = [*getattr(p, 'seen', []), 'a']\n"
    )
    (package / "_private.py").write_text("raise AssertionError('a private module was imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import pkg_for_discovery

    try:
        assert import_submodules("pkg_for_discovery", pkg_for_discovery.__path__) == [
            "a_variant",
            "b_variant",
        ]
        assert pkg_for_discovery.seen == ["a", "b"]
    finally:
        for name in [n for n in sys.modules if n.startswith("pkg_for_discovery")]:
            del sys.modules[name]


def test_export_refuses_two_classes_under_one_name():
    first = type("Same", (), {})
    second = type("Same", (), {})
    namespace: dict[str, object] = {}
    assert export(namespace, [first]) == ["Same"]
    assert export(namespace, [first]) == ["Same"]  # the same class again is fine
    with pytest.raises(RuntimeError, match="two classes named 'Same'"):
        export(namespace, [second])
