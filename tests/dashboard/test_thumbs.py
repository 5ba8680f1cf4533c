"""Thumbnails: paths stay inside the dataset root; anything unusable is a placeholder."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from dashboard import thumbs


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "data" / "gallery").mkdir(parents=True)
    Image.new("RGB", (40, 20), (0, 0, 255)).save(tmp_path / "data" / "gallery" / "a.png")
    (tmp_path / "secret.png").write_bytes(b"x")
    (tmp_path / "data" / "gallery" / "broken.png").write_bytes(b"not an image")
    os.symlink(tmp_path / "secret.png", tmp_path / "data" / "gallery" / "link.png")
    return tmp_path / "data"


def _img(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


@pytest.mark.parametrize("rel", ["../secret.png", "gallery/../../secret.png",
                                 "/etc/passwd", "gallery/link.png"])
def test_paths_leaving_the_root_are_refused(root: Path, rel: str) -> None:
    assert thumbs.resolve_inside(root, rel) is None


def test_paths_inside_the_root_resolve(root: Path) -> None:
    assert thumbs.resolve_inside(root, "gallery/a.png") == (root / "gallery" / "a.png").resolve()
    assert thumbs.resolve_inside(None, "gallery/a.png") is None
    assert thumbs.resolve_inside(root, None) is None


def test_thumbnail_keeps_aspect_on_a_white_square(root: Path) -> None:
    img = _img(thumbs.render(str(root), "gallery/a.png", 64))
    assert img.size == (64, 64)
    assert img.getpixel((32, 32)) == (0, 0, 255)   # the image, centred
    assert img.getpixel((32, 2)) == (255, 255, 255)  # padding above the 64x32 thumbnail


@pytest.mark.parametrize("rel", ["gallery/missing.png", "gallery/broken.png", "../secret.png",
                                 None])
def test_unusable_images_become_grey_placeholders(root: Path, rel: str | None) -> None:
    img = _img(thumbs.render(str(root), rel, 64))
    assert img.size == (64, 64)
    assert img.getpixel((63, 63)) == (200, 200, 200)


def test_relevance_mark_draws_frame_and_badge(root: Path) -> None:
    for mark, colour in thumbs.MARKS.items():
        img = _img(thumbs.render(str(root), "gallery/a.png", 96, mark))
        assert img.size == (96, 96)
        assert img.getpixel((1, 48)) == colour   # frame
        badge = img.crop((96 - 2 * 12 - 6, 6, 96 - 6, 6 + 2 * 12))
        assert colour in {c for _, c in badge.getcolors(10_000)}   # badge disc
        assert (255, 255, 255) in {c for _, c in badge.getcolors(10_000)}  # its icon


def test_data_url_round_trips() -> None:
    png = thumbs.render(None, None, 16)
    url = thumbs.data_url(png)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png
