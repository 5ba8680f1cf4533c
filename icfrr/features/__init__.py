"""Features: backbone loading (published ICFRR checkpoint, timm + local weights,
the weight-free demo descriptor) and batched extraction to L2-normalised float32."""

from .backbones import (ICFRR_MODEL, Backbone, icfrr_checkpoint_path, load_backbone, load_icfrr,
                        preprocess_config, weights_file)
from .checkpoint import LoadReport, file_sha256, read_weights_file
from .errors import BackboneError, ImageReadError
from .extract import default_device, extract_features

__all__ = ["ICFRR_MODEL", "Backbone", "BackboneError", "ImageReadError", "LoadReport", "default_device",
           "extract_features", "file_sha256", "icfrr_checkpoint_path", "load_backbone", "load_icfrr",
           "preprocess_config", "read_weights_file", "weights_file"]
