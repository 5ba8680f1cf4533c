"""Backbones: the published ICFRR checkpoint, any timm model with local weights, the demo descriptor.

Every backbone maps a batch of preprocessed images [B, 3, H, W] to features
[B, D]; extraction L2-normalises them. Each backbone also says how an image is
preprocessed (:attr:`Backbone.transform`, described by :attr:`Backbone.preprocess`):

* ``timm:<model>`` follows timm's own conventions: its data config
  (``timm.data.resolve_model_data_config``: input size, interpolation, crop,
  mean, std) and ``timm.data.create_transform``; local weights load through
  timm's pretrained-file path (``pretrained_cfg_overlay=dict(file=...)``:
  safetensors, or a weights-only ``torch.load``).
* ``icfrr`` (the published checkpoint) keeps its own preprocessing (resize to
  the ViT's input size, ImageNet mean and std; docs/SPEC.md section 5) and its
  own loader (the pickled training dict, ``--trust-checkpoint``).
* ``demo`` keeps its own (128 x 128, pixels in 0..1).

No code path downloads anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .checkpoint import (LoadReport, check_report, compare_keys, extract_state_dict, file_sha256,
                         fit_state_dict, read_weight_shapes, read_weights_file)
from .edges import EdgeHistogram
from .errors import BackboneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The timm architecture the published checkpoints load into (docs/SPEC.md section 5).
ICFRR_MODEL = "vit_base_patch16_224"
#: Dataset name -> published checkpoint folder under --pretrained-root.
ICFRR_CHECKPOINTS = {"tuberlin": "tuberlin", "sketchy_zs1": "sketchy/zeroshot1",
                     "sketchy_zs2": "sketchy/zeroshot2", "custom": "custom", "folder": "custom",
                     "demo": "custom"}
#: The demo descriptor's input size.
DEMO_SIZE = (128, 128)


@dataclass(frozen=True)
class Resize:
    """The lab's own preprocessing (``icfrr``, ``demo``): bilinear resize to ``size``, no crop,
    pixels scaled to 0..1, then ``(x - mean) / std`` per channel.

    Attributes:
        size: (height, width).
        mean: Per-channel mean.
        std: Per-channel standard deviation.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """RGB image -> float32 [3, H, W]."""
        arr = np.asarray(img.resize((self.size[1], self.size[0]), Image.BILINEAR), dtype=np.float32)
        x = torch.from_numpy(arr).permute(2, 0, 1) / 255
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    def describe(self) -> dict[str, object]:
        """The JSON-able description of :attr:`Backbone.preprocess`."""
        return {"kind": "resize", "input_size": (3, *self.size), "interpolation": "bilinear",
                "crop_pct": 1.0, "crop_mode": "squash", "mean": tuple(self.mean), "std": tuple(self.std)}


