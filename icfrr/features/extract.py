"""Batched feature extraction: images -> L2-normalised float32 features."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from .backbones import Backbone
from .errors import ImageReadError

#: Bumped whenever decoding, resizing or normalising images changes, so cached features are recomputed.
#: 2: ``timm:<model>`` backbones use timm's data config and transform (``Backbone.preprocess``).
PREPROCESS_VERSION = 2


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
    """Image files -> (float32 tensor [3, H, W] preprocessed by the backbone's transform, error text).

    Decoding and the transform run per image (in the workers). Errors travel
    back as text instead of killing a worker, so the main process can stop
    with the file's path.
    """

    def __init__(self, paths: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor],
                 size: tuple[int, int]) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(open_rgb(self.paths[i])).float(), ""
        except Exception as exc:  # any decoder error: report the file, stop the run in the main process
            return torch.zeros(3, *self.size), f"{type(exc).__name__}: {exc}".splitlines()[0]


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
    loader = DataLoader(ImageFiles(paths, backbone.transform, backbone.input_size), batch_size=batch_size,
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
                feats = model(images.to(device, non_blocking=True))
            out.append(F.normalize(feats.float(), dim=1).cpu())
            start += len(images)
            bar.update(len(images))
    if not out:
        return np.zeros((0, 0), np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)
