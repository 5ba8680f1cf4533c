"""Batched feature extraction: images -> L2-normalised float32 features."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from .backbones import Backbone
from .errors import ImageReadError

#: Bumped whenever decoding, resizing or normalising images changes, so cached features are recomputed.
PREPROCESS_VERSION = 1


def open_rgb(path: Path) -> Image.Image:
    """Open an image as RGB; transparent pixels (sketches saved with alpha) become white."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")


class ImageFiles(torch.utils.data.Dataset):
    """Image files -> (uint8 tensor [3, H, W], error text).

    Only decoding and resizing happen per image (in the workers); scaling and
    normalisation run once per batch. Errors travel back as text instead of
    killing a worker, so the main process can stop with the file's path.
    """

    def __init__(self, paths: Sequence[Path], size: tuple[int, int]) -> None:
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            img = open_rgb(self.paths[i]).resize((self.size[1], self.size[0]), Image.BILINEAR)
            return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1), ""
        except Exception as exc:  # any decoder error: report the file, stop the run in the main process
            return torch.zeros(3, *self.size, dtype=torch.uint8), f"{type(exc).__name__}: {exc}".splitlines()[0]


def normalise_batch(images: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 scaled to 0..1 and normalised by the backbone's mean and std."""
    mean = torch.tensor(backbone.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def default_device() -> str:
    """``"cuda"`` when available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def extract_features(backbone: Backbone, paths: Sequence[str | Path], *, batch_size: int = 64,
                     num_workers: int | None = None, device: str | None = None, desc: str = "features",
                     progress: bool = True) -> np.ndarray:
    """Features of image files, in order.

    Args:
        backbone: From :func:`icfrr.features.load_backbone`.
        paths: Image files.
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes; None picks min(8, CPUs - 1).
        device: ``"cuda"``, ``"cpu"``...; None picks CUDA when available. On CUDA
            autocast (bfloat16) is used when the backbone allows it.
        desc: Label of the progress bar.
        progress: Show a tqdm progress bar.

    Returns:
        float32 [N, D], each row L2-normalised.

    Raises:
        ImageReadError: A file is missing or cannot be decoded (its path in the message).
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise ImageReadError(f"image not found: {p}")
    device = device or default_device()
    if num_workers is None:
        num_workers = min(8, max(0, (os.cpu_count() or 1) - 1))
    loader = DataLoader(ImageFiles(paths, backbone.input_size), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, pin_memory=device.startswith("cuda"))
    model = backbone.model.to(device).eval()
    use_amp = device.startswith("cuda") and backbone.mixed_precision
    out, start = [], 0
    with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for images, errors in loader:
            for k, err in enumerate(errors):
                if err:
                    raise ImageReadError(f"cannot read image {paths[start + k]}: {err}")
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                feats = model(normalise_batch(images.to(device, non_blocking=True), backbone))
            out.append(F.normalize(feats.float(), dim=1).cpu())
            start += len(images)
            bar.update(len(images))
    if not out:
        return np.zeros((0, 0), np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)