@dataclass
class Backbone:
    """A feature extractor and how to feed it.

    Attributes:
        name: ``"icfrr"``, ``"timm:<model>"`` or ``"demo"``.
        model: Module mapping [B, 3, H, W] preprocessed images to [B, D] features.
        transform: RGB PIL image -> float32 [3, H, W] preprocessed tensor (picklable,
            it runs in DataLoader workers).
        preprocess: JSON-able description of ``transform`` (``kind`` ``"timm"`` with
            timm's data config, or ``"resize"``): part of the features' cache identity.
        weights_sha256: sha256 of the weights file, None when there is none.
        weights_path: The weights file, None when there is none.
        report: How the weights' keys fitted the model, None without weights.
        mixed_precision: Whether autocast may be used on CUDA.
    """

    name: str
    model: nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    preprocess: dict[str, object] = field(default_factory=dict)
    weights_sha256: str | None = None
    weights_path: Path | None = None
    report: LoadReport | None = None
    mixed_precision: bool = True

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the preprocessed images."""
        size = self.preprocess["input_size"]
        return int(size[-2]), int(size[-1])   # type: ignore[index]


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
    if name.split(":")[0] in ("hf-hub", "hf_hub", "local-dir"):
        raise BackboneError(f"timm:{name} names a remote or folder source; use a timm model name and "
                            "--weights <local file> (nothing is downloaded)")
    try:
        return timm.create_model(name, **{"pretrained": False, **kwargs})
    except RuntimeError as exc:  # timm: "Unknown model (...)"; a failed weights load is handled by callers
        if "nknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            raise BackboneError(f"timm has no model {name!r} ({exc}); see timm.list_models()") from None
        raise


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = model.pretrained_cfg.get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names) + ("head.",)


def timm_data_config(name: str, model: nn.Module | None = None) -> dict[str, object]:
    """timm's data config (input size, interpolation, crop, mean, std) of a model.

    From the model when given (``resolve_model_data_config``), else from the
    name's pretrained config (no model built): the same for ``timm:<model>``
    backbones, which take no model arguments.
    """
    import timm
    if model is not None:
        return dict(timm.data.resolve_model_data_config(model))
    if not timm.is_model(name):
        raise BackboneError(f"timm has no model {name!r}; see timm.list_models()")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as exc:
        raise BackboneError(f"timm has no model {name!r} ({exc}); see timm.list_models()") from None
    return dict(timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {}))


def _timm_preprocess(config: dict[str, object]) -> dict[str, object]:
    return {"kind": "timm", **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}}


def preprocess_config(spec: str) -> dict[str, object]:
    """What :attr:`Backbone.preprocess` of ``load_backbone(spec)`` will be, without loading it.

    For keying caches before any model is built. ``icfrr`` assumes the published
    architecture (:data:`ICFRR_MODEL`, 224 x 224).

    Raises:
        BackboneError: Unknown spec or timm model.
    """
    if spec == "demo":
        return Resize(DEMO_SIZE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).describe()
    if spec == "icfrr":
        return Resize((224, 224), IMAGENET_MEAN, IMAGENET_STD).describe()
    if spec.startswith("timm:") and len(spec) > 5:
        return _timm_preprocess(timm_data_config(spec[5:]))
    raise BackboneError(f"unknown backbone {spec!r}; use icfrr, demo or timm:<model name>")


def _load_timm(name: str, weights: Path | None, label: str) -> Backbone:
    """timm model ``name`` with timm's preprocessing, filled from ``weights`` by timm's pretrained-file path.

    The classifier is dropped (``num_classes=0``: features never use it), so
    the file's classifier keys are ignored; every other model key must come
    from the file (checked by comparing the file's keys with the model's).
    ``weights`` None: seeded random weights (smoke tests).
    """
    import timm
    report = sha = None
    if weights is None:
        torch.manual_seed(0)
        model = _create_timm(name, num_classes=0)
    else:
        shapes, removed = read_weight_shapes(weights)   # a bad file fails before the model is built
        try:
            model = _create_timm(name, num_classes=0, pretrained=True,
                                 pretrained_cfg_overlay={"file": str(weights)})
            failed = None
        except RuntimeError as exc:            # e.g. a tensor of another shape
            model, failed = _create_timm(name, num_classes=0), exc
        ignored = _classifier_prefixes(model)
        report = compare_keys({k: tuple(v.shape) for k, v in model.state_dict().items()},
                              {k: v for k, v in shapes.items() if not k.startswith(ignored)})
        report.prefix = removed
        if failed is None and report.mismatched:   # timm's checkpoint filter adapted them (pos_embed)
            adapted = set(report.mismatched)
            report = LoadReport(report.loaded + len(adapted), removed,
                                [k for k in report.missing if k not in adapted], report.unexpected)
        check_report(report, str(weights), list(shapes))
        if failed is not None:
            raise BackboneError(f"timm could not load {weights}: {str(failed).strip().splitlines()[0]}")
        sha = file_sha256(weights)
    config = timm_data_config(name, model)
    return Backbone(label, PooledTimm(model).eval(), timm.data.create_transform(**config),
                    _timm_preprocess(config), sha, weights, report)


def icfrr_checkpoint_path(pretrained_root: str | Path, dataset: str) -> Path:
    """``<pretrained_root>/<dataset folder>/checkpoint.pth`` (docs/SPEC.md section 5)."""
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
    state = extract_state_dict(read_weights_file(checkpoint, trust), checkpoint)  # a bad file fails fast
    model = _create_timm(model_name, **model_kwargs)
    report = fit_state_dict(model, state, str(checkpoint), optional_prefixes=_classifier_prefixes(model))
    size = tuple(model.patch_embed.img_size)                   # the ViT's own input size
    transform = Resize((int(size[0]), int(size[1])), IMAGENET_MEAN, IMAGENET_STD)
    return Backbone("icfrr", PooledTimm(model).eval(), transform, transform.describe(),
                    file_sha256(checkpoint), checkpoint, report)


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
        trust_checkpoint: Allow unpickling Python objects in the published checkpoint
            (``icfrr`` only: timm backbones load weights only, as timm does).

    Raises:
        BackboneError: Unknown spec, or weights missing, unreadable or not fitting.
    """
    if spec == "demo":
        transform = Resize(DEMO_SIZE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        return Backbone("demo", EdgeHistogram().eval(), transform, transform.describe(),
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
            return _load_timm(name, None, spec)
        return _load_timm(name, Path(weights), spec)
    raise BackboneError(f"unknown backbone {spec!r}; use icfrr, demo or timm:<model name>")
