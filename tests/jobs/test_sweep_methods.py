"""python -m jobs.sweep --method ...: baseline configurations as runs, with their inputs.

The baselines' maths is replaced by small deterministic fakes (patched into
``icfrr.methods``) that use every input they are given; the oracle calls the
same fakes on the same matrices, computed independently here (numpy), sorts
and evaluates. The last test runs the real baselines where they are installed.
"""

from __future__ import annotations

import csv
import io

import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

import icfrr
from icfrr import methods, registry
from icfrr.registry import METHODS
from jobs import extract, sweep, sweep_flags
from jobs.artifacts import ArtifactRequest, Compute, Images, ensure_artifacts
from store.artifacts import QQ_FILE
from store.db import connect_reader, connect_writer
from store.parquet_rows import read_rows
from icfrr.run_config import RunConfig
from tests.jobs.test_sweep import Q, make_folder_dataset, run, write_cache

G = 40
BASELINES = [m.key for m in METHODS if not m.iterative]


def fake_functions(seen: dict[str, list]) -> dict:
    """Deterministic stand-ins for the baselines; each records what it was given."""

    def k_reciprocal(qg, gg, qq, *, k1, k2, lambda_value):
        seen.setdefault("k_reciprocal", []).append((gg, qq))
        return (1 - lambda_value) * qg + lambda_value * (qq @ qg) / qq.shape[0] + 0.01 * k1 * (qg @ gg) / len(gg) + k2

    def ecn(qg, gg, qq, *, t, q, k):
        seen.setdefault("ecn", []).append((gg, qq))
        return qg - 0.1 * t * (qq @ qg) / len(qq) + 0.01 * q * k * (qg @ gg) / len(gg)

    def expansion(name):
        def fn(qg, gg, *, fq=None, fg=None, **kw):
            seen.setdefault(name, []).append((gg, fq, fg))
            a, n = sum(v for k, v in kw.items() if "alpha" in k), sum(v for k, v in kw.items() if "n" in k)
            if fq is not None:
                assert gg is None, "the feature form needs no gallery-gallery matrix"
                return qg - 0.05 * a * n * (fq @ fg.T) @ (fg @ fg.T) / len(fg)
            return qg - 0.05 * a * n * (qg @ gg) / len(gg)
        return fn

    return {"k_reciprocal": k_reciprocal, "ecn": ecn, "alpha_qe": expansion("alpha_qe"),
            "dba": expansion("dba"), "dba_alpha_qe": expansion("dba_alpha_qe")}


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    got: dict[str, list] = {}
    fakes = fake_functions(got)
    monkeypatch.setattr(methods, "baseline_function", lambda name: fakes[name])
    return got


def _euclid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.sqrt(((a[:, None, :].astype(np.float64) - b[None].astype(np.float64)) ** 2).sum(-1))
    return d.astype(np.float32)


def oracle_distances(key: str, params: dict, qg, gg, qq, fq=None, fg=None) -> np.ndarray:
    """The fake of ``key`` called by hand with the registry's parameters as keywords."""
    fakes = fake_functions({})
    if key == "k_reciprocal":
        return fakes[key](qg, gg, qq, k1=params["k1"], k2=params["k2"], lambda_value=params["lambda_value"])
    if key == "ecn":
        return fakes[key](qg, gg, qq, t=params["t"], q=params["q"], k=params["k"])
    kw = {p.name: params[p.name] for p in registry.method(key).params}   # a parameter's name is its keyword
    fn = fakes["dba_alpha_qe" if key == "dba+alpha_qe" else key]
    return fn(qg, None, fq=fq, fg=fg, **kw) if fq is not None else fn(qg, gg, **kw)


