"""Adding a selection protocol is one entry of ``icfrr.protocols.PROTOCOL_ENTRIES``.

A toy protocol ("every class but one tunes, the last permuted class is
reported"), registered in a fresh interpreter before anything else is
imported, is offered by ``python -m jobs.report --help``, runs with
``--protocol one_out`` on the small report store (``tests.store.report_store``)
and is offered by the dashboard's protocol selector, where choosing it shows
the methods table. Its choices are checked against the stored APs, chosen and
averaged here by hand.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.guard import run_guard


def one_out_split(labels: np.ndarray, *, tune_fraction: float, folds: int, seed: int
                  ) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The toy split: the last class in permuted order is reported, every other class tunes.

    Args:
        labels: int [Q] query labels (-1: unknown).
        tune_fraction / folds: Not read.
        seed: Seed of the class permutation.

    Returns:
        One ``(choose_mask, report_mask)`` pair, each bool [Q].
    """
    from icfrr.protocols import permuted_classes

    lab = np.asarray(labels, dtype=np.int64)
    order = permuted_classes(lab, seed)
    return ((np.isin(lab, order[:-1]), lab == order[-1]),)


_GUARD = textwrap.dedent('''
    import contextlib, csv, io, os, sys
    from pathlib import Path
    import numpy as np
    import icfrr.protocols as P
    from tests.jobs.test_toy_protocol import one_out_split

    toy = P.Protocol("one_out", "tuned on every class but one, reported on that one",
                     "on every class but one, reported on that one",
                     "chosen on every class but one, reported on the last",
                     "one_out: {n_tuning} tuning / {n_reported} reported class, seed {seed}",
                     one_out_split)
    P.PROTOCOL_ENTRIES = P.PROTOCOL_ENTRIES + (toy,)
    P.PROTOCOLS = tuple(p.key for p in P.PROTOCOL_ENTRIES)

    from jobs import report
    from tests.store.report_store import FACTORS, build

    tmp = Path(sys.argv[1])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):   # --help exits
        report.main(["--help"])
    helptext = " ".join(out.getvalue().split())
    assert "one_out (on every class but one, reported on that one)" in helptext, helptext
    assert "{test,holdout,cv,one_out}" in helptext, helptext

    db, runs = build(tmp, other=False)
    assert report.main(["--db", str(db), "--protocol", "one_out", "--seed", "3", "--ci", "none",
                        "--format", "csv", "--output", str(tmp / "t.csv")]) == 0
    rows = {r["method"] or "initial": r for r in csv.DictReader(io.StringIO((tmp / "t.csv").read_text()))}

    # the oracle: the stored per-query APs (iterations 0 and the last), split and chosen by hand
    labels = np.arange(24) % 3
    labels[-1] = -1
    order = np.random.default_rng(3).permutation(np.array([0, 1, 2]))
    tune, shown = np.isin(labels, order[:2]), labels == order[2]
    assert FACTORS["ap"] == 1.0   # map_all's per-query column is the AP itself
    for key in ("icfrr", "k_reciprocal", "dba"):
        mine = [r for r in runs.values() if r.method == key]
        best = max(mine, key=lambda r: (round(float(np.mean(r.ap[r.last][tune])), 12), -r.run_id))
        row = rows[key]
        assert (int(row["run_id"]), int(row["iteration"])) == (best.run_id, best.last), (key, row)
        want = float(np.mean(best.ap[best.last][shown]))
        assert abs(float(row["map_all"]) - want) < 1e-9, (key, row["map_all"], want)
        assert row["protocol"] == "one_out" and int(row["n_queries"]) == int(shown.sum())
        assert row["split"] == "one_out: 2 tuning / 1 reported class, seed 3", row["split"]
        assert row["selection"] == "chosen on every class but one, reported on the last"

    from streamlit.testing.v1 import AppTest
    os.environ["ICFRR_DB"] = str(db)
    os.environ["ICFRR_IMAGE_ROOTS"] = str(tmp)
    at = AppTest.from_file(str(Path.cwd() / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    selector = at.selectbox(key="_w_protocol")
    assert selector.format_func("one_out") == "one_out: tuned on every class but one, reported on that one"
    assert "one_out: tuned on every class but one, reported on that one" in selector.options, selector.options
    selector.set_value("one_out").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.info, [i.value for i in at.info]
    assert at.number_input(key="_w_tune_fraction").disabled and at.number_input(key="_w_folds").disabled
    table = next(d.value for d in at.dataframe if "label" in d.value.columns).set_index("method")
    assert int(table.run_id["icfrr"]) == int(rows["icfrr"]["run_id"]), table
    captions = " ".join(c.value for c in at.caption)
    assert "1 reported class" in captions, captions
    print("toy protocol ok")
''')


@pytest.mark.slow
def test_a_protocol_added_as_an_entry_reaches_report_and_dashboard(tmp_path: Path) -> None:
    assert "toy protocol ok" in run_guard(_GUARD, tmp_path, tmp_path)
