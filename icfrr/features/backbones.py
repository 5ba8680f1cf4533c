"""Backbones: the published ICFRR checkpoint, any timm model with local weights, the demo descriptor.

Every backbone maps a normalised image batch [B, 3, H, W] to features [B, D];
extraction L2-normalises them. No code path downloads anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import LoadReport, extract_state_dict, file_sha256, fit_state_dict, read_weights_file
from .edges import EdgeHistogram
from .errors import BackboneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The timm architecture the published checkpoints load into (spec section 5).
ICFRR_MODEL = "vit_base_patch16_224"
#: Dataset name -> published checkpoint folder under --pretrained-root.
ICFRR_CHECKPOINTS = {"tuberlin": "tuberlin", "sketchy_zs1": "sketchy/zeroshot1",
                     "sketchy_zs2": "sketchy/zeroshot2", "custom": "custom", "folder": "custom",
                     "demo": "custom"}


@dataclass
class Backbone:
    """A feature extractor and how to feed it.

    Attributes:
        name: ``"icfrr"``, ``"timm:<model>"`` or ``"demo"``.
        model: Module mapping [B, 3, H, W] normalised images to [B, D] features.
        input_size: (height, width) images are resized to (no crop).
        mean: Per-channel mean subtracted after scaling pixels to 0..1.
        std: Per-channel std divided by.
        weights_sha256: sha256 of the weights file, None when there is none.
        weights_path: The weights file, None when there is none.
        report: How the weights' keys fitted the model, None without weights.
        mixed_precision: Whether autocast may be used on CUDA.
    """

    name: str
    model: nn.Module
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str | None = None
    weights_path: Path | None = None
    report: LoadReport | None = None
    mixed_precision: bool = True


class PooledTimm(nn.Module):
    """A timm model's pooled pre-logits features.

    Vision transformers (token outputs [B, N, C]) use the mean of the patch
    tokens after the final norm, prefix (class, register) tokens dropped, as in
    the published ICFRR code; other models use their own pooling head without
    the classifier.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_features(x)
        n_prefix = getattr(self.model, "num_prefix_tokens", None)
        if out.ndim == 3 and n_prefix is not None:
            return out[:, n_prefix:].mean(1)
        return self.model.forward_head(out, pre_logits=True)


def _create_timm(name: str, **kwargs: object) -> nn.Module:
    import timm
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise BackboneError(f"timm has no model {name!r} ({exc}); see timm.list_models()") from None


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = model.pretrained_cfg.get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names) + ("head.",)


def _timm_backbone(name: str, weights: Path | None, trust: bool, label: str, **model_kwargs: object) -> Backbone:
    """Create timm model ``name`` and fill it from ``weights`` (read first: a bad file fails fast)."""
    state = extract_state_dict(read_weights_file(weights, trust), weights) if weights is not None else None
    model = _create_timm(name, **model_kwargs)
    report = sha = None
    if state is not None:
        report = fit_state_dict(model, state, str(weights), optional_prefixes=_classifier_prefixes(model))
        sha = file_sha256(weights)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)   # a ViT's own input size
    size = tuple(fixed) if fixed else tuple(cfg.get("input_size", (3, 224, 224))[1:])
    return Backbone(label, PooledTimm(model).eval(), size, tuple(cfg.get("mean", IMAGENET_MEAN)),
                    tuple(cfg.get("std", IMAGENET_STD)), sha, weights, report)


def icfrr_checkpoint_path(pretrained_root: str | Path, dataset: str) -> Path:
    """``<pretrained_root>/<dataset folder>/checkpoint.pth`` (spec section 5)."""
    return Path(pretrained_root) / ICFRR_CHECKPOINTS.get(dataset, "custom") / "checkpoint.pth"


def load_icfrr(checkpoint: str | Path, trust: bool = False, model_name: str = ICFRR_MODEL,
               **model_kwargs: object) -> Backbone:
    """The published ICFRR ViT-B/16 from its checkpoint.

    Args:
        checkpoint: A published ``checkpoint.pth`` (a dict holding ``model_state_dict_best``).
        trust: Allow unpickling the Python objects the dict also holds (runs code
            from the file). Without it a weights-only load is tried.
        model_name: The timm architecture (tests pass a small one).
        **model_kwargs: Extra ``timm.create_model`` arguments (tests: a tiny ViT).

    Returns:
        The backbone; ``report`` lists ignored and missing keys.

    Raises:
        BackboneError: Missing file, pickled objects without ``trust``, or keys that do not fit.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise BackboneError(f"checkpoint not found: {checkpoint} (check --pretrained-root; expected "
                            "<pretrained_root>/{tuberlin,sketchy/zeroshot1,sketchy/zeroshot2,custom}/checkpoint.pth)")
    bb = _timm_backbone(model_name, checkpoint, trust, "icfrr", **model_kwargs)
    bb.mean, bb.std = IMAGENET_MEAN, IMAGENET_STD
    return bb


def weights_file(spec: str, *, dataset: str = "custom", pretrained_root: str | Path | None = None,
                 weights: str | Path | None = None) -> Path | None:
    """The weights file a backbone spec would read (None for ``demo`` and random weights).

    Lets callers hash the file (to key caches) without building the model.
    """
    if spec == "icfrr":
        if weights is not None:
            return Path(weights)
        return icfrr_checkpoint_path(pretrained_root, dataset) if pretrained_root is not None else None
    if spec.startswith("timm:") and weights is not None and str(weights) != "random":
        return Path(weights)
    return None


def load_backbone(spec: str, *, dataset: str = "custom", pretrained_root: str | Path | None = None,
                  weights: str | Path | None = None, trust_checkpoint: bool = False) -> Backbone:
    """Build a backbone from its command-line name.

    Args:
        spec: ``"icfrr"`` (published checkpoint of ``dataset`` under ``pretrained_root``),
            ``"timm:<model>"`` (needs ``weights``: a local .safetensors/.pth file, or
            ``"random"`` for seeded random weights, for smoke tests only) or ``"demo"``
            (the weight-free edge descriptor).
        dataset: Dataset name, picks the published checkpoint.
        pretrained_root: Folder of the published checkpoints (``icfrr`` only).
        weights: Weights file for ``timm:<model>``; for ``icfrr`` it overrides the
            checkpoint path.
        trust_checkpoint: Allow unpickling Python objects in the weights file.

    Raises:
        BackboneError: Unknown spec, or weights missing, unreadable or not fitting.
    """
    if spec == "demo":
        return Backbone("demo", EdgeHistogram().eval(), (128, 128), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                        mixed_precision=False)
    if spec == "icfrr":
        if weights is None and pretrained_root is None:
            raise BackboneError("--backbone icfrr needs --pretrained-root (the folder of the published "
                                "checkpoints) or --weights <checkpoint.pth>")
        return load_icfrr(weights_file(spec, dataset=dataset, pretrained_root=pretrained_root, weights=weights),
                          trust_checkpoint)
    if spec.startswith("timm:") and len(spec) > 5:
        name = spec[5:]
        if weights is None:
            raise BackboneError(f"--backbone {spec} needs --weights <local .safetensors or .pth file>: "
                                "nothing is downloaded (use --weights random for an untrained smoke test)")
        if str(weights) == "random":
            torch.manual_seed(0)
            return _timm_backbone(name, None, False, spec)
        return _timm_backbone(name, Path(weights), trust_checkpoint, spec)
    raise BackboneError(f"unknown backbone {spec!r}; use icfrr, demo or timm:<model name>")
