"""Chart builders: the specs encode what the pages claim (best cell, order, outcomes)."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard import charts


def _grid() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": [1, 2, 3, 4], "kg": [8, 8, 16, 16], "kq": [5, 10, 5, 10],
        "beta": [1.0] * 4, "map_all_before": [0.3] * 4,
        "map_all_after": [0.31, 0.36, 0.28, 0.33], "best_iteration": [1, 4, 1, 2],
    }).assign(map_all_gain=lambda d: d.map_all_after - d.map_all_before)


def test_heatmap_frames_the_best_cell_and_centres_colours_on_zero() -> None:
    spec = charts.gain_heatmap(_grid()).to_dict()
    datasets = spec["datasets"]
    framed = [layer for layer in spec["layer"] if layer["mark"].get("stroke") == "black"]
    assert len(framed) == 1
    rows = datasets[framed[0]["data"]["name"]]
    assert [(r["kg"], r["kq"]) for r in rows] == [(8, 10)]
    scale = spec["layer"][0]["encoding"]["color"]["scale"]
    assert scale["domain"] == pytest.approx([-0.06, 0.06])  # symmetric: white means no change


def test_dumbbell_sorts_classes_by_gain() -> None:
    cls = pd.DataFrame({"label": [0, 1, 2], "class_name": ["a", "b", "c"], "n_queries": [1] * 3,
                        "map_before": [0.5, 0.4, 0.6], "map_after": [0.6, 0.3, 0.62]})
    cls["gain"] = cls.map_after - cls.map_before
    spec = charts.class_dumbbell(cls).to_dict()
    assert spec["layer"][0]["encoding"]["y"]["sort"] == ["b", "c", "a"]


def test_scatter_labels_each_query_by_who_wins() -> None:
    pairs = pd.DataFrame({"query_idx": [0, 1, 2], "class_name": ["a"] * 3,
                          "ap_a": [0.5, 0.2, 0.7], "ap_b": [0.4, 0.2, 0.9]})
    spec = charts.ap_scatter(pairs, "A", "B").to_dict()
    rows = spec["datasets"][spec["layer"][1]["data"]["name"]]
    assert [r["outcome"] for r in rows] == ["A better", "tie", "B better"]


def test_metric_lines_has_one_panel_per_metric() -> None:
    by_iter = pd.DataFrame({"run_id": [1, 1], "iteration": [0, 1], "map_all": [0.3, 0.4],
                            "map_200": [0.3, 0.4], "p_25": [0.2, 0.3], "p_100": [0.1, 0.2],
                            "p_200": [0.1, 0.1]})
    spec = charts.metric_lines(by_iter, {1: "run one"}).to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    assert {r["metric"] for r in rows} == {"mAP@all", "mAP@200", "P@25", "P@100", "P@200"}
    assert {r["run"] for r in rows} == {"run one"}


def _icfrr_grid() -> pd.DataFrame:
    """A 2 x 2 x 2 grid over KG, KQ, beta at T 1 and 2, one variant, plus a run of the other
    variant and a duplicate of run 1's configuration (a later run)."""
    rows, run = [], 0
    for kg in (4, 8):
        for kq in (3, 6):
            for beta in (0.5, 1.0):
                run += 1
                for t in (1, 2):
                    rows.append({"run_id": run, "iteration": t, "kg": kg, "kq": kq, "beta": beta,
                                 "n_iter": t, "variant": "reference",
                                 "map_all": kg / 100 + kq / 1000 + beta / 10 + t / 10000})
    rows.append({"run_id": 90, "iteration": 1, "kg": 6, "kq": 3, "beta": 0.5, "n_iter": 1,
                 "variant": "paper", "map_all": 0.9})
    rows.append({"run_id": 91, "iteration": 1, "kg": 4, "kq": 3, "beta": 0.5, "n_iter": 1,
                 "variant": "reference", "map_all": 0.0})
    return pd.DataFrame(rows)


def test_sensitivity_slices_hold_the_other_parameters_at_the_choice() -> None:
    grid = _icfrr_grid()
    # the choice: KG 8, KQ 3, beta 0.5 (run 5) at T 2
    got = charts.sensitivity_slices(grid, 5, 2)
    by = {p: g.sort_values("value") for p, g in got.groupby("parameter")}
    assert set(by) == {"KG", "KQ", "β", "T (iteration)"}
    # KG varies with KQ 3, beta 0.5, T 2, variant reference: runs 1 (KG 4) and 5 (KG 8);
    # the paper-variant run 90 (KG 6) and the later duplicate run 91 are left out
    assert list(by["KG"].value) == [4, 8] and list(by["KG"].run_id) == [1, 5]
    assert list(by["KQ"].value) == [3, 6] and list(by["KQ"].run_id) == [5, 7]
    assert list(by["β"].value) == [0.5, 1.0] and list(by["β"].run_id) == [5, 6]
    assert list(by["T (iteration)"].value) == [1, 2] and set(by["T (iteration)"].run_id) == {5}
    for g in by.values():
        expect = [grid[(grid.run_id == r) & (grid.iteration == i)].map_all.item()
                  for r, i in zip(g.run_id, g.iteration)]
        assert list(g.map_all) == pytest.approx(expect)
        assert g.chosen.sum() == 1
        assert g[g.chosen].run_id.item() == 5 and g[g.chosen].iteration.item() == 2
    assert charts.sensitivity_slices(grid, 5, 7).empty   # not a stored candidate


def test_sensitivity_chart_rings_the_choice_and_interval_chart_draws_each_row() -> None:
    slices = charts.sensitivity_slices(_icfrr_grid(), 5, 2)
    spec = charts.sensitivity(slices, "t").to_dict()
    assert spec["facet"]["field"] == "parameter"
    table = pd.DataFrame({"label": ["Initial ranking", "ICFRR"], "map_all": [0.5, 0.7],
                          "map_all_ci_lo": [0.4, float("nan")], "map_all_ci_hi": [0.6, float("nan")]})
    spec = charts.method_intervals(table, "t").to_dict()
    bars, dots = spec["layer"]
    assert [r["label"] for r in spec["datasets"][bars["data"]["name"]]] == ["Initial ranking"]
    assert [r["label"] for r in spec["datasets"][dots["data"]["name"]]] == ["Initial ranking", "ICFRR"]


def test_sensitivity_draws_a_methods_numeric_registry_parameters_and_holds_its_text_ones() -> None:
    from icfrr.registry import METHODS

    for m in METHODS:
        drawn, held = charts.sensitivity_params(m)
        assert list(drawn) == [p.name for p in m.params if p.kind in (int, float)]
        assert held == tuple(p.name for p in m.params if p.kind is str)
    drawn, held = charts.sensitivity_params(next(m for m in METHODS if m.iterative))
    assert (drawn, held) == ({"kg": "KG", "kq": "KQ", "beta": "β", "n_iter": "T (iteration)"}, ("variant",))
    assert charts.sensitivity_params(next(m for m in METHODS if m.key == "k_reciprocal"))[0] == \
        {"k1": "k1", "k2": "k2", "lambda_value": "λ"}   # Param.symbol
