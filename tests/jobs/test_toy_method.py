"""Adding a re-ranking method is one registry entry plus its function.

A toy method, registered in a fresh interpreter before anything else is
imported, gets its grid flag in the sweep's ``--help``, runs through
``jobs.sweep`` into the store (``runs.method``, ``runs.params``, the runs
columns NULL), and appears in ``python -m jobs.report`` and in the run list the
dashboard reads (``store.read.runs``). Its stored metrics are checked against
the toy distances ranked and scored here by brute force.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.guard import run_guard


def toy_rerank(qg: np.ndarray, gg: np.ndarray, *, toy_shift: float) -> np.ndarray:
    """The toy method: each distance pulled by ``toy_shift`` times the gallery item's mean distance.

    Args:
        qg: float [Q, G] query-gallery distances.
        gg: float [G, G] gallery-gallery distances.
        toy_shift: How strongly a gallery item's mean distance to the others counts.

    Returns:
        float [Q, G] distances, smaller = closer.
    """
    return np.asarray(qg, dtype=np.float64) + toy_shift * np.asarray(gg, dtype=np.float64).mean(axis=0)[None]


_GUARD = textwrap.dedent('''
    import contextlib, io, json, sys
    from pathlib import Path
    import numpy as np
    import torch
    import icfrr.registry as reg

    toy = reg.Method("toy", "Toy", "a test, 2026", (
        reg.Param("toy_shift", ("--toy-shift", "--toy_shift"), float, (0.0,), minimum=0,
                  help="toy: weight of the gallery item's mean distance (default 0)"),
    ), function="tests.jobs.test_toy_method:toy_rerank")
    reg.METHODS = reg.METHODS + (toy,)
    reg.METHOD_KEYS = tuple(m.key for m in reg.METHODS)

    from jobs import report, sweep
    from store import read
    from store.db import connect_reader
    from tests.jobs.test_toy_method import toy_rerank
    from tests.jobs.toy import toy_distances

    tmp = Path(sys.argv[1])
    qg, gg, lq, lg = toy_distances(seed=4, q=14, g=50)
    cache = tmp / "cache" / "toy" / "-1"
    cache.mkdir(parents=True)
    torch.save(qg, cache / "qg_dists.pth")
    torch.save(gg, cache / "gg_dists.pth")
    torch.save({"query": torch.from_numpy(lq), "gallery": torch.from_numpy(lg)}, cache / "labels.pth")

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            sweep.main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    assert "Toy grid, --method toy (a test, 2026" in out.getvalue()
    assert "--toy-shift" in out.getvalue(), out.getvalue()

    db = tmp / "r.duckdb"
    argv = ["--dataset", "toy", "--cache_root", str(tmp / "cache"), "--device", "cpu", "--db", str(db),
            "--quiet", "--top-n", "5", "--method", "toy", "--toy-shift", "0", "2.5"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert sweep.main(argv) == 0
    assert "toy toy_shift=2.5" in out.getvalue(), out.getvalue()

    def brute_map(d):   # rank by distance (ties by index), mean AP over the labelled queries
        aps = []
        for q in range(d.shape[0]):
            if lq[q] == -1:
                continue
            rel = lg[np.lexsort((np.arange(d.shape[1]), d[q]))] == lq[q]
            hits = np.cumsum(rel)
            aps.append((hits[rel] / (np.flatnonzero(rel) + 1)).mean() if rel.any() else 0.0)
        return float(np.mean(aps))

    with connect_reader(db) as con:
        stored = con.execute("SELECT r.method, r.params, r.kg, r.kq, r.beta, r.variant, r.n_iter, m.map_all "
                             "FROM runs r JOIN run_metrics m USING (run_id) WHERE m.iteration = 1 "
                             "ORDER BY r.run_id").fetchall()
        frame = read.runs(con)
    assert [(s[0], json.loads(s[1])["toy_shift"]) for s in stored] == [("toy", 0.0), ("toy", 2.5)], stored
    assert all(s[2:6] == (None, None, None, None) and s[6] == 1 for s in stored), stored
    for (*_, got), shift in zip(stored, (0.0, 2.5)):
        want = brute_map(toy_rerank(qg.numpy(), gg.numpy(), toy_shift=shift))
        assert abs(got - want) < 1e-9, (shift, got, want)
    assert brute_map(toy_rerank(qg.numpy(), gg.numpy(), toy_shift=2.5)) != brute_map(qg.numpy())
    assert list(frame["method"]) == ["toy", "toy"], frame

    assert report.main(["--db", str(db), "--baseline", "initial", "--output", str(tmp / "report.txt")]) == 0
    text = (tmp / "report.txt").read_text()
    assert any(line.split()[:1] == ["Toy"] for line in text.splitlines()), text
    print("toy ok")
''')


@pytest.mark.slow
def test_a_method_added_to_the_registry_reaches_sweep_store_report_and_dashboard(tmp_path: Path) -> None:
    assert "toy ok" in run_guard(_GUARD, tmp_path, tmp_path)
