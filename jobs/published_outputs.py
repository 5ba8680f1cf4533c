"""The files the published code writes under ``--rerank_results_dir``.

Layout (as in the published ``rerank.py``)::

    <rerank_results_dir>/<dataset>/<per_class>/[<configuration>/]
        ranks/reranking_iter_<i>.pth   int64 [Q, G] ranking after i updates (torch.save)
        vis/reranking_iter_<i>.png     one strip per --query_idxs_to_vis: the query, then
                                       its top gallery images, green border = same label,
                                       red = other label, grey = unknown
        map_prec_ICFRR.png             mAP@all, mAP@200, P@100, P@200 over iterations
        metrics.csv                    the same numbers

The configuration folder is added only when the sweep has several
configurations. Every file is written to a temporary name and renamed
(``jobs.cli.write_output``: a device or FIFO in its place is written in place).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from jobs.cli import write_output

TILE = 128        # px, side of one image in a strip
BORDER = 5        # px
_GREEN, _RED, _GREY, _BLACK = (0, 200, 0), (230, 0, 0), (127, 127, 127), (0, 0, 0)
#: Series of the plot: (metric key, legend, colour), as in the published plot.
SERIES = (("map_all", "map@all", (31, 119, 180)), ("map_200", "map@200", (255, 127, 14)),
          ("p_100", "prec@100", (44, 160, 44)), ("p_200", "prec@200", (214, 39, 40)))


def _atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(path, write)


def results_dir(root: Path, dataset: str, per_class: int, config_label: str | None) -> Path:
    """``<root>/<dataset>/<per_class>[/<config_label>]``."""
    out = Path(root) / dataset / str(per_class)
    return out / config_label if config_label else out


def save_ranking(out_dir: Path, iteration: int, ranking: torch.Tensor) -> Path:
    """Write ``ranks/reranking_iter_<iteration>.pth`` (int64 [Q, G], best first)."""
    path = out_dir / "ranks" / f"reranking_iter_{iteration}.pth"
    _atomic(path, lambda f: torch.save(torch.as_tensor(ranking).cpu(), f))
    return path


def _tile(path: Path, colour: tuple[int, int, int]) -> Image.Image:
    with Image.open(path) as img:
        img = ImageOps.pad(img.convert("RGB"), (TILE, TILE), color=(255, 255, 255))
    return ImageOps.expand(img, border=BORDER, fill=colour)


def strips_image(
    ranking: np.ndarray,
    query_idxs: Sequence[int],
    n_gallery: int,
    query_paths: Sequence[Path],
    gallery_paths: Sequence[Path],
    labels_q: np.ndarray,
    labels_g: np.ndarray,
) -> Image.Image:
    """One row per query: the query (black border), then its top ``n_gallery`` gallery images.

    Args:
        ranking: int [Q, >= n_gallery] gallery indices, best first.
        query_idxs: Which queries to show, in order.
        n_gallery: How many gallery images per row.
        query_paths, gallery_paths: Image files by index.
        labels_q, labels_g: Labels (-1 unknown) choosing the border colours.
    """
    side = TILE + 2 * BORDER
    n = min(n_gallery, ranking.shape[1])
    canvas = Image.new("RGB", (side * (1 + n), side * len(query_idxs)), (255, 255, 255))
    for row, q in enumerate(query_idxs):
        canvas.paste(_tile(query_paths[q], _BLACK), (0, row * side))
        for col, g in enumerate(ranking[q, :n].tolist(), start=1):
            if labels_q[q] == -1 or labels_g[g] == -1:
                colour = _GREY
            else:
                colour = _GREEN if labels_q[q] == labels_g[g] else _RED
            canvas.paste(_tile(gallery_paths[g], colour), (col * side, row * side))
    return canvas


def save_strips(out_dir: Path, iteration: int, image: Image.Image) -> Path:
    """Write ``vis/reranking_iter_<iteration>.png``."""
    path = out_dir / "vis" / f"reranking_iter_{iteration}.png"
    _atomic(path, lambda f: image.save(f, format="PNG"))
    return path


def metrics_plot(metrics: Sequence[dict[str, float]], size: tuple[int, int] = (720, 440)) -> Image.Image:
    """A line chart of the four published metrics over iterations (0 = before re-ranking)."""
    width, height = size
    left, right, top, bottom = 64, 130, 30, 50
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    values = np.array([[m[k] for k, _, _ in SERIES] for m in metrics], dtype=float)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = max((hi - lo) * 0.08, 0.01)
    lo, hi = max(lo - pad, 0.0), min(hi + pad, 1.0)
    n_it = len(metrics) - 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(it: float, v: float) -> tuple[float, float]:
        return (left + plot_w * (it / max(n_it, 1)), top + plot_h * (1 - (v - lo) / (hi - lo)))

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(0, 0, 0))
    for v in np.linspace(lo, hi, 6):
        x, y = xy(0, v)
        draw.line([(left - 4, y), (left, y)], fill=(0, 0, 0))
        draw.text((left - 8, y), f"{v:.3f}", fill=(0, 0, 0), font=font, anchor="rm")
    step = max(1, round(n_it / 10))
    for it in range(0, n_it + 1, step):
        x, y = xy(it, lo)
        draw.line([(x, y), (x, y + 4)], fill=(0, 0, 0))
        draw.text((x, y + 8), str(it), fill=(0, 0, 0), font=font, anchor="mt")
    draw.text((left + plot_w / 2, height - 14), "Num Iterations", fill=(0, 0, 0), font=font,
              anchor="mm")
    for s, (_, label, colour) in enumerate(SERIES):
        pts = [xy(it, v) for it, v in enumerate(values[:, s]) if np.isfinite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = top + 10 + 18 * s
        draw.line([(width - right + 12, ly), (width - right + 36, ly)], fill=colour, width=3)
        draw.text((width - right + 42, ly), label, fill=(0, 0, 0), font=font, anchor="lm")
    return img


def save_metrics(out_dir: Path, metrics: Sequence[dict[str, float]]) -> list[Path]:
    """Write ``map_prec_ICFRR.png`` and ``metrics.csv`` (one row per iteration)."""
    png = out_dir / "map_prec_ICFRR.png"
    _atomic(png, lambda f: metrics_plot(metrics).save(f, format="PNG"))
    buf = io.StringIO()
    keys = list(metrics[0]) if metrics else []
    writer = csv.writer(buf)
    writer.writerow(["iteration", *keys])
    for it, m in enumerate(metrics):
        writer.writerow([it, *(repr(float(m[k])) for k in keys)])
    path_csv = out_dir / "metrics.csv"
    _atomic(path_csv, lambda f: f.write(buf.getvalue().encode()))
    return [png, path_csv]
