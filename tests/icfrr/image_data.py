"""Small generated image folders and checkpoints for the data, feature and artifact tests."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def shape_image(path: Path, kind: str, filled: bool, offset: int = 0, size: int = 48) -> None:
    """Write a square/circle/triangle, outlined (sketch) or filled on a tinted background (photo)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), (255, 255, 255) if not filled else (200, 220, 180))
    d = ImageDraw.Draw(img)
    box = [10 + offset, 10 + offset, size - 10 + offset, size - 10 + offset]
    fill, outline = ((200, 40, 40), None) if filled else (None, (0, 0, 0))
    if kind == "square":
        d.rectangle(box, fill=fill, outline=outline, width=2)
    elif kind == "circle":
        d.ellipse(box, fill=fill, outline=outline, width=2)
    else:
        pts = [(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])]
        d.polygon(pts, fill=fill, outline=outline, width=2)
    img.save(path)


def folder_dataset(root: Path, classes: tuple[str, ...] = ("circle", "square", "triangle"),
                   n_query: int = 2, n_gallery: int = 4) -> Path:
    """A ``folder`` layout of drawn shapes: sketches as queries, filled shapes as gallery."""
    for c in classes:
        for i in range(n_query):
            shape_image(root / "query" / c / f"q{i}.png", c, False, offset=i)
        for i in range(n_gallery):
            shape_image(root / "gallery" / c / f"g{i}.png", c, True, offset=i - 1)
    return root


def tiny_vit(seed: int = 0) -> torch.nn.Module:
    """A 32-pixel, one-block ViT with timm's ``vit_base_patch16_224`` key names."""
    import timm
    torch.manual_seed(seed)
    return timm.create_model("vit_base_patch16_224", pretrained=False, **TINY_VIT)


#: timm.create_model arguments of the tiny ViT (same architecture family, small sizes).
TINY_VIT = {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 5}


def published_checkpoint(path: Path, state: dict, with_objects: bool) -> Path:
    """Save ``state`` in the published checkpoint's dict shape.

    With ``with_objects`` the dict also holds pickled Python objects, as the
    published files do (``args``, ``data_transform``).
    """
    ckpt: dict = {"model_state_dict_best": state, "epoch": torch.tensor(7)}
    if with_objects:
        from torchvision import transforms
        ckpt["args"] = argparse.Namespace(dataset="tuberlin", lr=1e-5)
        ckpt["data_transform"] = transforms.Compose([transforms.Resize(224), transforms.ToTensor()])
    torch.save(ckpt, path)
    return path


def brute_force_neighbors(feats: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest other rows by float64 Euclidean distance, ties by index (independent oracle)."""
    d = np.sqrt(((feats[:, None, :].astype(np.float64) - feats[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)
