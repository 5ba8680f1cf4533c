"""Reading weight files safely and fitting their keys to a timm model.

The published ICFRR checkpoints are pickled dicts that also hold Python
objects (``args``, ``data_transform``); unpickling those runs code from the
file, so it only happens when the user says the file is trusted. Otherwise a
weights-only load is tried, which works when the file holds only tensors and
plain containers.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..files import file_sha256, pickled_global  # noqa: F401  (re-exported)
from .errors import BackboneError

#: Dict keys under which training scripts commonly nest the model weights, tried in order.
STATE_DICT_KEYS = ("model_state_dict_best", "state_dict_ema", "model_state_dict", "state_dict", "model")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _looks_pickled(path: Path) -> bool:
    """Whether a file starts like a torch zip archive or a binary pickle (protocol 2 or later)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def read_weights_file(path: str | Path, trust: bool = False) -> dict:
    """Load a ``.safetensors``, ``.pth``/``.pt``/``.bin`` file without running its code.

    Args:
        path: The weights file.
        trust: Allow full unpickling (runs code from the file).

    Returns:
        Whatever the file holds (normally a dict).

    Raises:
        BackboneError: Missing file, unreadable file, or pickled objects without ``trust``.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise BackboneError(f"cannot read {path} as safetensors: {exc}") from None
    try:
        with warnings.catch_warnings():      # e.g. "Detected pickle protocol 4": the error says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        found = pickled_global(exc)
        if not trust and (found or ("Weights only load failed" in str(exc) and _looks_pickled(path))):
            example = f" (e.g. {found})" if found else ""
            raise BackboneError(
                f"{path} holds pickled Python objects{example} besides the weights, and loading those "
                "could run code from the file; if you trust its source, pass --trust-checkpoint to "
                "load it") from None
        raise BackboneError(f"cannot read weights file {path}: not a torch checkpoint "
                            f"({_first_line(exc)[:80]})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise BackboneError(f"cannot read weights file {path}: {_first_line(exc)}") from None


def extract_state_dict(obj: object, path: str | Path) -> dict[str, torch.Tensor]:
    """Find the model weights in a loaded file: nested under a known key or the dict itself."""
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise BackboneError(f"{path} holds no model weights (expected a state dict, or one under "
                        f"one of the keys {', '.join(STATE_DICT_KEYS)})")


@dataclass
class LoadReport:
    """What happened when a state dict was fitted to a model.

    Attributes:
        loaded: Number of tensors copied into the model.
        prefix: Key prefix stripped from the file's keys ("" for none).
        missing: Model keys the file lacks (only classifier keys may be missing).
        unexpected: File keys the model has no place for (ignored).
        mismatched: Keys present in both with different shapes (ignored; classifier only).
    """

    loaded: int
    prefix: str = ""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self, limit: int = 8) -> str:
        """One line for the console: counts and the first few key names of each kind."""
        def names(keys: list[str]) -> str:
            more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more
        parts = [f"loaded {self.loaded} tensors"]
        if self.prefix:
            parts.append(f"stripped key prefix {self.prefix!r}")
        for what, keys in (("ignored unexpected keys", self.unexpected), ("missing keys", self.missing),
                           ("ignored keys of another shape", self.mismatched)):
            if keys:
                parts.append(f"{what} ({len(keys)}): {names(keys)}")
        return "; ".join(parts)


def _best_prefix(keys: list[str], model_keys: set[str]) -> str:
    """The key prefix (up to two dotted components) whose removal matches most model keys."""
    candidates = {""}
    for k in keys:
        parts = k.split(".")
        for n in (1, 2):
            if len(parts) > n:
                candidates.add(".".join(parts[:n]) + ".")

    def score(p: str) -> tuple[int, int]:
        return sum(1 for k in keys if k.startswith(p) and k[len(p):] in model_keys), -len(p)
    return max(sorted(candidates), key=score)


def compare_keys(own: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]],
                 prefix: str = "") -> LoadReport:
    """How a file's keys fit a model's, without loading anything.

    Args:
        own: The model's state-dict keys -> shapes.
        given: The file's keys -> shapes.
        prefix: Prefix stripped from the file's keys before matching (keys
            without it are unexpected).

    Returns:
        The report; ``loaded`` counts the model keys the file fills with the right shape.
    """
    stripped = {k[len(prefix):]: tuple(v) for k, v in given.items() if k.startswith(prefix)}
    unexpected = sorted([k for k in given if not k.startswith(prefix)]
                        + [prefix + k for k in stripped if k not in own])
    mismatched = sorted(k for k, v in stripped.items() if k in own and v != tuple(own[k]))
    usable = [k for k in stripped if k in own and k not in mismatched]
    missing = sorted(k for k in own if k not in stripped or k in mismatched)
    return LoadReport(len(usable), prefix, missing, unexpected, mismatched)


def check_report(report: LoadReport, source: str, first_keys: list[str],
                 optional_prefixes: tuple[str, ...] = ()) -> None:
    """Refuse a load that fills nothing, or leaves trunk weights (outside ``optional_prefixes``) unfilled.

    Raises:
        BackboneError: Nothing matches, or trunk weights are missing or of another shape.
    """
    if not report.loaded:
        raise BackboneError(f"no key of {source} matches the model (first keys: "
                            f"{', '.join(first_keys[:3])}); is it the right model?")
    if any(not k.startswith(optional_prefixes) for k in report.missing):
        raise BackboneError(f"{source} does not fit the model: {report.summary()}")


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def fit_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                   optional_prefixes: tuple[str, ...] = ()) -> LoadReport:
    """Copy ``state`` into ``model``, reporting every key that does not fit.

    Keys under ``optional_prefixes`` (the classifier head) may be missing or of
    another shape: features never use them. Anything else missing is an error.

    Args:
        model: The timm model to fill.
        state: Tensors by key, possibly under a wrapper prefix such as ``module.``.
        source: Path shown in messages.
        optional_prefixes: Model key prefixes allowed to stay unfilled.

    Raises:
        BackboneError: Nothing matches, or trunk weights are missing or of another shape.
    """
    own = model.state_dict()
    report = compare_keys(_shapes(own), _shapes(state), _best_prefix(list(state), set(own)))
    check_report(report, source, list(state), optional_prefixes)
    n = len(report.prefix)
    bad = set(report.mismatched)
    model.load_state_dict({k[n:]: v for k, v in state.items()
                           if k.startswith(report.prefix) and k[n:] in own and k[n:] not in bad},
                          strict=False)
    return report


def read_weight_shapes(path: str | Path) -> tuple[dict[str, tuple[int, ...]], str]:
    """The keys and shapes timm's pretrained-file loader would see in a weights file.

    Reads ``.safetensors`` headers only; other files through timm's own
    ``load_state_dict`` (weights-only ``torch.load``, EMA weights preferred,
    ``module.`` wrapper prefixes removed).

    Returns:
        (cleaned key -> shape, the wrapper prefix timm removed or ``""``).

    Raises:
        BackboneError: Missing or unreadable file, or pickled Python objects in it.
    """
    from timm.models import clean_state_dict, load_state_dict

    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as fh:
                raw = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise BackboneError(f"cannot read {path} as safetensors: {_first_line(exc)}") from None
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                state = load_state_dict(str(path))
        except RuntimeError as exc:
            if "weights_only" in str(exc) and _looks_pickled(path):
                raise BackboneError(
                    f"{path} holds pickled Python objects besides the weights; timm backbones load "
                    "weights only (save the state dict as .safetensors; a published ICFRR checkpoint "
                    "loads with --backbone icfrr --trust-checkpoint)") from None
            why = "" if "weights_only" in str(exc) else f" ({_first_line(exc)[:80]})"
            raise BackboneError(f"cannot read weights file {path}: not a torch checkpoint{why}") from None
        except (pickle.UnpicklingError, OSError, EOFError, ValueError, KeyError) as exc:
            raise BackboneError(f"cannot read weights file {path}: not a torch checkpoint "
                                f"({_first_line(exc)[:80]})") from None
        items = state.items() if isinstance(state, Mapping) else ()
        shapes = {k: tuple(v.shape) for k, v in items if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if not shapes:
            raise BackboneError(f"{path} holds no model weights (expected a state dict of tensors)")
        return shapes, ""   # timm's reader returns the keys already cleaned
    cleaned = clean_state_dict(raw)
    removed = next((k[: len(k) - len(c)] for k, c in zip(raw, cleaned) if k != c), "")
    return cleaned, removed
