"""``python -m jobs.extract``: artifacts written on good input; one line, exit 2, nothing written on bad."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.extract import main
from tests.icfrr.image_data import folder_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return folder_dataset(tmp_path_factory.mktemp("shapes"))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_extract_writes_artifacts_and_reports_the_initial_map(tmp_path, shapes_root, capsys):
    cache = tmp_path / "cache"
    args = ["--dataset", "folder", "--data_root", str(shapes_root), "--backbone", "demo",
            "--cache_root", str(cache), "--workers", "0", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "6 queries x 12 gallery" in out and "written" in out
    map_all = float(out.split("mAP@all ")[1].split()[0])
    assert 0 < map_all <= 1
    names = {p.name for p in _files(cache)}
    assert {"qg_dists.parquet", "neighbors.parquet", "query_features.parquet", "COMPLETE.json"} <= names
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out


def test_published_cache_example_imports(tmp_path, capsys):
    assert main(["--dataset", "custom", "--cache_root", str(REPO / "examples"), "--data_root",
                 str(REPO / "examples" / "custom"), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "16 queries x 48 gallery" in out and "backbone import" in out and "mAP@all" in out


def test_npy_import_from_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "qg.npy", rng.random((3, 5), dtype=np.float32))
    gg = rng.random((5, 5)).astype(np.float32)
    np.save(tmp_path / "gg.npy", (gg + gg.T) / 2)
    assert main(["--dataset", "mine", "--qg", str(tmp_path / "qg.npy"), "--gg", str(tmp_path / "gg.npy"),
                 "--cache_root", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "3 queries x 5 gallery" in out and "mAP@all" not in out      # no labels: no metrics
    assert (tmp_path / "c" / "mine" / "-1").is_dir()


def _bad_cases(tmp_path: Path, shapes_root: Path) -> dict[str, tuple[list[str], str]]:
    broken = tmp_path / "broken"
    folder_dataset(broken, classes=("circle",), n_query=1, n_gallery=2)
    (broken / "gallery" / "circle" / "g1.png").write_bytes(b"not an image")
    ckpt = tmp_path / "ckpt" / "custom" / "checkpoint.pth"
    ckpt.parent.mkdir(parents=True)
    import argparse
    torch.save({"model_state_dict_best": {}, "args": argparse.Namespace(a=1)}, ckpt)
    return {
        "missing data root": (["--dataset", "folder", "--data_root", str(tmp_path / "nowhere")], "not found"),
        "unknown dataset": (["--dataset", "imagenet", "--data_root", str(shapes_root)], "unknown dataset"),
        "bad per_class": (["--dataset", "folder", "--data_root", str(shapes_root), "--per_class", "0"], "per_class"),
        "timm without weights": (["--dataset", "folder", "--data_root", str(shapes_root), "--backbone",
                                  "timm:resnet10t"], "--weights"),
        "untrusted checkpoint": (["--dataset", "folder", "--data_root", str(shapes_root), "--backbone", "icfrr",
                                  "--pretrained-root", str(tmp_path / "ckpt")], "--trust-checkpoint"),
        "corrupt image": (["--dataset", "folder", "--data_root", str(broken), "--backbone", "demo"], "g1.png"),
        "force and no-cache": (["--dataset", "folder", "--data_root", str(shapes_root), "--force-cache",
                                "--no-cache"], "contradict"),
        "bad batch size": (["--dataset", "demo", "--batchsize", "0"], "--batchsize"),
    }


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, shapes_root, capsys):
    for name, (args, match) in _bad_cases(tmp_path, shapes_root).items():
        args = args + ["--cache_root", str(tmp_path / "cache"), "--workers", "0", "--quiet"]
        assert main(args) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and match in err, (name, err)
        assert _files(tmp_path / "cache") == [], name


@pytest.mark.slow
def test_runs_as_a_module(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jobs.extract", "--dataset", "tuberlin", "--data_root",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "file list not found" in done.stderr
