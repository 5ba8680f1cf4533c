"""Text formatters (rank movement, p-values, run labels and parameters, the gallery graph) and
the launch flags."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dashboard.data import db_from_args
from dashboard.format import movement, p_value, signed


@pytest.mark.parametrize(("side", "before", "after", "text"), [
    ("after", 24, 10, "up 14"),
    ("after", 3, 7, "down 4"),
    ("after", 5, 5, "same"),
    ("after", None, 2, "new"),
    ("after", pd.NA, 2, "new"),
    ("after", math.nan, 2, "new"),
    ("before", 2, None, "dropped"),
    ("before", 2, 9, "down 7"),
    ("before", 9, 1, "up 8"),
])
def test_movement(side: str, before: object, after: object, text: str) -> None:
    assert movement(side, before, after) == text


def test_movement_needs_the_items_own_rank() -> None:
    with pytest.raises(ValueError):
        movement("after", 3, None)


def test_p_value_and_signed() -> None:
    assert p_value(math.nan) == "n/a"
    assert p_value(0.01234) == "0.0123"
    assert p_value(3e-7) == "3.00e-07"
    assert signed(0.5) == "+0.5000"
    assert signed(-0.00123, 3) == "-0.001"


def test_db_flag_after_double_dash() -> None:
    assert db_from_args(["--db", "x.duckdb"]) == "x.duckdb"
    assert db_from_args(["--other", "1"]) is None
    assert db_from_args(["--d", "x"]) is None  # no abbreviations


def test_url_values_match_options() -> None:
    from dashboard.state import matches
    assert matches(1.0, "1") and matches(1.0, "1.0") and matches(3, "3")
    assert matches("all", "all") and not matches("all", "1")
    assert not matches(0.5, "1") and not matches(2, None)


def test_run_labels_name_the_method_and_leave_out_null_parameters() -> None:
    from types import SimpleNamespace as Row

    from dashboard.format import run_label

    icfrr = Row(run_id=3, dataset="demo", method="icfrr", kg=8, kq=6, beta=0.5, n_iter=4,
                variant="paper", params='{"kg": 8, "kq": 6, "beta": 0.5, "n_iter": 4}')
    assert run_label(icfrr) == "#3 demo · ICFRR · KG 8, KQ 6, β 0.5, T 4, variant paper"
    baseline = Row(run_id=11, dataset="demo", method="k_reciprocal", kg=pd.NA, kq=pd.NA,
                   beta=math.nan, n_iter=1, variant=None,
                   params='{"k1": 20, "k2": 6, "lambda_value": 0.3, "method": "k_reciprocal"}')
    assert run_label(baseline) == "#11 demo · k-reciprocal · k1 20, k2 6, λ 0.3"
    odd = Row(run_id=12, dataset="d", method="mine", kg=None, kq=None, beta=None, n_iter=1,
              variant=None, params="not json")
    assert run_label(odd) == "#12 d · mine"


def test_class_label_never_shows_none() -> None:
    from dashboard.format import class_label

    assert class_label("cat", 2) == "cat"
    assert class_label(None, 2) == "class 2"
    assert class_label(float("nan"), 7.0) == "class 7"      # a NULL name as pandas reads it
    assert class_label("", 3) == "class 3"
    assert class_label(None, -1) == "unknown class"
    assert class_label(None, float("nan")) == "unknown class"   # an item the store does not list


def test_names_from_data_are_cut_to_one_short_line() -> None:
    from dashboard.format import NAME_LIMIT, class_label, short

    long = "x" * 1000
    assert len(short(long)) == NAME_LIMIT and short(long).endswith("…")
    assert short("a\nb") == "a b" and short("ok") == "ok"
    assert class_label(long, 1) == short(long)
    assert len(short("y" * 80, 60)) == 60


def test_run_params_complete_a_run_from_its_methods_registry_parameters_only() -> None:
    from types import SimpleNamespace as Row

    from dashboard.format import run_params
    from icfrr.registry import method

    # ICFRR's columns fill what the JSON lacks; the JSON wins where it has the name
    icfrr = Row(method="icfrr", kg=8, kq=6, beta=0.5, n_iter=4, variant="paper", params='{"kg": 9}')
    assert run_params(icfrr) == {"kg": 9, "kq": 6, "beta": 0.5, "n_iter": 4, "variant": "paper"}
    assert set(run_params(icfrr)) == {p.name for p in method("icfrr").params}
    # a baseline's row carries ICFRR's columns (NULL) and a column no registry method names
    base = Row(method="dba", kg=7, kq=None, beta=math.nan, n_iter=1, variant=None, seconds=2.0,
               dba_n=5, params='{"dba_alpha": 3.0}')
    assert run_params(base) == {"dba_alpha": 3.0, "dba_n": 5}
    # a method outside the registry: its JSON only
    assert run_params(Row(method="mine", kg=3, params='{"x": 1}')) == {"x": 1}


@pytest.mark.parametrize(("params", "text"), [
    ('{"graph": {"kind": "ivf", "params": {"nlist": 8}}, "graph_recall_at_kg": 0.93125}',
     "graph: ivf, recall@KG 0.9313"),
    ('{"graph": {"kind": "hnsw"}, "graph_recall_at_kg": 1}', "graph: hnsw, recall@KG 1.0000"),
    ('{"graph": {"kind": "ivf"}}', "graph: ivf, recall@KG n/a"),
    ('{"graph": {"kind": "exact", "params": {}}}', ""),
    ('{"knn_index": {"kind": "hnsw"}, "knn_recall_at_k": 0.98, "knn_recall_k": 20}', "k-NN index: hnsw, recall@20 0.9800"),
    ('{"knn_index": {"kind": "ivf"}, "knn_recall_at_k": NaN}', "k-NN index: ivf, recall@k n/a"),
    ('{"knn_index": {"kind": "exact"}}', ""),
    ('{"kg": 8}', ""),
    ('{"graph": "ivf"}', ""),
    ("not json", ""),
    (None, ""),
])
def test_graph_text_names_an_approximate_graph_and_its_recall(params: object, text: str) -> None:
    from types import SimpleNamespace as Row

    from dashboard.format import graph_text, run_label

    assert graph_text(Row(params=params)) == text
    row = Row(run_id=5, dataset="demo", method="icfrr", kg=8, kq=6, beta=0.5, n_iter=4,
              variant="reference", params=params, map_all_before=0.4)
    assert run_label(row) == "#5 demo · ICFRR · KG 8, KQ 6, β 0.5, T 4" + (f" · {text}" if text else "")


def test_launch_flags_are_parsed_once_per_command_line(monkeypatch) -> None:
    import argparse

    from dashboard import data

    calls = []
    parse = argparse.ArgumentParser.parse_known_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args",
                        lambda self, *a, **k: calls.append(a) or parse(self, *a, **k))
    monkeypatch.setattr("sys.argv", ["app.py", "--db", "x.duckdb", "--results-dir", "r", "--debug",
                                     "--image-root", "i"])
    data._parse.cache_clear()
    # what one page run reads: the debug switch, the allowed stores, the image roots
    assert data.debug_from_args() is True
    stores = data.Stores.from_launch()
    assert stores.default.name == "x.duckdb" and stores.folder.name == "r"
    assert data.image_roots()[1].name == "i"
    assert data.default_db() == "x.duckdb" and data.results_dir_from_args() == "r"
    assert len(calls) == 1
    monkeypatch.setattr("sys.argv", ["app.py"])   # another command line is parsed afresh
    assert data.db_from_args() is None and len(calls) == 2
