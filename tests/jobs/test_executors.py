"""jobs.executors without a Ray cluster: the chunk bookkeeping against run_configs, the query
chunks, the executor flags' one-line refusals, and a local sweep that never imports Ray."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import icfrr
from icfrr.reranking import rerank_chunks
from jobs import executors, sweep
from jobs.executors import ChunkAssembler, Group, query_chunks
from jobs.engine_runner import run_configs
from icfrr.run_config import RunConfig
from tests.jobs.test_engine_runner import _assert_same_outcome
from tests.jobs.toy import toy_distances

REPO = Path(__file__).resolve().parents[2]


def _assert_same_outcomes(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        _assert_same_outcome(a, b)
        for pa, pb in zip(a.per_query, b.per_query, strict=True):
            for k, v in pb.items():
                np.testing.assert_array_equal(pa[k], v)


def test_chunks_in_any_order_with_a_duplicate_give_run_configs_outcomes_once() -> None:
    qg, gg, labels_q, labels_g = toy_distances(seed=5, q=23, g=50)
    graph = icfrr.neighbor_graph(gg, 20)
    configs = tuple(RunConfig(kg=8, kq=6, beta=b, n_iter=4, variant="paper") for b in (0.25, 1.0))
    want = run_configs(qg, graph, labels_q, labels_g, configs, device="cpu", top_n=9)
    chunks = query_chunks(23, 50, 2, 4, 9, slots=4)
    assert len(chunks) >= 4
    results = []
    for c, sl in enumerate(chunks):   # each chunk run on its own, as a task runs it
        (res,) = rerank_chunks(qg[sl], graph, kg=8, kq=6, betas=[0.25, 1.0], n_iter=4, variant="paper",
                               labels_q=labels_q[sl], labels_g=labels_g, top_n=9, chunk_size=sl.stop - sl.start,
                               device="cpu")
        results.append((c, type(res)(sl, res.top_gallery, res.top_scores, res.metrics)))
    arrivals = results + [results[1]]   # chunk 1 arrives twice (a retried task)
    random.Random(0).shuffle(arrivals)
    assembler = ChunkAssembler([Group((0, 1), configs, True)], [chunks], labels_q)
    released = [out for c, res in arrivals if (out := assembler.add(0, c, res, 1.0)) is not None]
    assert len(released) == 1 and assembler.duplicates == 1 and assembler.pending == 0
    _assert_same_outcomes(released[0], want)
    assert released[0][0].seconds == len(chunks) / 2   # the tasks' seconds, shared by the two betas


def test_a_chunk_answering_other_queries_is_refused() -> None:
    qg, gg, labels_q, labels_g = toy_distances(seed=5, q=10, g=30)
    graph = icfrr.neighbor_graph(gg, 10)
    cfg = RunConfig(kg=5, kq=5, beta=0.5, n_iter=1)
    (res,) = rerank_chunks(qg[0:5], graph, kg=5, kq=5, betas=[0.5], n_iter=1, labels_q=labels_q[0:5],
                           labels_g=labels_g, top_n=4, device="cpu")
    assembler = ChunkAssembler([Group((0,), (cfg,), True)], [[slice(0, 5), slice(5, 10)]], labels_q)
    with pytest.raises(ValueError, match="expected 5..9"):
        assembler.add(0, 1, res, 0.0)


@pytest.mark.parametrize("q, slots", [(1, 4), (7, 2), (100, 3), (2400, 2), (2400, 64)])
def test_query_chunks_cover_every_query_once_in_balanced_chunks(q, slots) -> None:
    chunks = query_chunks(q, 27989, 3, 5, 100, slots)
    assert chunks[0].start == 0 and chunks[-1].stop == q
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
    sizes = [c.stop - c.start for c in chunks]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert len(chunks) >= min(q, slots)
    assert max(sizes) * (4 * 27989 + 16 * 3 * 6 * 100) <= 1 << 27   # the engine's chunk memory


def _toy_cache(root: Path) -> Path:
    import torch

    qg, gg, lq, lg = toy_distances(seed=3, q=15, g=60)
    folder = root / "toy" / "-1"
    folder.mkdir(parents=True)
    torch.save(qg, folder / "qg_dists.pth")
    torch.save(gg, folder / "gg_dists.pth")
    torch.save({"query": torch.from_numpy(lq), "gallery": torch.from_numpy(lg)}, folder / "labels.pth")
    return root


def _refused(tmp_path: Path, capsys, extra: list[str]) -> str:
    cache = _toy_cache(tmp_path / "cache")
    db = tmp_path / "out" / "r.duckdb"
    code = sweep.main(["--dataset", "toy", "--cache_root", str(cache), "--device", "cpu", "--kg", "4",
                       "--kq", "5", "--db", str(db), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("sweep: error: "), err
    assert not (tmp_path / "out").exists()   # no database, no lock, not even its folder
    assert sorted(p.name for p in (cache / "toy" / "-1").iterdir()) == ["gg_dists.pth", "labels.pth",
                                                                      "qg_dists.pth"]
    return err


def test_ray_address_without_the_ray_executor_is_refused(tmp_path, capsys) -> None:
    err = _refused(tmp_path, capsys, ["--ray-address", "127.0.0.1:6379"])
    assert "--ray-address is for --executor ray" in err


def test_a_malformed_ray_address_is_refused(tmp_path, capsys) -> None:
    err = _refused(tmp_path, capsys, ["--executor", "ray", "--ray-address", "head-node"])
    assert "not auto or HOST:PORT" in err


def test_the_ray_executor_without_ray_names_the_extra(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)   # as if Ray were not installed
    err = _refused(tmp_path, capsys, ["--executor", "ray"])
    assert 'pip install -e ".[ray]"' in err


@pytest.mark.parametrize("address", ["127.0.0.1:1", "192.0.2.1:6379"])   # refused; TEST-NET, never answers
def test_an_unreachable_ray_address_is_refused_within_the_timeout(tmp_path, capsys, monkeypatch, address) -> None:
    pytest.importorskip("ray")
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 2.0)
    err = _refused(tmp_path, capsys, ["--executor", "ray", "--ray-address", address])
    assert f"--ray-address {address}" in err and "ray start --head" in err


def test_a_local_sweep_never_imports_ray(tmp_path) -> None:
    cache = _toy_cache(tmp_path / "cache")
    code = ("import sys; from jobs import sweep; "
            f"rc = sweep.main(['--dataset', 'toy', '--cache_root', {str(cache)!r}, '--device', 'cpu', '--kg', '4', "
            f"'--kq', '5', '--n-times', '2', '--db', {str(tmp_path / 'l.duckdb')!r}, '--quiet']); "
            "sys.exit(rc or (3 if 'ray' in sys.modules or 'jobs.ray_executor' in sys.modules else 0))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(new)" in done.stdout   # the sweep really ran


def test_ray_address_auto_without_a_cluster_is_refused(tmp_path, capsys, monkeypatch) -> None:
    ray = pytest.importorskip("ray")

    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)   # as Ray answers when no cluster runs here
    err = _refused(tmp_path, capsys, ["--executor", "ray", "--ray-address", "auto"])
    assert "no Ray cluster runs on this machine" in err and "ray start --head" in err