def check_baseline_run(con, run_id: int, dists: np.ndarray, qg, labels_q, labels_g, top_n: int) -> None:
    """Iterations 0 (qg sorted) and 1 (the method's distances sorted), every stored row."""
    rankings = [np.array([sorted(range(d.shape[1]), key=lambda j: (d[i, j], j)) for i in range(d.shape[0])])
                for d in (qg, dists)]
    got = con.execute("SELECT iteration, map_all, map_200, p_25, p_100, p_200 FROM run_metrics "
                      "WHERE run_id = ? ORDER BY iteration", [run_id]).fetchall()
    assert [g[0] for g in got] == [0, 1]
    for row, r in zip(got, rankings):
        want = icfrr.evaluate(r, labels_q, labels_g)
        assert row[1:] == pytest.approx([want[k] for k in icfrr.METRIC_NAMES], rel=1e-12, nan_ok=True)
    for it, (r, d) in enumerate(zip(rankings, (qg, dists))):
        rows = con.execute("SELECT query_idx, rank, gallery_idx, score FROM rankings WHERE run_id = ? "
                           "AND iteration = ? ORDER BY query_idx, rank", [run_id, it]).fetchall()
        n = min(top_n, d.shape[1])
        assert [r3[:3] for r3 in rows] == [(q, k + 1, int(r[q, k])) for q in range(len(r)) for k in range(n)]
        assert [r3[3] for r3 in rows] == pytest.approx(
            [-float(d[q, r[q, k]]) for q in range(len(r)) for k in range(n)], rel=1e-6)
        pq = icfrr.per_query(r, labels_q, labels_g)
        aps = con.execute("SELECT ap FROM query_metrics WHERE run_id = ? AND iteration = ? ORDER BY query_idx",
                          [run_id, it]).fetchall()
        assert [np.nan if a is None else a for (a,) in aps] == pytest.approx(list(pq["ap"]), nan_ok=True)


# ------------------------------------------------------------------------ flags


