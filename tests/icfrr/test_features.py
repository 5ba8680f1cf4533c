"""Backbones and extraction: published checkpoint loading (trusted/untrusted, key reports),
timm with local weights, the demo descriptor, and unreadable images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from icfrr.features import (BackboneError, ImageReadError, extract_features, load_backbone, load_icfrr,
                            preprocess_config)
from icfrr.features.extract import open_rgb
from tests.icfrr.image_data import TINY_VIT, published_checkpoint, shape_image, tiny_vit


def _vit_oracle(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Spec section 5 written out by hand: tokens through the blocks, final norm,
    class token dropped, mean over patch tokens, L2-normalised."""
    tokens = model.patch_embed(x)
    tokens = torch.cat([model.cls_token.expand(len(x), -1, -1), tokens], 1) + model.pos_embed
    for block in model.blocks:
        tokens = block(tokens)
    pooled = model.norm(tokens)[:, 1:].mean(1)
    return pooled / pooled.norm(dim=1, keepdim=True)


@pytest.fixture()
def images(tmp_path):
    paths = []
    for i, kind in enumerate(["circle", "square", "triangle"]):
        paths.append(tmp_path / f"{i}.png")
        shape_image(paths[-1], kind, filled=bool(i % 2))
    return paths


def _pixels(paths, size: int) -> torch.Tensor:
    arr = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_untrusted_load_refuses_pickled_objects_and_names_the_flag(tmp_path):
    ckpt = published_checkpoint(tmp_path / "checkpoint.pth", tiny_vit().state_dict(), with_objects=True)
    with pytest.raises(BackboneError, match="--trust-checkpoint") as err:
        load_icfrr(ckpt, trust=False, **TINY_VIT)
    assert "\n" not in str(err.value) and "argparse.Namespace" in str(err.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_checkpoint_pickled_without_torch_is_refused_as_pickled_objects(tmp_path, protocol):
    """Issue 11: pickle.dump'ed files fail weights-only loading without naming a global."""
    import argparse
    import pickle
    ckpt = tmp_path / "checkpoint.pth"
    ckpt.write_bytes(pickle.dumps({"model_state_dict_best": {}, "args": argparse.Namespace(a=1)},
                                  protocol=protocol))
    with pytest.raises(BackboneError) as err:
        load_icfrr(ckpt, trust=False, **TINY_VIT)
    text = str(err.value)
    assert "\n" not in text and "pickled Python objects" in text and "could run code" in text
    assert "--trust-checkpoint" in text and "not a torch checkpoint" not in text


def test_trusted_load_gives_the_spec_feature(tmp_path, images):
    source = tiny_vit(seed=1).eval()
    ckpt = published_checkpoint(tmp_path / "checkpoint.pth", source.state_dict(), with_objects=True)
    bb = load_icfrr(ckpt, trust=True, **TINY_VIT)
    for key, value in source.state_dict().items():
        assert torch.equal(bb.model.model.state_dict()[key], value)
    assert bb.preprocess == {"kind": "resize", "input_size": (3, 32, 32), "interpolation": "bilinear",
                             "crop_pct": 1.0, "crop_mode": "squash", "mean": (0.485, 0.456, 0.406),
                             "std": (0.229, 0.224, 0.225)}   # not timm's config of the ViT (mean 0.5)
    feats = extract_features(bb, images, num_workers=0, progress=False)
    with torch.no_grad():
        expected = _vit_oracle(source, _pixels(images, 32)).numpy()
    np.testing.assert_allclose(feats, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-6)


def test_untrusted_load_works_when_the_dict_holds_only_tensors(tmp_path):
    source = tiny_vit(seed=2)
    ckpt = published_checkpoint(tmp_path / "checkpoint.pth", source.state_dict(), with_objects=False)
    bb = load_icfrr(ckpt, trust=False, **TINY_VIT)
    assert torch.equal(bb.model.model.pos_embed, source.pos_embed)
    assert bb.report.loaded == len(source.state_dict()) and not bb.report.unexpected


def test_extra_and_prefixed_keys_are_reported_not_hidden(tmp_path):
    state = {f"module.{k}": v for k, v in tiny_vit().state_dict().items()}
    state["module.distill_head.weight"] = torch.zeros(3, 32)
    del state["module.head.bias"]
    bb = load_icfrr(published_checkpoint(tmp_path / "c.pth", state, False), **TINY_VIT)
    assert bb.report.prefix == "module."
    assert bb.report.unexpected == ["module.distill_head.weight"]
    assert bb.report.missing == ["head.bias"]
    summary = bb.report.summary()
    assert "distill_head.weight" in summary and "head.bias" in summary


def test_missing_trunk_weights_or_another_shape_stop_the_load(tmp_path):
    state = tiny_vit().state_dict()
    del state["blocks.0.attn.qkv.weight"]
    with pytest.raises(BackboneError, match=r"blocks\.0\.attn\.qkv\.weight"):
        load_icfrr(published_checkpoint(tmp_path / "a.pth", state, False), **TINY_VIT)
    state = tiny_vit().state_dict()
    state["pos_embed"] = torch.zeros(1, 3, 32)
    with pytest.raises(BackboneError, match="pos_embed"):
        load_icfrr(published_checkpoint(tmp_path / "b.pth", state, False), **TINY_VIT)
    torch.save({"model_state_dict_best": {"other.weight": torch.zeros(2)}}, tmp_path / "c.pth")
    with pytest.raises(BackboneError, match="no key"):
        load_icfrr(tmp_path / "c.pth", **TINY_VIT)


def test_icfrr_backbone_finds_the_published_layout_or_says_where_it_looked(tmp_path):
    with pytest.raises(BackboneError, match="needs --pretrained-root"):
        load_backbone("icfrr", dataset="tuberlin")
    with pytest.raises(BackboneError, match=r"sketchy/zeroshot2/checkpoint\.pth"):
        load_backbone("icfrr", dataset="sketchy_zs2", pretrained_root=tmp_path)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot read"):
        load_icfrr(tmp_path / "bad.pth", **TINY_VIT)


def test_timm_backbone_needs_local_weights(tmp_path):
    with pytest.raises(BackboneError, match="needs --weights"):
        load_backbone("timm:resnet10t")
    with pytest.raises(BackboneError, match="weights file not found"):
        load_backbone("timm:resnet10t", weights=tmp_path / "nope.safetensors")
    with pytest.raises(BackboneError, match="no model"):
        load_backbone("timm:no_such_net", weights="random")
    with pytest.raises(BackboneError, match="unknown backbone"):
        load_backbone("resnet")
    with pytest.raises(BackboneError, match="no model"):
        preprocess_config("timm:no_such_net")


def _resnet(tmp_path, name: str = "r.safetensors", edit=None) -> tuple[torch.nn.Module, object]:
    """A seeded random resnet10t and its weights saved to ``tmp_path/name`` (after ``edit``)."""
    import timm
    torch.manual_seed(3)
    source = timm.create_model("resnet10t", pretrained=False).eval()
    state = dict(source.state_dict())
    if edit is not None:
        state = edit(state)
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(state, path)
    else:
        torch.save(state, path)
    return source, path


def test_timm_weights_load_through_timms_pretrained_file_path(tmp_path, monkeypatch):
    import timm.models._builder as builder
    read = []
    real = builder.load_state_dict
    monkeypatch.setattr(builder, "load_state_dict", lambda p, *a, **k: read.append(p) or real(p, *a, **k))
    for name in ("r.safetensors", "r.pth"):
        source, path = _resnet(tmp_path, name)
        bb = load_backbone("timm:resnet10t", weights=path)
        assert read[-1] == str(path)          # timm read the file itself (weights-only / safetensors)
        own = bb.model.model.state_dict()
        for key, value in source.state_dict().items():
            if not key.startswith("fc."):     # the classifier is dropped: features never use it
                assert torch.equal(own[key], value), key
        assert not any(k.startswith("fc.") for k in own)
        assert bb.report.loaded == len(own) and not bb.report.missing and not bb.report.unexpected
        assert bb.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(read) == 2


def test_timm_extraction_is_timms_own_transform_then_the_model(tmp_path, images):
    import timm
    wide = tmp_path / "wide.png"
    Image.new("RGB", (70, 40), (30, 120, 200)).save(wide)
    paths = images + [wide]
    source, path = _resnet(tmp_path)
    bb = load_backbone("timm:resnet10t", weights=path)
    config = timm.data.resolve_model_data_config(source)
    assert bb.preprocess == {"kind": "timm", **config} == preprocess_config("timm:resnet10t")
    assert config["interpolation"] == "bicubic" and config["crop_pct"] < 1   # not the ICFRR resize
    feats = extract_features(bb, paths, num_workers=0, progress=False, batch_size=2)
    transform = timm.data.create_transform(**config)
    x = torch.stack([transform(open_rgb(p)) for p in paths])
    with torch.no_grad():
        pooled = source.forward_head(source.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(feats, (pooled / pooled.norm(dim=1, keepdim=True)).numpy(), atol=1e-5)


def test_preprocess_is_known_before_loading_and_differs_by_backbone():
    import timm
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    assert preprocess_config("timm:vit_tiny_patch16_224") == {
        "kind": "timm", **timm.data.resolve_model_data_config(vit)}
    assert load_backbone("timm:resnet10t", weights="random").preprocess == preprocess_config("timm:resnet10t")
    assert preprocess_config("icfrr") == {
        "kind": "resize", "input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 1.0,
        "crop_mode": "squash", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    assert preprocess_config("demo") == load_backbone("demo").preprocess
    described = [preprocess_config(s) for s in ("icfrr", "demo", "timm:resnet10t", "timm:vit_tiny_patch16_224")]
    assert len({json.dumps(d, sort_keys=True) for d in described}) == 4


def test_timm_weights_report_unexpected_keys_and_refuse_missing_ones(tmp_path):
    def extra(state):
        state["distill_head.weight"] = torch.zeros(3, 4)
        del state["fc.weight"], state["fc.bias"]          # the classifier may be absent
        return state
    bb = load_backbone("timm:resnet10t", weights=_resnet(tmp_path, "a.safetensors", extra)[1])
    assert bb.report.unexpected == ["distill_head.weight"] and not bb.report.missing
    assert "distill_head.weight" in bb.report.summary()

    def wrapped(state):
        return {f"module.{k}": v for k, v in state.items()}
    bb = load_backbone("timm:resnet10t", weights=_resnet(tmp_path, "b.safetensors", wrapped)[1])
    assert bb.report.prefix == "module." and not bb.report.missing and not bb.report.unexpected

    def trunk_gone(state):
        del state["layer1.0.conv1.weight"]
        return state
    with pytest.raises(BackboneError, match=r"does not fit.*missing keys \(1\): layer1\.0\.conv1\.weight"):
        load_backbone("timm:resnet10t", weights=_resnet(tmp_path, "c.safetensors", trunk_gone)[1])

    def reshaped(state):
        state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
        return state
    with pytest.raises(BackboneError, match=r"layer1\.0\.conv1\.weight") as err:
        load_backbone("timm:resnet10t", weights=_resnet(tmp_path, "d.safetensors", reshaped)[1])
    assert "\n" not in str(err.value)

    def nested(state):                                     # timm would not find these: not loaded
        return {f"backbone.{k}": v for k, v in state.items()}
    with pytest.raises(BackboneError, match="no key"):
        load_backbone("timm:resnet10t", weights=_resnet(tmp_path, "e.safetensors", nested)[1])


def test_timm_weights_with_pickled_objects_are_refused_whatever_the_trust(tmp_path):
    _, path = _resnet(tmp_path, "w.pth", lambda s: {"state_dict": s, "model": torch.nn.Linear(2, 2)})
    for trust in (False, True):
        with pytest.raises(BackboneError, match="weights only") as err:
            load_backbone("timm:resnet10t", weights=path, trust_checkpoint=trust)
        assert "\n" not in str(err.value) and "--backbone icfrr" in str(err.value)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    for junk in ("junk.pth", "junk.safetensors"):
        with pytest.raises(BackboneError, match="cannot read") as err:
            load_backbone("timm:resnet10t", weights=tmp_path / junk)
        assert "holds pickled" not in str(err.value) and "\n" not in str(err.value)


def test_missing_and_corrupt_images_stop_with_their_path(tmp_path, images):
    bb = load_backbone("demo")
    gone = tmp_path / "gone.png"
    with pytest.raises(ImageReadError, match="gone.png"):
        extract_features(bb, [images[0], gone], num_workers=0, progress=False)
    broken = tmp_path / "broken image.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="broken image.png") as err:
        extract_features(bb, [images[0], broken], num_workers=1, progress=False)
    assert "\n" not in str(err.value)


def test_transparent_sketch_background_reads_as_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((3, 3), (10, 10, 10, 255))
    rgba.save(tmp_path / "s.png")
    arr = np.asarray(open_rgb(tmp_path / "s.png"))
    assert arr[0, 0].tolist() == [255, 255, 255] and arr[3, 3].tolist() == [10, 10, 10]


def test_demo_descriptor_matches_outlines_to_filled_shapes(tmp_path):
    paths = {}
    for kind in ("square", "circle", "triangle"):
        for filled in (False, True):
            paths[kind, filled] = tmp_path / f"{kind}{int(filled)}.png"
            shape_image(paths[kind, filled], kind, filled)
    order = list(paths)
    feats = extract_features(load_backbone("demo"), [paths[k] for k in order], num_workers=0, progress=False)
    f = dict(zip(order, feats))
    for kind in ("square", "circle", "triangle"):
        same = np.linalg.norm(f[kind, False] - f[kind, True])
        others = [np.linalg.norm(f[kind, False] - f[o, True]) for o in ("square", "circle", "triangle") if o != kind]
        assert same < min(others), kind
    again = extract_features(load_backbone("demo"), [paths[k] for k in order], num_workers=0, progress=False)
    assert np.array_equal(feats, again)


@pytest.mark.slow
def test_full_size_published_checkpoint_loads_through_the_dataset_layout(tmp_path, images):
    """The real architecture: a random ViT-B/16 saved as the published dict, found via --pretrained-root."""
    import timm
    torch.manual_seed(5)
    source = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    state = source.state_dict() | {"distill_head.weight": torch.zeros(2, 768)}
    (tmp_path / "sketchy" / "zeroshot1").mkdir(parents=True)
    published_checkpoint(tmp_path / "sketchy" / "zeroshot1" / "checkpoint.pth", state, with_objects=True)
    bb = load_backbone("icfrr", dataset="sketchy_zs1", pretrained_root=tmp_path, trust_checkpoint=True)
    assert bb.report.unexpected == ["distill_head.weight"] and not bb.report.missing
    assert bb.input_size == (224, 224)
    feats = extract_features(bb, images[:2], num_workers=0, progress=False)
    with torch.no_grad():
        expected = _vit_oracle(source, _pixels(images[:2], 224)).numpy()
    np.testing.assert_allclose(feats, expected, atol=1e-4)
    del source, bb
