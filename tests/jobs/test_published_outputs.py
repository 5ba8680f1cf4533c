"""jobs.published_outputs: the files of the published code's --rerank_results_dir."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import jobs.published_outputs as pub


def _solid(path: Path, colour: tuple[int, int, int], size=(40, 30)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def test_strips_show_the_ranked_images_with_label_borders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    g_colours = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(6)]
    gallery = [_solid(tmp_path / f"g{j}.png", c) for j, c in enumerate(g_colours)]
    queries = [_solid(tmp_path / f"q{i}.png", (i * 50, 0, 0), (20, 50)) for i in range(3)]
    labels_q = np.array([0, 1, -1])
    labels_g = np.array([0, 1, 0, -1, 1, 0])
    ranking = np.array([rng.permutation(6) for _ in range(3)])
    img = pub.strips_image(ranking, [2, 0], 4, queries, gallery, labels_q, labels_g)
    side = pub.TILE + 2 * pub.BORDER
    assert img.size == (side * 5, side * 2)
    for row, q in enumerate([2, 0]):
        assert img.getpixel((1, row * side + 1)) == (0, 0, 0)  # query: black border
        for col in range(1, 5):
            g = ranking[q, col - 1]
            border = img.getpixel((col * side + 1, row * side + 1))
            if labels_q[q] == -1 or labels_g[g] == -1:
                assert border == (127, 127, 127)
            elif labels_q[q] == labels_g[g]:
                assert border == (0, 200, 0)
            else:
                assert border == (230, 0, 0)
            centre = img.getpixel((col * side + side // 2, row * side + side // 2))
            assert centre == g_colours[g]


def test_metrics_plot_and_csv(tmp_path: Path) -> None:
    metrics = [{"map_all": 0.3 + 0.02 * i, "map_200": 0.35 + 0.01 * i, "p_25": 0.5,
                "p_100": 0.4 - 0.01 * i, "p_200": math.nan if i == 2 else 0.33} for i in range(6)]
    png, path_csv = pub.save_metrics(tmp_path, metrics)
    with Image.open(png) as img:
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 20)}
    for _, _, colour in pub.SERIES:
        assert colour in colours
    rows = list(csv.DictReader(path_csv.open()))
    assert [int(r["iteration"]) for r in rows] == list(range(6))
    for r, m in zip(rows, metrics):
        for k, v in m.items():
            assert (math.isnan(v) and r[k] == "nan") or float(r[k]) == v
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map_prec_ICFRR.png", "metrics.csv"]


def test_ranking_files(tmp_path: Path) -> None:
    out = pub.results_dir(tmp_path, "custom", -1, None)
    assert out == tmp_path / "custom" / "-1"
    ranking = torch.randperm(30).reshape(3, 10)
    path = pub.save_ranking(out, 4, ranking)
    assert path == out / "ranks" / "reranking_iter_4.pth"
    assert torch.equal(torch.load(path, weights_only=True), ranking)
    assert [p.name for p in path.parent.iterdir()] == ["reranking_iter_4.pth"]  # no temp left
