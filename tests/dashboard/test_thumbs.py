"""Thumbnails: roots only inside the allowed folders, paths inside the root; anything
unusable is a placeholder."""

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
    img = _img(thumbs.render(str(root), "gallery/a.png", 64, allowed=[root]))
    assert img.size == (64, 64)
    assert img.getpixel((32, 32)) == (0, 0, 255)   # the image, centred
    assert img.getpixel((32, 2)) == (255, 255, 255)  # padding above the 64x32 thumbnail


@pytest.mark.parametrize("rel", ["gallery/missing.png", "gallery/broken.png", "../secret.png",
                                 None])
def test_unusable_images_become_grey_placeholders(root: Path, rel: str | None) -> None:
    img = _img(thumbs.render(str(root), rel, 64, allowed=[root]))
    assert img.size == (64, 64)
    assert img.getpixel((63, 63)) == (200, 200, 200)


def test_relevance_mark_draws_frame_and_badge(root: Path) -> None:
    for mark, colour in thumbs.MARKS.items():
        img = _img(thumbs.render(str(root), "gallery/a.png", 96, mark, allowed=[root]))
        assert img.size == (96, 96)
        assert img.getpixel((1, 48)) == colour   # frame
        badge = img.crop((96 - 2 * 12 - 6, 6, 96 - 6, 6 + 2 * 12))
        assert colour in {c for _, c in badge.getcolors(10_000)}   # badge disc
        assert (255, 255, 255) in {c for _, c in badge.getcolors(10_000)}  # its icon


def test_data_url_round_trips() -> None:
    png = thumbs.render(None, None, 16, allowed=[])
    url = thumbs.data_url(png)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png


GREY = (200, 200, 200)


def test_root_inside_an_allowed_folder_is_used(root: Path) -> None:
    assert thumbs.allowed_root(root, [root.parent]) == root.resolve()
    assert thumbs.allowed_root(str(root), [str(root)]) == root.resolve()
    img = _img(thumbs.render(str(root), "gallery/a.png", 64, allowed=[root.parent]))
    assert img.getpixel((32, 32)) == (0, 0, 255)


@pytest.mark.parametrize("where", ["sibling", "parent", "link", "none"])
def test_root_outside_the_allowed_folders_opens_nothing(root: Path, tmp_path: Path,
                                                        monkeypatch, where: str) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    if where == "link":   # a symlink inside the allowed folder that points at the root
        (allowed / "data").symlink_to(root)
        given = allowed / "data"
    else:
        given = root.parent if where == "parent" else root
    opened: list[object] = []
    real_open = Image.open
    def spy(f, *a, **k):
        if not isinstance(f, io.BytesIO):   # a file, not the test's own decoding
            opened.append(f)
        return real_open(f, *a, **k)

    monkeypatch.setattr(Image, "open", spy)
    grants = [] if where == "none" else [allowed]
    assert thumbs.allowed_root(given, grants) is None
    for rel in ("gallery/a.png", "gallery/missing.png", "data/gallery/a.png"):
        img = _img(thumbs.render(str(given), rel, 64, allowed=grants))
        assert img.getpixel((63, 63)) == GREY
    assert opened == []
    # the placeholder is the same whether or not the image exists: nothing is revealed
    shown = thumbs.render(str(given), "gallery/a.png", 64, allowed=grants)
    (root / "gallery" / "a.png").unlink()
    assert thumbs.render(str(given), "gallery/a.png", 64, allowed=grants) == shown


def test_image_roots_come_from_the_working_directory_flags_and_environment(tmp_path, monkeypatch):
    from dashboard.data import ENV_IMAGE_ROOTS, image_roots

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    env = {ENV_IMAGE_ROOTS: os.pathsep.join(["", str(tmp_path / "b"), "c"])}
    got = image_roots(["--db", "x.duckdb", "--image-root", "a", "--image-root", str(tmp_path)],
                      env)
    assert got == (tmp_path.resolve(), tmp_path.resolve() / "a", tmp_path.resolve() / "b",
                   tmp_path.resolve() / "c")
    assert image_roots([], {}) == (tmp_path.resolve(),)


def test_images_above_the_pixel_limit_become_placeholders(root: Path, monkeypatch) -> None:
    want = _img(thumbs.render(None, None, 64, allowed=[]))   # any placeholder's grey corner
    monkeypatch.setattr(thumbs, "MAX_PIXELS", 40 * 20 - 1)  # a.png is 40 x 20: one pixel too many
    img = _img(thumbs.render(str(root), "gallery/a.png", 64, allowed=[root]))
    assert img.getpixel((63, 63)) == want.getpixel((63, 63)) == (200, 200, 200)
    assert img.getpixel((32, 32)) != (0, 0, 255)             # the image itself is not drawn
    # beyond Pillow's own limit, Image.open refuses the file (a decompression bomb): same placeholder
    Image.new("1", (3000, 3000), 1).save(root / "gallery" / "bomb.png")   # 9 Mpx, a small file
    monkeypatch.setattr(thumbs, "MAX_PIXELS", 10**12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)   # refused above 2 Mpx
    with pytest.raises(Image.DecompressionBombError):
        Image.open(root / "gallery" / "bomb.png")
    img = _img(thumbs.render(str(root), "gallery/bomb.png", 64, allowed=[root]))
    assert img.getpixel((63, 63)) == (200, 200, 200) and img.getpixel((32, 32)) != (0, 0, 255)
