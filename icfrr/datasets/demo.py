"""A generated sketch-to-photo demo dataset: no download, deterministic from a seed.

Twelve classes of simple objects (house, tree, fish...). Queries are sketch-like
line drawings (dark, jittered strokes on white); gallery items are photo-like
renderings of the same objects (filled, coloured, on textured backgrounds, with
varied position, scale and rotation). Written in the ``folder`` layout
(``query/<class>/*.png``, ``gallery/<class>/*.jpg``) so the folder loader reads it.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from ..owners import owner_tag, remove_stale
from .base import DatasetError

#: Bumped whenever the generator's output changes, so old folders are regenerated.
GENERATOR_VERSION = 1
#: Default location, relative to the current directory (git-ignored).
DEFAULT_ROOT = Path("data/demo")
N_QUERY_PER_CLASS = 10
N_GALLERY_PER_CLASS = 60
IMAGE_SIZE = 128
_SS = 2  # supersampling factor for anti-aliased drawing
_MARKER = "DEMO_COMPLETE.json"


@dataclass(frozen=True)
class Part:
    """A polyline in unit coordinates (x right, y down), filled when closed."""

    points: np.ndarray      # float [N, 2]
    closed: bool
    color: tuple[float, float, float]  # HSV in [0, 1], the photo's fill colour
    width: float = 0.03     # stroke width of open parts in photos, unit coordinates


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 36, a0: float = 0.0,
             a1: float = 2 * np.pi) -> np.ndarray:
    t = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * np.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _poly(*pts: tuple[float, float]) -> np.ndarray:
    return np.array(pts, float)


def _house(r: np.random.Generator) -> list[Part]:
    roof_h = r.uniform(0.2, 0.3)
    wall = (r.uniform(0, 0.1), 0.3, 0.75)
    return [Part(_rect(0.2, 0.45, 0.8, 0.85), True, wall),
            Part(_poly((0.12, 0.45), (0.5, 0.45 - roof_h), (0.88, 0.45)), True, (0.0, 0.75, 0.6)),
            Part(_rect(0.42, 0.62, 0.56, 0.85), True, (0.08, 0.7, 0.35)),
            Part(_rect(0.26, 0.52, 0.37, 0.63), True, (0.58, 0.5, 0.9)),
            Part(_rect(0.63, 0.52, 0.74, 0.63), True, (0.58, 0.5, 0.9))]


def _tree(r: np.random.Generator) -> list[Part]:
    rad = r.uniform(0.22, 0.28)
    return [Part(_rect(0.44, 0.5, 0.56, 0.9), True, (0.07, 0.7, 0.4)),
            Part(_ellipse(0.5, 0.38, rad, rad * r.uniform(0.9, 1.15)), True, (0.33, 0.7, 0.55)),
            Part(_poly((0.5, 0.62), (0.38, 0.5)), False, (0.07, 0.7, 0.4), 0.025)]


def _fish(r: np.random.Generator) -> list[Part]:
    body = r.uniform(0.13, 0.18)
    return [Part(_ellipse(0.45, 0.5, 0.3, body), True, (0.08, 0.85, 0.95)),
            Part(_poly((0.72, 0.5), (0.92, 0.32), (0.92, 0.68)), True, (0.05, 0.85, 0.85)),
            Part(_ellipse(0.28, 0.46, 0.035, 0.035, 12), True, (0.0, 0.0, 0.1)),
            Part(_ellipse(0.5, 0.5, 0.06, body * 0.9, 12, -1.2, 1.2), False, (0.05, 0.8, 0.6), 0.02)]


def _star(r: np.random.Generator) -> list[Part]:
    inner = r.uniform(0.16, 0.22)
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    rad = np.where(np.arange(10) % 2 == 0, 0.42, inner)
    return [Part(np.stack([0.5 + rad * np.cos(t), 0.53 + rad * np.sin(t)], 1), True, (0.14, 0.9, 0.95))]


def _sun(r: np.random.Generator) -> list[Part]:
    n = int(r.integers(8, 13))
    parts = [Part(_ellipse(0.5, 0.5, 0.2, 0.2), True, (0.12, 0.9, 1.0))]
    for a in np.arange(n) * 2 * np.pi / n + r.uniform(0, 1):
        parts.append(Part(_poly((0.5 + 0.27 * np.cos(a), 0.5 + 0.27 * np.sin(a)),
                                (0.5 + 0.42 * np.cos(a), 0.5 + 0.42 * np.sin(a))), False, (0.1, 0.9, 0.95), 0.035))
    return parts


def _car(r: np.random.Generator) -> list[Part]:
    return [Part(_poly((0.08, 0.5), (0.3, 0.5), (0.38, 0.32), (0.66, 0.32), (0.76, 0.5), (0.92, 0.52),
                       (0.92, 0.7), (0.08, 0.7)), True, (r.uniform(0, 1), 0.8, 0.8)),
            Part(_poly((0.42, 0.36), (0.52, 0.36), (0.52, 0.49), (0.36, 0.49)), True, (0.55, 0.3, 0.95)),
            Part(_poly((0.56, 0.36), (0.64, 0.36), (0.71, 0.49), (0.56, 0.49)), True, (0.55, 0.3, 0.95)),
            Part(_ellipse(0.27, 0.72, 0.09, 0.09), True, (0.0, 0.0, 0.15)),
            Part(_ellipse(0.73, 0.72, 0.09, 0.09), True, (0.0, 0.0, 0.15))]


def _cup(r: np.random.Generator) -> list[Part]:
    top = r.uniform(0.2, 0.25)
    return [Part(_poly((0.5 - top, 0.28), (0.5 + top, 0.28), (0.64, 0.82), (0.36, 0.82)), True,
                 (r.uniform(0, 1), 0.6, 0.85)),
            Part(_ellipse(0.72, 0.5, 0.13, 0.14, 20, -np.pi / 2, np.pi / 2), False, (0.0, 0.0, 0.4), 0.045),
            Part(_ellipse(0.5, 0.28, top, 0.04), True, (0.08, 0.6, 0.35))]


def _key(r: np.random.Generator) -> list[Part]:
    n = int(r.integers(2, 4))
    parts = [Part(_ellipse(0.24, 0.5, 0.14, 0.14), True, (0.13, 0.7, 0.8)),
             Part(_ellipse(0.24, 0.5, 0.05, 0.05, 16), True, (0.0, 0.0, 1.0)),
             Part(_rect(0.36, 0.47, 0.9, 0.53), True, (0.13, 0.7, 0.8))]
    for i in range(n):
        x = 0.86 - 0.09 * i
        parts.append(Part(_rect(x - 0.035, 0.53, x + 0.0, 0.65), True, (0.13, 0.7, 0.8)))
    return parts


def _umbrella(r: np.random.Generator) -> list[Part]:
    k = 4
    xs = np.linspace(0.1, 0.9, k + 1)
    scallops = np.concatenate([_ellipse((a + b) / 2, 0.46, (b - a) / 2, 0.05, 10, np.pi, 0.0)
                               for a, b in zip(xs[::-1][:-1], xs[::-1][1:])])
    canopy = np.concatenate([_ellipse(0.5, 0.46, 0.4, 0.3, 24, np.pi, 2 * np.pi), scallops])
    handle = np.concatenate([_poly((0.5, 0.46), (0.5, 0.8)), _ellipse(0.44, 0.8, 0.06, 0.06, 10, 0.0, np.pi)])
    return [Part(canopy, True, (r.uniform(0.55, 0.95), 0.75, 0.8)),
            Part(handle, False, (0.0, 0.0, 0.25), 0.03)]


def _bicycle(r: np.random.Generator) -> list[Part]:
    rad = r.uniform(0.15, 0.19)
    frame = (0.6, 0.8, 0.7)
    return [Part(_ellipse(0.25, 0.65, rad, rad), False, (0.0, 0.0, 0.15), 0.03),
            Part(_ellipse(0.75, 0.65, rad, rad), False, (0.0, 0.0, 0.15), 0.03),
            Part(_poly((0.25, 0.65), (0.45, 0.65), (0.38, 0.42), (0.68, 0.42), (0.45, 0.65)), False, frame, 0.03),
            Part(_poly((0.75, 0.65), (0.66, 0.32), (0.6, 0.3)), False, frame, 0.03),
            Part(_poly((0.33, 0.37), (0.43, 0.37)), False, (0.0, 0.0, 0.2), 0.035)]


def _flower(r: np.random.Generator) -> list[Part]:
    n = int(r.integers(5, 8))
    hue = r.choice([0.0, 0.83, 0.6, 0.9])
    parts = [Part(_poly((0.5, 0.42), (0.5, 0.92)), False, (0.33, 0.7, 0.5), 0.03),
             Part(_ellipse(0.6, 0.75, 0.09, 0.04), True, (0.33, 0.7, 0.55))]
    for a in np.arange(n) * 2 * np.pi / n:
        c = _ellipse(0.0, 0.0, 0.13, 0.06, 20)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        parts.append(Part(c @ rot.T + [0.5 + 0.14 * np.cos(a), 0.35 + 0.14 * np.sin(a)], True, (hue, 0.7, 0.95)))
    parts.append(Part(_ellipse(0.5, 0.35, 0.07, 0.07, 16), True, (0.14, 0.9, 0.9)))
    return parts


def _sailboat(r: np.random.Generator) -> list[Part]:
    return [Part(_poly((0.12, 0.7), (0.88, 0.7), (0.74, 0.85), (0.26, 0.85)), True, (0.07, 0.6, 0.5)),
            Part(_poly((0.5, 0.12), (0.5, 0.7)), False, (0.07, 0.6, 0.35), 0.025),
            Part(_poly((0.53, 0.15), (0.53, 0.64), (0.83, 0.64)), True, (0.0, 0.0, 0.97)),
            Part(_poly((0.47, 0.22), (0.47, 0.64), (0.22, 0.64)), True, (r.uniform(0, 1), 0.6, 0.9))]


#: Class name -> part generator.
CLASSES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "bicycle": _bicycle, "car": _car, "cup": _cup, "fish": _fish, "flower": _flower, "house": _house,
    "key": _key, "sailboat": _sailboat, "star": _star, "sun": _sun, "tree": _tree, "umbrella": _umbrella,
}


def _affine(pts: np.ndarray, scale: float, angle: float, shift: tuple[float, float], flip: bool) -> np.ndarray:
    p = pts - 0.5
    if flip:
        p = p * [-1, 1]
    c, s = np.cos(angle), np.sin(angle)
    return p @ np.array([[c, s], [-s, c]]) * scale + 0.5 + np.asarray(shift)


def _jitter(pts: np.ndarray, closed: bool, r: np.random.Generator, amp: float) -> np.ndarray:
    """Resample a polyline densely and add smooth hand-drawn wobble."""
    if closed:
        pts = np.vstack([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    t = np.concatenate([[0], np.cumsum(seg)])
    n = max(int(t[-1] / 0.01), 4)
    s = np.linspace(0, t[-1], n)
    dense = np.stack([np.interp(s, t, pts[:, 0]), np.interp(s, t, pts[:, 1])], 1)
    noise = np.cumsum(r.normal(0, 1, (n, 2)), 0)
    noise -= np.linspace(0, 1, n)[:, None] * noise[-1]         # wobble returns to the start
    noise = noise / (np.abs(noise).max() + 1e-9) * amp
    out = dense + noise
    if closed and r.random() < 0.5:                            # overshoot the closing point a little
        out = np.vstack([out, out[1:max(2, n // 12)]])
    return out


def render_sketch(parts: list[Part], r: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """A sketch-like line drawing: jittered dark strokes on white."""
    big = size * _SS
    img = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(img)
    scale, angle = r.uniform(0.75, 0.95), r.normal(0, 0.08)
    shift = tuple(r.uniform(-0.05, 0.05, 2))
    width = int(r.integers(2, 4)) * _SS
    for part in parts:
        pts = _affine(part.points, scale, angle, shift, False)
        for _ in range(1 + int(r.random() < 0.3)):           # sometimes a second, retraced stroke
            line = _jitter(pts, part.closed, r, 0.012) * big
            draw.line([tuple(p) for p in line], fill=int(r.integers(0, 70)), width=width, joint="curve")
    return img.reduce(_SS).convert("RGB")


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) pixel coordinates in [0, 1), float32 [size, size] each."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return yy, xx


def _background(r: np.random.Generator, size: int) -> np.ndarray:
    """A textured photo-like background, float32 [size, size, 3] in 0..255.

    A colour gradient, a faint stripe texture and soft out-of-focus blobs (drawn
    small and scaled up, which blurs them for free).
    """
    h0 = r.uniform(0, 1)
    c0 = np.array(colorsys.hsv_to_rgb(h0, r.uniform(0.1, 0.5), r.uniform(0.5, 0.95)), np.float32)
    c1 = np.array(colorsys.hsv_to_rgb((h0 + r.uniform(-0.2, 0.2)) % 1, r.uniform(0.1, 0.6), r.uniform(0.3, 0.9)),
                  np.float32)
    yy, xx = _grid(size)
    a = r.uniform(0, 2 * np.pi)
    g = np.cos(a) * xx + np.sin(a) * yy
    g = (g - g.min()) / (g.max() - g.min() + 1e-9)
    arr = c0 * (1 - g[..., None]) + c1 * g[..., None]
    freq, phase, b = r.uniform(3, 12), r.uniform(0, 2 * np.pi), r.uniform(0, np.pi)
    arr += 0.06 * np.sin(2 * np.pi * freq * (np.cos(b) * xx + np.sin(b) * yy) + phase)[..., None]
    small = size // 8
    blobs = Image.new("RGBA", (small, small), (0, 0, 0, 0))
    draw = ImageDraw.Draw(blobs)
    for _ in range(int(r.integers(3, 9))):
        x, y, rad = r.uniform(0, small, 2).tolist() + [r.uniform(0.05, 0.25) * small]
        col = tuple(int(v) for v in r.integers(0, 256, 3)) + (int(r.integers(30, 90)),)
        draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=col)
    over = np.asarray(blobs.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
    alpha = over[..., 3:]
    return (arr * (1 - alpha) + over[..., :3] * alpha) * 255


def render_photo(parts: list[Part], r: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """A photo-like rendering: filled, coloured parts on a textured background."""
    big = size * _SS
    bg = _background(r, size)
    obj = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(obj)
    scale, angle = r.uniform(0.5, 0.95), r.normal(0, 0.3)
    room = (1 - scale) / 2
    shift = tuple(r.uniform(-room, room, 2) * 0.9)
    flip = bool(r.random() < 0.5)
    dh = r.normal(0, 0.03)
    outline = r.random() < 0.4
    for part in parts:
        h, s, v = part.color
        rgb = colorsys.hsv_to_rgb((h + dh) % 1, float(np.clip(s + r.normal(0, 0.08), 0, 1)),
                                  float(np.clip(v + r.normal(0, 0.08), 0, 1)))
        fill = tuple(int(c * 255) for c in rgb) + (255,)
        pts = [tuple(p) for p in _affine(part.points, scale, angle, shift, flip) * big]
        if part.closed:
            dark = tuple(int(c * 0.5) for c in fill[:3]) + (255,) if outline else None
            draw.polygon(pts, fill=fill, outline=dark, width=_SS * 2 if outline else 1)
        else:
            draw.line(pts, fill=fill, width=max(1, int(part.width * scale * big)), joint="curve")
    fg = np.asarray(obj.reduce(_SS), dtype=np.float32)
    alpha = fg[..., 3:] / 255
    arr = bg * (1 - alpha) + fg[..., :3] * alpha
    yy, xx = _grid(size)                                        # uneven lighting and sensor noise
    light = 1 + r.uniform(-0.15, 0.15) * (xx - 0.5) + r.uniform(-0.15, 0.15) * (yy - 0.5)
    arr = arr * light[..., None] + 6 * r.standard_normal(arr.shape, dtype=np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate_demo(root: Path, seed: int = 0, n_query: int = N_QUERY_PER_CLASS,
                  n_gallery: int = N_GALLERY_PER_CLASS) -> None:
    """Write the demo images under ``root`` (which must be empty or absent).

    ``n_query`` sketches and ``n_gallery`` photos per class (smaller for tests).

    Every image depends only on ``seed``, the class, the side and its index, so
    two runs with the same seed write identical pixels.
    """
    root = Path(root)
    for ci, (name, make) in enumerate(CLASSES.items()):
        for side, n, render, ext in (("query", n_query, render_sketch, "png"),
                                     ("gallery", n_gallery, render_photo, "jpg")):
            folder = root / side / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                r = np.random.default_rng([seed, ci, int(side == "gallery"), i])
                img = render(make(r), r)
                out = folder / f"{name}_{side[0]}{i:03d}.{ext}"
                if ext == "jpg":
                    img.save(out, quality=90)
                else:
                    img.save(out)


def is_generated(root: str | Path) -> bool:
    """Whether ``root`` holds a finished generated demo (of any seed or version)."""
    return (Path(root) / _MARKER).is_file()


def demo_version(root: Path) -> str:
    """The generator record (seed, version, sizes) of a generated demo folder, as JSON text."""
    return (Path(root) / _MARKER).read_text()


def ensure_demo(root: str | Path = DEFAULT_ROOT, seed: int = 0, n_query: int = N_QUERY_PER_CLASS,
                n_gallery: int = N_GALLERY_PER_CLASS) -> Path:
    """Generate the demo under ``root`` once; later calls with the same seed reuse it.

    The images are written to a temporary sibling folder and moved into place
    at the end, so an interrupted run never leaves a half-written demo.

    Args:
        root: Where the demo lives (default ``data/demo`` under the current directory).
        seed: Seed of the generator; another seed regenerates the folder.
        n_query: Sketches per class.
        n_gallery: Photos per class.

    Returns:
        The demo root, in the ``folder`` layout.

    Raises:
        DatasetError: When ``root`` exists, is not empty and is not a demo folder.
    """
    root = Path(root)
    marker = root / _MARKER
    want = {"seed": seed, "version": GENERATOR_VERSION, "classes": list(CLASSES),
            "query_per_class": n_query, "gallery_per_class": n_gallery}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == want:
                return root
        except ValueError:
            pass
    elif root.exists() and any(root.iterdir()):
        raise DatasetError(f"{root} exists and is not a generated demo folder; "
                           "choose another --data_root or empty it")
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(root.parent, f".{root.name}.tmp-")           # left by killed runs (their process is gone)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-{owner_tag()}-", dir=root.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)                               # mkdtemp makes it private
    try:
        generate_demo(tmp, seed, n_query, n_gallery)
        (tmp / _MARKER).write_text(json.dumps(want))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
