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
