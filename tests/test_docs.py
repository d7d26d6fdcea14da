"""Every example in the docs runs: the doctests of each fisherprec module and
of each page under docs/ (``>>>`` lines; a page without any is skipped)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

import fisherprec

DOCS = Path(__file__).resolve().parents[1] / "docs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(fisherprec.__path__, "fisherprec.")
    if not m.name.endswith("__main__")
)
PAGES = sorted(p.name for p in DOCS.glob("*.md") if ">>> " in p.read_text())


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_run(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=FLAGS, report=True)
    assert failures == 0


@pytest.mark.parametrize("page", PAGES)
def test_docs_page_examples_run(page):
    failures, _ = doctest.testfile(str(DOCS / page), module_relative=False, optionflags=FLAGS)
    assert failures == 0
