"""The docstring examples run and print what they show: the one mechanism for every example.

A module is run when its source holds an example (``>>> ``), so an example
added anywhere under ``icfrr/`` is tested without being listed here; the public
API's main functions must each show one.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import icfrr

ROOT = Path(icfrr.__file__).parent
MODULES = sorted(
    ".".join(("icfrr", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    for p in ROOT.rglob("*.py")
    if ">>> " in p.read_text(encoding="utf-8")
)
#: Functions whose docstring must show an example (as ``module:attribute``; ``ecn`` and ``k_reciprocal``
#: by their modules, whose names hide the functions' on ``icfrr.baselines`` once imported).
SHOWN = ["icfrr:rerank", "icfrr:rerank_chunks", "icfrr:neighbor_graph", "icfrr:neighbor_graph_from_features",
         "icfrr:evaluate", "icfrr:explain", "icfrr.baselines.k_reciprocal_encoding:k_reciprocal", "icfrr.baselines.expanded_cross_neighbourhood:ecn",
         "icfrr.baselines:alpha_qe", "icfrr.baselines:dba"]


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_of_a_module_print_what_they_show(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    assert runner.tries > 0, f"{name} has '>>> ' in its source but no example doctest finds"
    assert runner.failures == 0, "".join(report)


@pytest.mark.parametrize("target", SHOWN)
def test_the_public_api_shows_an_example_that_runs(target: str) -> None:
    module, attribute = target.split(":")
    fn = getattr(importlib.import_module(module), attribute)
    assert ">>> " in (fn.__doc__ or ""), f"{target} has no example in its docstring"
    assert fn.__module__ in MODULES       # so the test above runs it
