"""Thumbnails of dataset images, made with Pillow, resolved inside the dataset root.

Item paths in the store are relative to the dataset's recorded root. A path
that leaves the root (``..``, an absolute path, a symlink pointing out) is
refused; a missing, unreadable or refused image becomes a grey placeholder
that shows the path, never an error. Items without a path (imported
distances) get the same placeholder.
"""

from __future__ import annotations

import base64
import io
import textwrap
from pathlib import Path

import streamlit as st
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

#: Frame colours for relevance; always drawn together with a badge icon
#: (a tick or a cross), so colour is never the only cue.
MARKS = {
    "relevant": (46, 125, 50),
    "irrelevant": (198, 40, 40),
    "unknown": (130, 130, 130),
}
_GREY = (200, 200, 200)


def resolve_inside(root: str | Path | None, rel: str | None) -> Path | None:
    """The file ``rel`` under ``root``, or None when either is missing or it escapes ``root``.

    Symlinks are followed before the check, so a link out of the root is refused.
    """
    if not root or not rel:
        return None
    base = Path(root).resolve()
    target = (base / rel).resolve()
    return target if target.is_relative_to(base) else None


def placeholder(text: str, size: int, note: str = "") -> Image.Image:
    """A grey square showing ``note`` and ``text`` (a path), wrapped to fit."""
    img = Image.new("RGB", (size, size), _GREY)
    draw = ImageDraw.Draw(img)
    width = max(6, size // 7)
    lines = ([note] if note else []) + textwrap.wrap(text, width, break_long_words=True)
    draw.multiline_text((4, 4), "\n".join(lines[: max(1, size // 12)]), fill=(60, 60, 60))
    return img


def _open(root: str | None, rel: str | None, size: int) -> Image.Image:
    if not rel:
        return placeholder("(no image: distances only)", size)
    path = resolve_inside(root, rel)
    if path is None:
        note = "outside root" if root else "no dataset root"
        return placeholder(rel, size, note)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
    except (OSError, UnidentifiedImageError, ValueError):
        return placeholder(rel, size, "missing" if not path.exists() else "unreadable")
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return canvas


def _badge(img: Image.Image, mark: str) -> None:
    """Draw a tick (relevant), a cross (irrelevant) or a bar (unknown) in a corner disc."""
    colour = MARKS[mark]
    r = max(8, img.width // 8)
    x0, y0 = img.width - 2 * r - 6, 6
    draw = ImageDraw.Draw(img)
    draw.ellipse((x0, y0, x0 + 2 * r, y0 + 2 * r), fill=colour, outline="white", width=2)
    w = max(2, r // 3)
    cx, cy = x0 + r, y0 + r
    if mark == "relevant":
        draw.line([(cx - r // 2, cy), (cx - r // 8, cy + r // 2), (cx + r // 2, cy - r // 2)],
                  fill="white", width=w)
    elif mark == "irrelevant":
        d = r // 2
        draw.line([(cx - d, cy - d), (cx + d, cy + d)], fill="white", width=w)
        draw.line([(cx - d, cy + d), (cx + d, cy - d)], fill="white", width=w)
    else:
        draw.line([(cx - r // 2, cy), (cx + r // 2, cy)], fill="white", width=w)


def render(root: str | None, rel: str | None, size: int = 96, mark: str | None = None) -> bytes:
    """PNG bytes of a ``size`` x ``size`` thumbnail, optionally marked for relevance.

    Args:
        root: The dataset root recorded in the store (None for imported distances).
        rel: The item path relative to ``root`` (None when there is no image).
        size: Edge length in pixels.
        mark: None, or a key of ``MARKS``: adds a 5-pixel frame of that
            colour and a badge with a tick, cross or bar.
    """
    img = _open(root, rel, size)
    if mark is not None:
        img = ImageOps.expand(img.resize((size - 10, size - 10)), border=5, fill=MARKS[mark])
        _badge(img, mark)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=5_000)
def thumbnail(root: str | None, rel: str | None, size: int = 96,
              mark: str | None = None) -> bytes:
    """``render`` through Streamlit's cache."""
    return render(root, rel, size, mark)


def data_url(png: bytes) -> str:
    """A ``data:`` URL of PNG bytes (for image columns of ``st.dataframe``)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
