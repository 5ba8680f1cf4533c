"""Thumbnails of dataset images, made with Pillow, resolved inside the dataset root.

Item paths in the store are relative to the dataset's recorded root. That
root comes from the store, which is untrusted: it is used only when it lies
inside one of the folders the operator allows (``dashboard.data.image_roots``:
the launch working directory, ``--image-root``, $ICFRR_IMAGE_ROOTS);
otherwise no file under it is opened and every item shows
the same "not shown" placeholder, whatever exists there. A path that leaves
the root (``..``, an absolute path, a symlink pointing out) is refused; a
missing, unreadable or refused image becomes a grey placeholder that shows
the item's path, never an error. Items without a path (imported distances)
get the same placeholder, and so does an image above ``MAX_PIXELS`` (only its
header is read: a crafted "decompression bomb" is never decoded).
"""

from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import streamlit as st
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from dashboard.data import image_roots

#: Frame colours for relevance; always drawn together with a badge icon
#: (a tick or a cross), so colour is never the only cue.
MARKS = {
    "relevant": (46, 125, 50),
    "irrelevant": (198, 40, 40),
    "unknown": (130, 130, 130),
}
_GREY = (200, 200, 200)
#: Images with more pixels than this get a placeholder (their header is read, never the pixels).
MAX_PIXELS = 40_000_000


def resolve_inside(root: str | Path | None, rel: str | None) -> Path | None:
    """The file ``rel`` under ``root``, or None when either is missing or it escapes ``root``.

    Symlinks are followed before the check, so a link out of the root is refused.
    """
    if not root or not rel:
        return None
    base = Path(root).resolve()
    target = (base / rel).resolve()
    return target if target.is_relative_to(base) else None


def allowed_root(root: str | Path | None, allowed: Sequence[str | Path]) -> Path | None:
    """``root`` resolved, when it lies inside (or is) one of the ``allowed`` folders, else None.

    Symlinks in ``root`` are followed before the check, so a link from an
    allowed folder to elsewhere is refused.
    """
    if not root or not allowed:
        return None
    try:
        base = Path(root).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return base if any(base.is_relative_to(Path(a).resolve()) for a in allowed) else None


def placeholder(text: str, size: int, note: str = "") -> Image.Image:
    """A grey square showing ``note`` and ``text`` (a path), wrapped to fit."""
    img = Image.new("RGB", (size, size), _GREY)
    draw = ImageDraw.Draw(img)
    width = max(6, size // 7)
    lines = ([note] if note else []) + textwrap.wrap(text, width, break_long_words=True)
    draw.multiline_text((4, 4), "\n".join(lines[: max(1, size // 12)]), fill=(60, 60, 60))
    return img


def _open(root: str | None, rel: str | None, size: int,
          allowed: Sequence[str | Path]) -> Image.Image:
    if not rel:
        return placeholder("(no image: distances only)", size)
    if not root:
        return placeholder(rel, size, "no dataset root")
    base = allowed_root(root, allowed)
    if base is None:  # the same for every such root: nothing about it is revealed
        return placeholder(rel, size, "not shown")
    path = resolve_inside(base, rel)
    if path is None:
        return placeholder(rel, size, "outside root")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                return placeholder(rel, size, "too large")
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
    except Image.DecompressionBombError:  # beyond Pillow's own limit, refused while opening
        return placeholder(rel, size, "too large")
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


def render(root: str | None, rel: str | None, size: int = 96, mark: str | None = None, *,
           allowed: Sequence[str | Path]) -> bytes:
    """PNG bytes of a ``size`` x ``size`` thumbnail, optionally marked for relevance.

    Args:
        root: The dataset root recorded in the store (None for imported distances).
        rel: The item path relative to ``root`` (None when there is no image).
        allowed: Folders images may be read under; ``root`` outside all of
            them gives a placeholder without touching anything under it.
        size: Edge length in pixels.
        mark: None, or a key of ``MARKS``: adds a 5-pixel frame of that
            colour and a badge with a tick, cross or bar.
    """
    img = _open(root, rel, size, allowed)
    if mark is not None:
        img = ImageOps.expand(img.resize((size - 10, size - 10)), border=5, fill=MARKS[mark])
        _badge(img, mark)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=5_000)
def _cached(root: str | None, rel: str | None, size: int, mark: str | None,
            allowed: tuple[str, ...]) -> bytes:
    return render(root, rel, size, mark, allowed=allowed)


def thumbnail(root: str | None, rel: str | None, size: int = 96,
              mark: str | None = None) -> bytes:
    """``render`` under this server's allowed image folders, through Streamlit's cache."""
    return _cached(root, rel, size, mark, tuple(str(p) for p in image_roots()))


def data_url(png: bytes) -> str:
    """A ``data:`` URL of PNG bytes (for image columns of ``st.dataframe``)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
