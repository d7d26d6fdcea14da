"""Every variant a module of fisherprec.optim, fisherprec.fisher or
fisherprec.ops registers is exported by its package. The packages import their
modules by name (so that type checkers see every public name); these tests
import every module the package holds and fail while one registers something
the package's names leave out."""

import sys

import fisherprec
from fisherprec import ops
from fisherprec._discovery import import_submodules
from fisherprec.fisher import registry as fisher_registry
from fisherprec.optim import FisherOptimizer
from fisherprec.optim import registry as optim_registry


def test_the_public_names_of_each_package_are_all_there():
    assert {"BlockFisher", "DiagFisher", "KronFisher", "LowRankFisher", "FisherOptimizer"} <= set(
        fisherprec.optim.__all__
    )
    assert {"Block", "Dense", "Diag", "Kron", "LowRank", "empirical", "per_sample_grads"} <= set(
        fisherprec.fisher.__all__
    )
    families = {m.__name__.rsplit(".", 1)[-1] for m in ops.FAMILIES}
    assert {"bellman", "block", "design", "diag", "eigh", "lowrank", "reduce"} <= families
    for name in (
        "bellman_backup",
        "block_inv_root_",
        "diag_step_",
        "lowrank_stats",
        "sum_of_squares",
        "design_score_step",
        "symmetric_eigh",
        "ROOT_OK",
        "MAX_BLOCK_SIZE",
        "LOWRANK_MAX_RANK",
    ):
        assert name in ops.__all__ and hasattr(ops, name), name


def test_every_fisher_optimizer_any_module_registers_is_exported():
    import_submodules("fisherprec.optim", fisherprec.optim.__path__)
    for entry in optim_registry.REGISTRY.values():
        cls = entry.factory
        if isinstance(cls, type) and issubclass(cls, FisherOptimizer):
            assert getattr(fisherprec.optim, cls.__name__, None) is cls, cls.__name__
            assert cls.__name__ in fisherprec.optim.__all__, cls.__name__


def test_every_estimator_any_module_registers_is_exported():
    import_submodules("fisherprec.fisher", fisherprec.fisher.__path__)
    for cls in set(fisher_registry.REGISTRY.values()):
        assert getattr(fisherprec.fisher, cls.__name__, None) is cls, cls.__name__
        assert cls.__name__ in fisherprec.fisher.__all__, cls.__name__


def test_every_op_family_is_listed_and_reexported():
    import_submodules("fisherprec.ops", ops.__path__)
    defining = {e.family for e in ops.REGISTRY.values()}  # modules that define ops
    assert {m.__name__.rsplit(".", 1)[-1] for m in ops.FAMILIES} == defining
    for family in ops.FAMILIES:
        for name in family.__all__:
            assert getattr(ops, name) is getattr(family, name), name
            assert name in ops.__all__, name


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