def test_help_lists_every_methods_flags(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        sweep.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for m in METHODS:
        assert f"--method {m.key} ({m.citation}" in out
        for param in m.params:   # help shows the dash spelling; tests/jobs/test_cli.py checks the others parse
            assert re.search(rf"{re.escape(param.flags[0])}\b", out), param.flags[0]



def test_defaults_are_the_registry_grids() -> None:
    args = sweep.build_parser().parse_args(["--dataset", "x"])
    assert args.method == ["icfrr"]
    for m in METHODS:
        assert sweep_flags.method_grid(args, m) == {p.name: list(p.default) for p in m.params}
    args = sweep.build_parser().parse_args(["--dataset", "x", "--method", "dba+alpha_qe", "ecn", "dba",
                                            "--qe_n", "2", "4", "--dba-alpha", "1", "--ecn-k", "9"])
    sweep_flags.check_flags(args)
    entries, warnings = sweep_flags.expand_grid(args, 40)
    got = [(e.method, dict(e.params)) for e in entries]
    assert got == [("dba+alpha_qe", {"dba_n": 10, "dba_alpha": 1.0, "qe_n": 2, "qe_alpha": 3.0}),
                   ("dba+alpha_qe", {"dba_n": 10, "dba_alpha": 1.0, "qe_n": 4, "qe_alpha": 3.0}),
                   ("ecn", {"t": 3, "q": 8, "k": 9}), ("dba", {"dba_n": 10, "dba_alpha": 1.0})]
    assert warnings == []
    assert all(e.n_iter == 1 and e.kg is None for e in entries)


BAD = {
    "k1 zero": (["--method", "k_reciprocal", "--k1", "3", "0"], "--k1 values must be >= 1"),
    "lambda above 1": (["--method", "k_reciprocal", "--lambda_value", "1.5"],
                       "--lambda-value values must be <= 1"),
    "negative alpha": (["--method", "alpha_qe", "--qe-alpha", "-1"],
                       "--qe-alpha values must be finite and >= 0"),
    "nan alpha": (["--method", "dba", "--dba_alpha", "nan"], "--dba-alpha values must be finite"),
    "not an int": (["--method", "dba", "--dba-n", "2", "x"], "invalid int value"),
    "empty grid": (["--method", "ecn", "--ecn-t"], "expected at least one argument"),
    "unknown method": (["--method", "bm25"], "invalid choice"),
    "flag of a method not run": (["--k1", "5"], "--k1 is a flag of --method k_reciprocal"),
    "icfrr flag without icfrr": (["--method", "k_reciprocal", "--KG", "5"], "--kg is a flag of --method icfrr"),
    "shared flag": (["--method", "dba", "--qe-n", "3"], "--qe-n is a flag of --method alpha_qe or dba+alpha_qe"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_method_flags_exit_2_nothing_written(tmp_path: Path, capsys, seen, case: str) -> None:
    write_cache(tmp_path / "cache")
    db = tmp_path / "r.duckdb"
    connect_writer(db).close()
    before = db.read_bytes()
    cache_before = sorted(p.name for p in (tmp_path / "cache" / "custom" / "-1").iterdir())
    extra, message = BAD[case]
    code, out, err = run(["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
                          "--device", "cpu", *extra], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sweep: error: "), err
    assert message in err
    assert db.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "cache" / "custom" / "-1").iterdir()) == cache_before
    assert seen == {}


# ------------------------------------------------------------------ imported distances


def _runs(con) -> list[tuple]:
    return con.execute("SELECT run_id, method, variant, kg, kq, beta, n_iter, params, config_key "
                       "FROM runs ORDER BY run_id").fetchall()


def test_imported_cache_every_method(tmp_path: Path, capsys, seen) -> None:
    qg, gg, labels_q, labels_g = write_cache(tmp_path / "cache")
    folder = tmp_path / "cache" / "custom" / "-1"
    rng = np.random.default_rng(1)
    fq = rng.normal(size=(Q, 5))
    qq = torch.from_numpy(_euclid(fq, fq))
    torch.save(qq, folder / "qq_dists.pth")
    db = tmp_path / "r.duckdb"
    argv = ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db, "--device", "cpu",
            "--method", "icfrr", *BASELINES, "--kg", 6, "--kq", 5, "--n_times", 2, "--k1", 3, 5,
            "--qe-n", 2, "--top-n", 7]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    qg, gg, qq = qg.numpy(), gg.numpy(), qq.numpy()
    with connect_reader(db) as con:
        runs = _runs(con)
        assert [r[1] for r in runs] == ["icfrr", "k_reciprocal", "k_reciprocal", "ecn", "alpha_qe", "dba",
                                        "dba+alpha_qe"]
        assert runs[0][2:7] == ("reference", 6, 5, 0.5, 2)
        for run_id, key, variant, kg, kq, beta, n_iter, params, _ in runs[1:]:
            assert (variant, kg, kq, beta, n_iter) == (None, None, None, None, 1)
            p = json.loads(params)
            m = next(x for x in METHODS if x.key == key)
            assert p["method"] == key and p["n_iter"] == 1 and p["top_n"] == 7
            assert set(p) >= {x.name for x in m.params}
            assert ("inputs_key" in p) == m.needs_qq   # the imported qq's sha256
            dists = oracle_distances(key, p, qg, gg, qq)
            check_baseline_run(con, run_id, dists, qg, labels_q, labels_g, 7)
        assert json.loads(runs[2][7])["k1"] == 5
        # iteration 0 of every run is the same initial ranking
        zero = con.execute("SELECT DISTINCT map_all, p_100 FROM run_metrics WHERE iteration = 0").fetchall()
        assert len(zero) == 1
    assert len(seen["k_reciprocal"]) == 2 and seen["k_reciprocal"][0][1] is seen["k_reciprocal"][1][1]
    assert np.array_equal(seen["ecn"][0][0], gg) and np.array_equal(seen["ecn"][0][1], qq)
    assert all(fq is None for _, fq, _ in seen["alpha_qe"])   # imported: the distance form
    kept = next((tmp_path / "cache" / "custom" / "-1").glob(f"import-*/{QQ_FILE}"))
    assert np.array_equal(read_rows(kept, ["dists"])[0]["dists"], qq)
    lines = out.splitlines()
    assert any("k_reciprocal k1=5 k2=6 lambda_value=0.3" in ln for ln in lines)
    assert any("dba+alpha_qe dba_n=10 dba_alpha=3 qe_n=2 qe_alpha=3" in ln for ln in lines)
    rows = [ln for ln in lines if re.search(r"\d -> \d", ln)]
    assert len(rows) == 7 and sum(ln.startswith("*") for ln in rows) == 1

    # again: every configuration skipped
    code, out, err = run(argv, capsys)
    assert code == 0 and "skipping 7 configuration(s)" in err and out.count("(skipped)") == 7

    # another qq file: the methods that read it run again, the others are skipped
    torch.save(torch.from_numpy(qq + 1.0), folder / "qq_dists.pth")
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert out.count("(new)") == 3 and out.count("(skipped)") == 4
    with connect_reader(db) as con:
        assert con.execute("SELECT count(*), count(DISTINCT config_key) FROM runs").fetchone() == (10, 10)


def test_imported_cache_without_qq_refused(tmp_path: Path, capsys, seen) -> None:
    write_cache(tmp_path / "cache")
    db = tmp_path / "out" / "r.duckdb"
    for method in ("k_reciprocal", "ecn"):
        code, out, err = run(["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
                              "--method", "icfrr", method], capsys)
        assert code == 2
        assert len(err.strip().splitlines()) == 1 and err.startswith("sweep: error: "), err
        assert f"{tmp_path / 'cache' / 'custom' / '-1' / 'qq_dists.pth'} is missing" in err
        assert not db.parent.exists()
    # the methods without qq run
    code, out, err = run(["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
                          "--method", "dba", "alpha_qe"], capsys)
    assert code == 0, err
    assert set(seen) == {"dba", "alpha_qe"}


# ------------------------------------------------------------------------ features


def test_features_qq_kept_once_and_reused(tmp_path: Path, capsys, seen) -> None:
    root = make_folder_dataset(tmp_path / "data")
    db = tmp_path / "r.duckdb"
    base = ["--dataset", "folder", "--data_root", root, "--backbone", "demo", "--cache_root",
            tmp_path / "cache", "--db", db, "--device", "cpu", "--top-n", 4]
    code, out, err = run([*base, "--method", "ecn", "alpha_qe", "--ecn-k", 4], capsys)
    assert code == 0, err
    arts = ensure_artifacts(ArtifactRequest("folder", root, source=Images("demo"), cache_root=tmp_path / "cache",
                                            compute=Compute(progress=False)), lambda m: None)
    fq, fg = arts.features("query"), arts.features("gallery")
    kept = arts.cache_dir / QQ_FILE
    assert f"query-query distances kept in {kept}" in err
    qq = read_rows(kept, ["dists"])[0]["dists"]
    want = _euclid(fq, fq)
    np.fill_diagonal(want, 0)
    assert np.diag(qq).tolist() == [0.0] * len(fq)
    assert qq == pytest.approx(want, abs=1e-3)  # float32 expansion: |a|²+|b|²-2ab
    gg_want = _euclid(fg, fg)
    np.fill_diagonal(gg_want, 0)
    gg_seen, qq_seen = seen["ecn"][0]
    assert gg_seen == pytest.approx(gg_want, abs=1e-3) and np.array_equal(qq_seen, qq)
    assert all(g is None and np.array_equal(f, fq) for g, f, _ in seen["alpha_qe"])  # feature form
    stamp = kept.stat().st_mtime_ns

    code, out, err = run([*base, "--method", "ecn", "k_reciprocal", "--ecn-k", 4, 5], capsys)
    assert code == 0, err
    assert f"reusing query-query distances in {kept}" in err and "kept in" not in err
    assert kept.stat().st_mtime_ns == stamp
    assert out.count("(skipped)") == 1 and out.count("(new)") == 2
    qg = arts.qg_dists.numpy()
    with connect_reader(db) as con:
        for run_id, key, *_, params, _ in _runs(con):
            p = json.loads(params)
            assert "inputs_key" not in p       # qq follows from the features: the artifact key covers it
            dists = oracle_distances(key, p, qg, gg_want, qq, *((fq, fg) if key == "alpha_qe" else ()))
            got = con.execute("SELECT gallery_idx FROM rankings WHERE run_id = ? AND iteration = 1 "
                              "AND rank = 1 ORDER BY query_idx", [run_id]).fetchall()
            assert [g for (g,) in got] == np.argmin(dists, axis=1).tolist()


def test_no_cache_keeps_nothing(tmp_path: Path, capsys, seen) -> None:
    root = make_folder_dataset(tmp_path / "data")
    code, out, err = run(["--dataset", "folder", "--data_root", root, "--backbone", "demo", "--cache_root",
                          tmp_path / "cache", "--db", tmp_path / "r.duckdb", "--no-cache",
                          "--method", "k_reciprocal"], capsys)
    assert code == 0, err
    assert not (tmp_path / "cache").exists() and len(seen["k_reciprocal"]) == 1


def test_published_files_of_a_baseline(tmp_path: Path, capsys, seen) -> None:
    qg, gg, labels_q, labels_g = write_cache(tmp_path / "cache")
    out_dir = tmp_path / "res"
    code, out, err = run(["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", tmp_path / "r.db",
                          "--method", "dba", "--dba-n", 2, 3, "--rerank_results_dir", out_dir], capsys)
    assert code == 0, err
    folder = out_dir / "custom" / "-1" / "dba_dba_n-3_dba_alpha-3"
    dists = oracle_distances("dba", {"dba_n": 3, "dba_alpha": 3.0}, qg.numpy(), gg.numpy(), None)
    for it, d in enumerate((qg.numpy(), dists)):
        ranks = torch.load(folder / "ranks" / f"reranking_iter_{it}.pth", weights_only=True)
        assert torch.equal(ranks, torch.from_numpy(np.argsort(d, axis=1, kind="stable")))
    assert len((folder / "metrics.csv").read_text().splitlines()) == 3   # header, iterations 0 and 1


# ------------------------------------------------------------------ config keys, records


def test_icfrr_config_keys_unchanged() -> None:
    """Keys computed with the code before baselines existed (stores made then still skip their runs)."""
    assert RunConfig(kg=5, kq=3, beta=0.5, n_iter=3).config_key("a" * 64) == \
        "a5d21a4834e2354fc58090fccd1a35d35164014f442ef1953100d5358ea02a67"
    assert RunConfig(kg=256, kq=250, beta=1.5, n_iter=5, variant="paper",
                     extra={"asked_kg": 300}).config_key("0123abcd") == \
        "a5348f991dc472de7186f5e1ee2eded2873d804cbe03ae096ae24bab27d5d5d4"
    assert RunConfig(kg=5, kq=3, beta=0.5, n_iter=3).params_json(best_iteration=2, top_n=7) == (
        '{"best_iteration": 2, "beta": 0.5, "kg": 5, "kq": 3, "method": "icfrr", "n_iter": 3, '
        '"top_n": 7, "variant": "reference"}')


def test_baseline_config_keys() -> None:
    a = RunConfig.for_method("k_reciprocal", {"k1": 20, "k2": 6, "lambda_value": 0.3})
    b = RunConfig.for_method("k_reciprocal", {"k1": np.int64(20), "k2": 6, "lambda_value": 0.3})
    assert a.config_key("x") == b.config_key("x")                  # values cast to the registry kinds
    assert a.config_key("x") != a.config_key("y")
    assert a.config_key("x") != RunConfig.for_method("k_reciprocal", {"k1": 21, "k2": 6, "lambda_value": 0.3}
                                                     ).config_key("x")
    assert a.config_key("x") != RunConfig.for_method(
        "k_reciprocal", {"k1": 20, "k2": 6, "lambda_value": 0.3}, inputs_key="qq").config_key("x")
    dba = RunConfig.for_method("dba", {"dba_n": 10, "dba_alpha": 3})
    chain = RunConfig.for_method("dba+alpha_qe", {"dba_n": 10, "dba_alpha": 3, "qe_n": 10, "qe_alpha": 3})
    assert dba.config_key("x") != chain.config_key("x")
    assert json.loads(dba.params_json(top_n=5)) == {"method": "dba", "n_iter": 1, "dba_n": 10,
                                                    "dba_alpha": 3.0, "top_n": 5}
    with pytest.raises(ValueError, match="takes exactly the parameters k1, k2, lambda_value"):
        RunConfig.for_method("k_reciprocal", {"k1": 20})
    with pytest.raises(ValueError, match="unknown method"):
        RunConfig.for_method("bm25", {})
    with pytest.raises(ValueError, match="--kg values must be >= 1"):
        RunConfig(kg=0, kq=3, beta=0.5, n_iter=3)
    with pytest.raises(ValueError, match="ecn has no parameter kg"):
        RunConfig(kg=3, method="ecn")
    assert RunConfig(kq=3, beta=0.5, n_iter=3).kg == 256          # a parameter not given: the registry default


def _todays_key(artifact_key: str, method: str, params: dict, n_iter: int, *, inputs_key: str | None = None,
                skip_unanswerable: bool = False) -> str:
    """A literal copy of the config key formulas before the uniform method model (store.writes.RunConfig)."""
    import hashlib

    more: dict = {} if inputs_key is None else {"inputs_key": inputs_key}
    if skip_unanswerable:
        more["skip_unanswerable"] = True
    if method == "icfrr":
        key = {"method": method, "variant": params["variant"], "kg": int(params["kg"]), "kq": int(params["kq"]),
               "beta": float(params["beta"]), "n_iter": int(n_iter), **more}
    else:
        key = {"method": method, "n_iter": 1, **params, **more}
    text = json.dumps({"artifact": artifact_key, **key}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("method, params, more", [
    ("icfrr", {"kg": 5, "kq": 3, "beta": 0.5, "n_iter": 3, "variant": "reference"}, {}),
    ("icfrr", {"kg": 256, "kq": 250, "beta": 2, "n_iter": 20, "variant": "paper"}, {"skip_unanswerable": True}),
    ("k_reciprocal", {"k1": 20, "k2": 6, "lambda_value": 0.3}, {"inputs_key": "qq-abc"}),
    ("ecn", {"t": 3, "q": 8, "k": 25}, {"inputs_key": "qq-abc", "skip_unanswerable": True}),
    ("dba+alpha_qe", {"dba_n": 10, "dba_alpha": 3.0, "qe_n": 4, "qe_alpha": 0.5}, {}),
])
def test_config_keys_equal_the_formulas_before_the_method_model(method, params, more) -> None:
    cfg = RunConfig.for_method(method, params, **more)
    typed = {p.name: p.kind(params[p.name]) for p in registry.method(method).params}
    assert cfg.config_key("art") == _todays_key("art", method, typed, params.get("n_iter", 1), **more)


# ------------------------------------------------------------------------ jobs.extract --qq


def test_extract_imports_qq(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    qg, gg, qq = (rng.random(s).astype(np.float32) for s in ((3, 6), (6, 6), (3, 3)))
    for name, m in (("qg", qg), ("gg", gg + gg.T), ("qq", qq), ("bad", qq[:, :2])):
        np.save(tmp_path / f"{name}.npy", m)
    base = ["--dataset", "mine", "--qg", str(tmp_path / "qg.npy"), "--gg", str(tmp_path / "gg.npy"),
            "--cache_root", str(tmp_path / "cache"), "--quiet"]
    assert extract.main([*base, "--qq", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert "bad.npy is [3, 2] but there are 3 queries" in err and len(err.strip().splitlines()) == 1
    assert extract.main([*base, "--qq", str(tmp_path / "missing.npy")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert extract.main([*base, "--qq", str(tmp_path / "qq.npy")]) == 0
    kept, = (tmp_path / "cache" / "mine" / "-1").glob(f"import-*/{QQ_FILE}")
    assert np.array_equal(read_rows(kept, ["dists"])[0]["dists"], qq)


# ------------------------------------------------------------------ the real baselines


@pytest.mark.slow
def test_demo_sweep_every_method_real_baselines(tmp_path: Path) -> None:
    for name in ("k_reciprocal", "ecn", "alpha_qe", "dba", "dba_alpha_qe"):
        try:
            methods.baseline_function(name)
        except (ImportError, AttributeError):
            pytest.skip(f"icfrr.baselines.{name} is not installed in this branch")
    db = tmp_path / "r.duckdb"
    argv = ["--dataset", "demo", "--data_root", tmp_path / "demo", "--per_class", 4, "--cache_root",
            tmp_path / "cache", "--db", db, "--device", "cpu", "--top-n", 5,
            "--method", "icfrr", *BASELINES, "--kg", 8, "--kq", 8, "--n_times", 2, "--k1", 6,
            "--k2", 3, "--ecn-k", 10, "--qe-n", 3, "--dba-n", 3]
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", *map(str, argv)], cwd=repo,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    con = duckdb.connect(str(db), read_only=True)
    try:
        got = con.execute("SELECT r.method, count(DISTINCT m.iteration), min(m.map_all) FROM runs r "
                          "JOIN run_metrics m USING (run_id) GROUP BY r.method").fetchall()
    finally:
        con.close()
    assert {g[0] for g in got} == {"icfrr", *BASELINES}
    assert all(n == (3 if key == "icfrr" else 2) and 0 < v <= 1 for key, n, v in got)
    # the report of that store in its three formats, read back
    def report(fmt: str) -> str:
        done = subprocess.run([sys.executable, "-m", "jobs.report", "--db", str(db), "--format", fmt],
                              cwd=repo, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    rows = list(csv.DictReader(io.StringIO(report("csv"))))
    assert {r["method"] for r in rows if r["role"] != "initial"} == {"icfrr", *BASELINES}
    by_method = {r["method"]: r for r in rows}
    con = duckdb.connect(str(db), read_only=True)
    try:
        for key in ("icfrr", *BASELINES):   # each row's mAP@all is that method's best run at its last iteration
            best = con.execute("SELECT max(m.map_all) FROM runs r JOIN run_metrics m USING (run_id) "
                               "WHERE r.method = ? AND m.iteration = r.n_iter", [key]).fetchone()[0]
            assert float(by_method[key]["map_all"]) == pytest.approx(best, rel=1e-12)
    finally:
        con.close()
    latex = report("latex")
    assert all(rule in latex for rule in ("\\toprule", "\\midrule", "\\bottomrule")) and "\\textbf{" in latex
    assert latex.count("\\\\") == len(rows) + 1   # a header and one line per row
    text = report("table")
    assert all(label in text for label in ("ICFRR", "k-reciprocal", "ECN", "DBA + αQE"))


def test_run_config_clamps_once_and_mirrors_only_its_column_params() -> None:
    cfg = RunConfig(kg=500, kq=60, beta=1, n_iter=2).clamped(40)
    assert (cfg.kg, cfg.kq, cfg.beta, cfg.n_iter) == (39, 40, 1.0, 2) and type(cfg.beta) is float
    assert cfg.extra == {"asked_kg": 500, "asked_kq": 60}
    assert cfg.columns() == {"kg": 39, "kq": 40, "beta": 1.0, "variant": "reference"}
    ecn = RunConfig.for_method("ecn", {"t": 3, "q": 8, "k": 25})
    assert ecn.clamped(5) == ecn and ecn.columns() == {} and ecn.n_iter == 1 and ecn.kg is None
