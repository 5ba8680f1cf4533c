"""Every page of the dashboard under streamlit.testing's AppTest, against the
fixture store; expected numbers are recomputed from raw table dumps."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sps
from streamlit.testing.v1 import AppTest

from dashboard.data import NEUTRAL
from dashboard.format import movement, p_value, plain, signed
from store.schema import create_schema
from tests.dashboard.fixture_store import (DEMO, LEAK, SECRET, build_injected,
                                           corrupt_copies, raw_tables)

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = {"Overview": None, "Per class": "views/per_class.py",
         "Failure cases": "views/failures.py", "Query inspector": "views/inspector.py",
         "Compare": "views/compare.py"}


@pytest.fixture(scope="module")
def raw(fixture_db: Path) -> dict[str, pd.DataFrame]:
    return raw_tables(fixture_db)


def open_page(db: Path | str, title: str, monkeypatch: pytest.MonkeyPatch,
              **params: object) -> AppTest:
    """Run the app on ``db`` (via $ICFRR_DB, its folder's images allowed) with URL ``params``,
    then show page ``title``."""
    monkeypatch.setenv("ICFRR_DB", str(db))
    monkeypatch.setenv("ICFRR_IMAGE_ROOTS", str(Path(db).parent))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({k: str(v) for k, v in params.items()})
    at.run()
    if PAGES[title]:
        at.switch_page(PAGES[title]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [title]
    return at


def open_app(launch: Path | str, monkeypatch: pytest.MonkeyPatch, **params: object) -> AppTest:
    """Run the app launched on the store ``launch`` (via $ICFRR_DB, its folder's images
    allowed) with URL ``params``."""
    monkeypatch.setenv("ICFRR_DB", str(launch))
    monkeypatch.setenv("ICFRR_IMAGE_ROOTS", str(Path(launch).parent))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({k: str(v) for k, v in params.items()})
    return at.run()


def shown_neutral(at: AppTest) -> bool:
    """Whether the app shows exactly the one neutral message and nothing from a store."""
    assert not at.exception, [e.value for e in at.exception]
    return ([t.value for t in at.title] == ["icfrr-lab dashboard"]
            and [w.value for w in at.warning] == [NEUTRAL]
            and not at.info and not at.code and not at.dataframe)


def ap(raw, run_id: int, iteration: int) -> pd.Series:
    qm = raw["query_metrics"]
    s = qm[(qm.run_id == run_id) & (qm.iteration == iteration)].set_index("query_idx").ap
    return s.dropna().sort_index()


def labels_q(raw, dataset: str = "demo") -> pd.Series:
    ds = raw["datasets"].set_index("name").loc[dataset, "dataset_id"]
    it = raw["items"]
    return it[(it.dataset_id == ds) & (it.side == "query")].set_index("idx").label


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label))


@pytest.mark.parametrize("title", list(PAGES))
def test_every_page_renders(fixture_db, monkeypatch, title) -> None:
    at = open_page(fixture_db, title, monkeypatch, run=1)
    assert at.sidebar.selectbox(key="_w_run").value == 1
    assert at.query_params["run"] == "1"
    assert at.query_params["db"] == "icfrr.duckdb"   # a name in the results folder, no path


def test_overview_lists_runs_and_calls_out_best_configuration(fixture_db, raw, monkeypatch):
    at = open_page(fixture_db, "Overview", monkeypatch, run=2, beta=1)
    runs_table = at.dataframe[0].value
    done = raw["runs"][raw["runs"].status == "done"]
    demo_id = raw["datasets"].set_index("name").loc["demo", "dataset_id"]
    demo_sweeps = raw["sweeps"].sweep_id[raw["sweeps"].dataset_id == demo_id]
    # the runs of the selected run's dataset only, until "all datasets" is chosen
    assert sorted(runs_table.run_id) == sorted(done.run_id[done.sweep_id.isin(demo_sweeps)])
    at.selectbox(key="_w_dataset").set_value("all").run()
    assert sorted(at.dataframe[0].value.run_id) == sorted(done.run_id)
    rm = raw["run_metrics"].sort_values("iteration").groupby("run_id").map_all
    gain = (rm.last() - rm.first())
    demo = done[done.sweep_id == 1].set_index("run_id")
    best = gain[demo.index].idxmax()
    text = at.success[0].value
    assert f"KG {demo.kg[best]} · KQ {demo.kq[best]} · β {demo.beta[best]:g}" in text
    assert f"(run #{best})" in text and signed(gain[best]) in text
    assert metric(at, "mAP@all after") == f"{rm.last()[2]:.4f}"
    # one heatmap panel per beta: the selector offers both betas of the grid
    assert sorted(at.selectbox(key="_w_beta").options) == ["0.5", "1"]
    assert at.selectbox(key="_w_beta").value == 1.0   # "beta=1" in the URL names 1.0


def test_per_class_matches_class_means(fixture_db, raw, monkeypatch):
    at = open_page(fixture_db, "Per class", monkeypatch, run=3, iteration=DEMO.n_iter)
    lab = labels_q(raw)
    before = ap(raw, 3, 0).groupby(lab).mean()
    after = ap(raw, 3, DEMO.n_iter).groupby(lab).mean()
    table = at.dataframe[0].value.set_index("label")
    np.testing.assert_allclose(table.map_before[before.index], before)
    np.testing.assert_allclose(table.map_after[after.index], after)
    assert metric(at, "Classes that gain") == str(int(((after - before) > 1e-12).sum()))


def test_failure_cases_ranked_and_filtered_by_class(fixture_db, raw, monkeypatch):
    it = DEMO.n_iter
    at = open_page(fixture_db, "Failure cases", monkeypatch, run=5, iteration=it)
    delta = (ap(raw, 5, it) - ap(raw, 5, 0)).sort_values(kind="stable")
    rows = at.dataframe[0].value
    assert rows.query_idx.iloc[0] == delta.index[0]
    np.testing.assert_allclose(rows.delta, delta.to_numpy())
    assert rows.image.str.startswith("data:image/png;base64,").all()
    assert rows.inspect.iloc[0].startswith("./inspector?")
    assert f"query={delta.index[0]}" in rows.inspect.iloc[0]

    at.query_params["class"] = "1"    # a hand-edited URL
    at.run()
    rows = at.dataframe[0].value
    lab = labels_q(raw)
    assert sorted(rows.query_idx) == sorted(lab[lab == 1].index)
    assert at.selectbox(key="_w_class").value == 1


def test_inspector_deep_link_shows_both_lists(fixture_db, raw, monkeypatch):
    it, q = DEMO.n_iter, 3
    at = open_page(fixture_db, "Query inspector", monkeypatch, run=5, query=q, iteration=it)
    assert at.number_input(key="_w_query").value == q
    assert metric(at, "AP before") == f"{ap(raw, 5, 0)[q]:.4f}"
    assert metric(at, "AP after") == f"{ap(raw, 5, it)[q]:.4f}"

    images = list(at.image)
    assert images[0].captions == [plain(f"query/{q:05d}.png")]
    rk = raw["rankings"]
    lists = {t: rk[(rk.run_id == 5) & (rk.query_idx == q) & (rk.iteration == t)]
             .set_index("rank").gallery_idx for t in (0, it)}
    gal_label = raw["items"][(raw["items"].dataset_id == 1)
                             & (raw["items"].side == "gallery")].set_index("idx").label
    q_label = labels_q(raw)[q]
    for side, t, other, img in (("before", 0, it, images[1]), ("after", it, 0, images[2])):
        assert len(img.captions) == 10
        pos = {g: r for r, g in lists[other].items()}
        for r, caption in enumerate(img.captions, start=1):
            g = lists[t][r]
            ranks = (r, pos.get(g)) if side == "before" else (pos.get(g), r)
            icon = "✓" if gal_label[g] == q_label else "✗"
            assert caption.startswith(f"#{r} {icon} {movement(side, *ranks)} · ")


def test_inspector_on_imported_distances_shows_placeholders(fixture_db, raw, monkeypatch):
    imported = int(raw["runs"].query("sweep_id == 2").run_id.iloc[0])
    at = open_page(fixture_db, "Query inspector", monkeypatch, run=imported, query=0)
    assert at.image[0].captions == ["(no image: imported distances)"]
    assert len(at.image[2].captions) == 10


def test_compare_with_initial_ranking_and_with_another_run(fixture_db, raw, monkeypatch):
    it = DEMO.n_iter
    at = open_page(fixture_db, "Compare", monkeypatch, run=5, iteration=it)
    a, b = ap(raw, 5, it), ap(raw, 5, 0)
    d = (a - b).to_numpy()
    assert metric(at, "Queries") == str(len(d))
    assert metric(at, "Mean difference") == signed(d.mean())
    assert metric(at, "A better") == str(int((d > 1e-9).sum()))
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    tests = at.dataframe[0].value.set_index("test")
    assert tests.loc["paired t-test", "p-value"] == p_value(2 * sps.t.sf(abs(t), len(d) - 1))

    at.query_params.update({"run_b": "6", "iteration_b": str(it)})
    at.run()
    assert at.selectbox(key="_w_run_b").value == 6
    d = (ap(raw, 5, it) - ap(raw, 6, it)).to_numpy()
    assert metric(at, "Mean difference") == signed(d.mean())


def test_widget_changes_go_into_the_url(fixture_db, monkeypatch):
    at = open_page(fixture_db, "Per class", monkeypatch, run=1)
    at.sidebar.selectbox(key="_w_run").set_value(4).run()
    assert at.query_params["run"] == "4"
    assert at.caption[0].value.startswith(plain("#4 "))
    at.switch_page("views/compare.py").run()   # the choice survives a page change
    assert at.sidebar.selectbox(key="_w_run").value == 4


def test_db_from_the_url_wins_over_the_environment(fixture_db, tmp_path, monkeypatch):
    shutil.copy(fixture_db, tmp_path / "other.duckdb")
    monkeypatch.setenv("ICFRR_DB", str(tmp_path / "elsewhere.duckdb"))   # not made yet
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["db"] = "other.duckdb"
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Overview"]
    assert at.sidebar.selectbox(key="_w_db").options == ["elsewhere.duckdb", "other.duckdb"]


def _empty_state(db: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("ICFRR_DB", str(db))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["icfrr-lab dashboard"]
    assert any("python -m jobs.sweep --dataset demo" in c.value for c in at.code)
    return at


def test_missing_database_explains_how_to_make_one(tmp_path, monkeypatch):
    at = _empty_state(tmp_path / "none.duckdb", monkeypatch)
    assert "no results database yet" in at.info[0].value
    assert any(str(tmp_path / "none.duckdb") in c.value for c in at.code)


def test_database_without_runs_explains_how_to_fill_it(tmp_path, monkeypatch):
    db = tmp_path / "empty.duckdb"
    con = duckdb.connect(str(db))
    create_schema(con)
    con.close()
    _empty_state(db, monkeypatch)


def test_file_that_is_not_duckdb_is_reported_not_raised(tmp_path, monkeypatch):
    bad = tmp_path / "notes.duckdb"
    bad.write_text("hello")
    assert shown_neutral(open_app(bad, monkeypatch))


def test_inspector_on_a_query_of_unknown_label(fixture_db, raw, monkeypatch):
    lab = labels_q(raw)
    unknown = int(lab[lab == -1].index[0])
    at = open_page(fixture_db, "Query inspector", monkeypatch, run=1, query=unknown)
    assert "unknown" in at.warning[0].value
    assert all(" ? " in c for c in at.image[2].captions)   # relevance not judged


def test_per_class_links_to_the_worst_class_in_failure_cases(fixture_db, raw, monkeypatch):
    at = open_page(fixture_db, "Per class", monkeypatch, run=1)
    worst = at.dataframe[0].value.sort_values("gain").iloc[0]
    link = at.get("page_link")[0]
    assert worst.class_name in link.proto.label
    assert f"class={worst.label}" in link.proto.query_string


# --- misuse: only the results folder's stores, one neutral message, hostile stores ---

@pytest.fixture()
def folder_with_store(fixture_db, tmp_path) -> Path:
    """A results folder holding a copy of the fixture store, plus things outside it."""
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(fixture_db, results / "icfrr.duckdb")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(fixture_db, outside / "elsewhere.duckdb")
    (results / "link.duckdb").symlink_to(outside / "elsewhere.duckdb")
    return results


@pytest.mark.parametrize("value", [
    "/etc/passwd", "/etc/shadow", "missing.duckdb", "../outside/elsewhere.duckdb",
    "link.duckdb", "OUTSIDE", "icfrr.duckdb/../../outside/elsewhere.duckdb", "..", "/",
])
def test_db_outside_the_results_folder_gets_the_one_message(folder_with_store, monkeypatch,
                                                            value) -> None:
    if value == "OUTSIDE":
        value = str(folder_with_store.parent / "outside" / "elsewhere.duckdb")
    at = open_app(folder_with_store / "icfrr.duckdb", monkeypatch, db=value)
    assert shown_neutral(at)
    box = at.sidebar.selectbox(key="_w_db")
    assert box.options == ["icfrr.duckdb"] and box.value is None   # the link is not offered
    box.set_value("icfrr.duckdb").run()                              # choosing a listed store works
    assert [t.value for t in at.title] == ["Overview"]
    assert at.query_params["db"] == "icfrr.duckdb"


def test_results_dir_flag_lists_the_folders_stores(fixture_db, tmp_path, monkeypatch) -> None:
    for name in ("b.duckdb", "a.duckdb"):
        shutil.copy(fixture_db, tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.delenv("ICFRR_DB", raising=False)
    monkeypatch.setenv("ICFRR_RESULTS_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["db"] = "b.duckdb"
    at.run()
    assert [t.value for t in at.title] == ["Overview"]
    assert at.sidebar.selectbox(key="_w_db").options == ["icfrr.duckdb", "a.duckdb", "b.duckdb"]
    at.query_params["db"] = str(tmp_path / "notes.txt")
    at.run()
    assert shown_neutral(at)


@pytest.mark.parametrize("kind", ["truncated", "flipped", "foreign", "sqlite", "text"])
def test_damaged_or_foreign_store_gets_the_one_message(fixture_db, tmp_path, monkeypatch,
                                                       kind) -> None:
    bad = corrupt_copies(fixture_db, tmp_path)[kind]
    shutil.copy(fixture_db, tmp_path / "good.duckdb")
    at = open_app(tmp_path / "good.duckdb", monkeypatch, db=bad.name, run=5)
    assert shown_neutral(at)
    assert str(tmp_path) not in _all_text(at)


def test_store_failing_inside_a_page_gets_the_one_message(fixture_db, tmp_path, monkeypatch):
    db = tmp_path / "icfrr.duckdb"
    shutil.copy(fixture_db, db)
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE items DROP COLUMN path")   # the sidebar's reads still work
    con.close()
    at = open_app(db, monkeypatch, run=5)
    at.switch_page("views/failures.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Failure cases"]
    assert [w.value for w in at.warning] == [NEUTRAL]
    assert str(tmp_path) not in _all_text(at)


def _all_text(at: AppTest) -> str:
    """Every element's protobuf as text (labels, bodies, captions, table bytes, chart specs)."""
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


MARKDOWN_ELEMENTS = ("markdown", "caption", "title", "header", "subheader", "success", "info",
                     "warning", "error")


@pytest.mark.parametrize("title", list(PAGES))
def test_injected_store_shows_no_secret_and_names_literally(tmp_path, monkeypatch, title):
    store = build_injected(tmp_path, tmp_path / "secret.txt")
    at = open_page(store, title, monkeypatch, run=1)
    text = _all_text(at)
    assert SECRET not in text
    assert "127.0.0.1:9/?" not in text               # nothing of the stored view or macro ran
    md = [e.value for kind in MARKDOWN_ELEMENTS for e in getattr(at, kind)]
    md += [c for img in at.image for c in img.captions]
    md += [link.proto.label for link in at.get("page_link")]
    assert all(LEAK not in m and "](" not in m for m in md)   # no Markdown image/link forms
    assert any(plain(LEAK) in m for m in md)                     # the name is shown, escaped


# --- thumbnails: only under the folders the operator allows ---

MARKER = (255, 0, 7)


def _decoded(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


@pytest.fixture()
def store_rooted_elsewhere(fixture_db, tmp_path) -> tuple[Path, Path]:
    """A copy of the fixture store whose demo dataset root is a folder of marker images
    outside the store's folder."""
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    results.mkdir()
    db = results / "icfrr.duckdb"
    shutil.copy(fixture_db, db)
    for side, n in (("query", DEMO.n_query), ("gallery", DEMO.n_gallery)):
        (elsewhere / side).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (48, 48), MARKER).save(elsewhere / side / f"{i:05d}.png")
    con = duckdb.connect(str(db))
    con.execute("UPDATE datasets SET root = ? WHERE name = 'demo'", [str(elsewhere)])
    con.close()
    return db, elsewhere


@pytest.mark.parametrize("allow", [False, True])
def test_thumbnails_read_only_under_the_allowed_image_roots(store_rooted_elsewhere, monkeypatch,
                                                            allow) -> None:
    db, elsewhere = store_rooted_elsewhere
    opened: list[str] = []
    real_open = Image.open

    def spy(f, *a, **k):
        if isinstance(f, (str, Path)):
            opened.append(str(f))
        return real_open(f, *a, **k)

    monkeypatch.setattr(Image, "open", spy)
    at = open_app(db, monkeypatch, run=5, iteration=DEMO.n_iter)
    if allow:   # the control: the same store with the operator allowing that folder
        monkeypatch.setenv("ICFRR_IMAGE_ROOTS", os.pathsep.join([str(db.parent), str(elsewhere)]))
        at.run()
    at.switch_page("views/failures.py").run()
    assert not at.exception, [e.value for e in at.exception]
    images = [_decoded(u) for u in at.dataframe[0].value.image]
    colours = {c for img in images for _, c in img.getcolors(64 * 64)}
    touched = [f for f in opened if f.startswith(str(elsewhere))]
    if allow:
        assert MARKER in colours and touched
    else:
        assert MARKER not in colours and touched == []
        assert all(img.getpixel((63, 63)) == (200, 200, 200) for img in images)   # placeholders
        at.switch_page("views/inspector.py").run()
        assert not at.exception and len(at.image) == 3
        assert [f for f in opened if f.startswith(str(elsewhere))] == []
        assert str(elsewhere) not in _all_text(at)


# --- methods: the comparison table, any two runs, two methods side by side ---

def _protocol_oracle(raw, dataset_id: int, tuning: set[int] | None) -> dict[str, tuple]:
    """Oracle of the table's rows under test (``tuning`` None) or holdout, from the raw
    tables with the documented rule: method -> (run, iteration, mAP@all reported). Among
    the (run, iteration >= 1) of a method's finished runs, the highest mean AP over the
    choosing queries (rounded to 12 decimals), ties to the lowest run, then iteration."""
    runs = raw["runs"][raw["runs"].status == "done"].merge(raw["sweeps"][["sweep_id",
                                                                          "dataset_id"]])
    runs = runs[runs.dataset_id == dataset_id]
    lab = labels_q(raw).rename("label")
    lab = lab[lab != -1]
    qm = raw["query_metrics"].merge(lab, left_on="query_idx", right_index=True)
    qm = qm[qm.run_id.isin(runs.run_id) & (qm.iteration >= 1)].merge(runs[["run_id", "method"]])
    choose = qm if tuning is None else qm[qm.label.isin(tuning)]
    report = qm if tuning is None else qm[~qm.label.isin(tuning)]
    out = {}
    for method, g in choose.groupby("method"):
        means = g.groupby(["run_id", "iteration"]).ap.mean().round(12).reset_index()
        best = means.sort_values(["ap", "run_id", "iteration"],
                                 ascending=[False, True, True]).iloc[0]
        rep = report[(report.run_id == best.run_id) & (report.iteration == best.iteration)]
        out[method] = (int(best.run_id), int(best.iteration), rep.ap.mean())
    return out


def _downloads(monkeypatch) -> dict[str, tuple[bytes, str | None]]:
    """Capture what download buttons hand to Streamlit's media store: file id -> (data, name)."""
    from streamlit.runtime import memory_media_file_storage as mm

    got: dict[str, tuple[bytes, str | None]] = {}
    real = mm.MemoryMediaFileStorage.load_and_get_id

    def spy(self, data, mimetype, kind, filename=None):
        file_id = real(self, data, mimetype, kind, filename)
        got[file_id] = (data if isinstance(data, bytes) else str(data).encode(), filename)
        return file_id

    monkeypatch.setattr(mm.MemoryMediaFileStorage, "load_and_get_id", spy)
    return got


def _button_data(at: AppTest, got: dict, label: str) -> tuple[str, str | None]:
    button = next(b for b in at.get("download_button") if b.proto.label == label)
    file_id = button.proto.url.rsplit("/", 1)[1].split(".")[0]
    data, name = got[file_id]
    return data.decode(), name


def _methods_table(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "label" in d.value.columns)


def _methods_columns(at: AppTest) -> list[str]:
    """The columns the methods table shows, in order (its ``column_order``)."""
    d = next(d for d in at.dataframe if "label" in d.value.columns)
    return list(d.proto.column_order)


def test_overview_methods_table_under_each_protocol_and_its_downloads(fixture_db, raw,
                                                                      monkeypatch) -> None:
    import csv
    import io as _io

    from icfrr.protocols import TEST_LABEL
    from store.db import connect_reader
    from store.protocol_report import protocol_comparison

    got = _downloads(monkeypatch)
    at = open_page(fixture_db, "Overview", monkeypatch, run=5)
    assert "Methods" in [s.value for s in at.subheader]
    protocol = at.selectbox(key="_w_protocol")
    assert protocol.value == "holdout"   # the honest protocol is the default
    assert protocol.format_func("test") == f"test: {TEST_LABEL}"
    order = {"icfrr": "ICFRR", "k_reciprocal": "k-reciprocal", "dba": "DBA"}

    # holdout, seed 0: the split by the documented rule, the choices by the oracle's
    lab = labels_q(raw)
    classes = np.random.default_rng(0).permutation(np.unique(lab[lab != -1]))
    tuning = set(classes[: round(0.5 * len(classes))].tolist())
    for proto, oracle in (("holdout", _protocol_oracle(raw, 1, tuning)),
                          ("test", _protocol_oracle(raw, 1, None))):
        at.selectbox(key="_w_protocol").set_value(proto).run()
        assert not at.exception
        table = _methods_table(at).set_index("label")
        for key, label in order.items():
            run_id, iteration, value = oracle[key]
            assert (table.run_id[label], table.iteration[label]) == (run_id, iteration), proto
            assert table.map_all[label] == pytest.approx(value)
            assert table.map_all_shown[label].startswith(f"{value:.4f}")
        shown = _methods_columns(at)
        assert ("optimism_shown" in shown) == (proto != "test")
        captions = " ".join(c.value for c in at.caption)
        if proto == "test":
            assert plain(TEST_LABEL) in captions
        else:
            assert plain(f"{len(tuning)} tuning / {len(classes) - len(tuning)} reported") in captions
    assert at.query_params["protocol"] == "test"

    # cv with 3 folds (5 is more than the 3 classes): the store's protocol table, shown
    at.selectbox(key="_w_protocol").set_value("cv").run()
    at.number_input(key="_w_folds").set_value(3).run()
    assert not at.info, [i.value for i in at.info]
    assert (at.query_params["protocol"], at.query_params["folds"]) == ("cv", "3")
    with connect_reader(fixture_db) as con:
        pc = protocol_comparison(con, protocol="cv", dataset=1, backbone=1, folds=3, seed=0)
    table = _methods_table(at)
    assert list(table.label) == [r.label for r in pc.rows]
    assert list(table.run_id) == [r.run_id for r in pc.rows]
    np.testing.assert_allclose(table.map_all, [r.values["map_all"] for r in pc.rows])
    np.testing.assert_allclose(table.optimism[1:], [r.optimism for r in pc.rows[1:]])
    assert list(table.optimism_shown) == ["-", *(signed(r.optimism) for r in pc.rows[1:])]
    for cell, r in zip(table.ci_shown, pc.rows):
        lo, hi = r.ci
        assert cell == f"[{lo:.4f}, {hi:.4f}]" and lo <= r.values["map_all"] <= hi
    assert {"optimism_shown", "chosen"} <= set(_methods_columns(at))

    # the downloads carry the protocol, the seed and the split
    text, name = _button_data(at, got, "Download CSV")
    assert name.endswith("-cv-seed0.csv")
    rows = list(csv.DictReader(_io.StringIO(text)))
    assert [r["label"] for r in rows] == list(table.label)
    assert {(r["protocol"], r["seed"], r["split"]) for r in rows} == {("cv", "0", pc.split)}
    np.testing.assert_allclose([float(r["map_all"]) for r in rows], table.map_all)
    # the CSV is the command line's, byte for byte; the LaTeX is the command line's, shown as a command
    import shlex
    import tempfile

    from jobs import report as report_cli
    from jobs.report_protocol_format import to_csv
    assert text == to_csv(pc)
    command = next(c.value for c in at.code if "--format latex" in c.value)
    argv = shlex.split(command)[3:]
    assert argv[:2] == ["--db", str(fixture_db)]
    with tempfile.TemporaryDirectory() as tmp:
        assert report_cli.main([*argv, "--output", f"{tmp}/methods.tex"]) == 0
        latex = Path(tmp, "methods.tex").read_text()
    assert r"\toprule" in latex
    assert "protocol cv: 3 folds of 3 classes, seed 0" in latex
    body = latex.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    assert [ln.split(" & ")[0] for ln in body.splitlines() if ln.endswith(r"\\")] == \
        ["Initial ranking", "ICFRR", "k-reciprocal", "DBA"]

    # against k-reciprocal under the same protocol, paired t-test: a scipy oracle
    at.selectbox(key="_w_protocol").set_value("test").run()
    at.selectbox(key="_w_baseline").set_value("k_reciprocal").run()
    at.selectbox(key="_w_test").set_value("t").run()
    table = _methods_table(at).set_index("label")
    best = _protocol_oracle(raw, 1, None)
    a, b = ap(raw, *best["icfrr"][:2]), ap(raw, *best["k_reciprocal"][:2])
    assert table.p_value["ICFRR"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert np.isnan(table.p_value["k-reciprocal"])   # the baseline is not tested against itself


def test_methods_sensitivity_and_headline_say_which_protocol_chose(fixture_db, raw,
                                                                   monkeypatch) -> None:
    from icfrr.protocols import TEST_LABEL

    at = open_page(fixture_db, "Overview", monkeypatch)   # no run chosen: the sidebar's default
    done = raw["runs"][raw["runs"].status == "done"]
    rm = raw["run_metrics"].sort_values("iteration").groupby("run_id").map_all
    gain = (rm.last() - rm.first())[done.run_id]
    assert at.sidebar.selectbox(key="_w_run").value == gain.idxmax()
    assert at.caption[0].value.startswith(plain(f"Picked by the test protocol, {TEST_LABEL}"))
    at.sidebar.selectbox(key="_w_run").set_value(int(gain.idxmin())).run()
    assert at.caption[0].value == plain("Picked in the sidebar: no selection protocol chose "
                                        "this run.")
    # the sensitivity chart is drawn through the holdout choice, and says so
    assert "ICFRR sensitivity" in [s.value for s in at.subheader]
    icfrr = _methods_table(at).set_index("label").loc["ICFRR"]
    text = " ".join(c.value for c in at.caption)
    assert plain(f"run #{icfrr.run_id}; ringed), protocol holdout") in text
    # an older store: selection among the stored iterations, said once
    assert plain("hold per-query metrics for some iterations only") in text


def test_overview_methods_table_with_icfrr_runs_only(fixture_db, raw, monkeypatch) -> None:
    imported = int(raw["runs"].query("sweep_id == 2").run_id.iloc[0])
    at = open_page(fixture_db, "Overview", monkeypatch, run=imported, protocol="test")
    table = _methods_table(at)
    assert list(table.label) == ["Initial ranking", "ICFRR"]
    assert list(table.run_id) == [imported, imported]
    assert at.selectbox(key="_w_baseline").options == ["the initial ranking",
                                                      "ICFRR (same protocol)"]


@pytest.mark.parametrize(("store", "widgets", "reason"), [
    ("one_class", {}, "Protocol holdout: the queries have 1 known class; splitting classes "
                      "needs at least 2 (choose the test protocol)"),
    ("one_class", {"_w_protocol": "cv"}, "Protocol cv: the queries have 1 known class"),
    ("fixture", {"_w_protocol": "cv"}, "Protocol cv: Folds 5 is more than the 3 query classes; "
                                       "pass Folds 3 or fewer"),
    ("fixture", {"_w_tune_fraction": 0.1}, "Protocol holdout: Tune fraction 0.1 of 3 classes "
                                           "leaves no tuning class"),
    ("no_labels", {}, "Run #1 has no metrics"),
])
def test_methods_table_degrades_with_one_line(fixture_db, tmp_path, monkeypatch, store, widgets,
                                              reason) -> None:
    from dashboard.synthetic import SyntheticSpec, generate

    db = fixture_db
    if store == "one_class":
        db = tmp_path / "one.duckdb"
        generate(db, SyntheticSpec(name="one", n_classes=1, images=False))
    elif store == "no_labels":
        db = tmp_path / "nolabels.duckdb"
        generate(db, SyntheticSpec(name="nolabels", n_unknown=12, images=False))
    at = open_page(db, "Overview", monkeypatch, run=1)
    for key, value in widgets.items():
        widget = at.selectbox(key=key) if key == "_w_protocol" else at.number_input(key=key)
        widget.set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    infos = [i.value for i in at.info]
    assert any(i.startswith((plain(reason), reason)) for i in infos), infos
    assert all("\n" not in i for i in infos)
    assert not [d for d in at.dataframe if "label" in d.value.columns]   # no table, no crash
    if store == "one_class":   # the test protocol still shows the table
        at.selectbox(key="_w_protocol").set_value("test").run()
        assert list(_methods_table(at).label) == ["Initial ranking", "ICFRR"]


def test_runs_table_and_labels_name_baselines_and_heatmap_skips_them(fixture_db, raw,
                                                                     monkeypatch) -> None:
    at = open_page(fixture_db, "Overview", monkeypatch, run=11)
    runs_table = at.dataframe[0].value.set_index("run_id")
    assert runs_table.method[11] == "k-reciprocal" and runs_table.method[13] == "DBA"
    assert runs_table.parameters[13] == "DBA n 10, DBA α 3"
    assert runs_table.method[5] == "ICFRR"
    assert at.sidebar.selectbox(key="_w_run").format_func(11) == \
        "#11 demo · k-reciprocal · k1 20, k2 6, λ 0.3"
    baseline_sweeps = set(raw["runs"][raw["runs"].method != "icfrr"].sweep_id)
    assert not baseline_sweeps & set(at.selectbox(key="_w_sweep").options)
    assert at.selectbox(key="_w_sweep").options   # the ICFRR sweeps are offered


def test_compare_a_baseline_run_with_an_icfrr_run(fixture_db, raw, monkeypatch) -> None:
    it = DEMO.n_iter
    at = open_page(fixture_db, "Compare", monkeypatch, run=11, run_b=5, iteration_b=it)
    assert at.selectbox(key="_w_iteration").value == 1          # the baseline's last
    d = (ap(raw, 11, 1) - ap(raw, 5, it)).to_numpy()
    assert metric(at, "Queries") == str(len(d))
    assert metric(at, "Mean difference") == signed(d.mean())
    names = at.markdown[0].value
    assert plain("#11 k-reciprocal (k1 20, k2 6, λ 0.3), iteration 1") in names
    assert plain(f"#5 ICFRR (KG 4, KQ 3, β 1, T {it}), iteration {it}") in names

    at.selectbox(key="_w_iteration_b").set_value(0).run()       # B's initial ranking
    d = (ap(raw, 11, 1) - ap(raw, 5, 0)).to_numpy()
    assert metric(at, "Mean difference") == signed(d.mean())
    at.selectbox(key="_w_compare_run_a").set_value(13).run()    # A follows into the sidebar
    assert at.sidebar.selectbox(key="_w_run").value == 13 and at.query_params["run"] == "13"
    d = (ap(raw, 13, 1) - ap(raw, 5, 0)).to_numpy()
    assert metric(at, "Mean difference") == signed(d.mean())


def test_inspector_shows_a_second_run_beside_the_first(fixture_db, raw, monkeypatch) -> None:
    it, q = DEMO.n_iter, 3
    at = open_page(fixture_db, "Query inspector", monkeypatch, run=5, query=q, iteration=it,
                   other=11)
    heads = [m.value for m in at.markdown if m.value.startswith("####")]
    assert heads == ["#### " + plain("#11 k-reciprocal (k1 20, k2 6, λ 0.3)") + ": iteration 1",
                     "#### " + plain(f"#5 ICFRR (KG 4, KQ 3, β 1, T {it})") + f": iteration {it}"]
    rk = raw["rankings"]
    gal_label = raw["items"][(raw["items"].dataset_id == 1)
                             & (raw["items"].side == "gallery")].set_index("idx").label
    q_label = labels_q(raw)[q]
    for img, (run, t) in ((at.image[1], (11, 1)), (at.image[2], (5, it))):
        top = rk[(rk.run_id == run) & (rk.query_idx == q) & (rk.iteration == t)] \
            .sort_values("rank").gallery_idx.head(10)
        want = [f"#{r} {'✓' if gal_label[g] == q_label else '✗'} · " for r, g in
                enumerate(top, start=1)]
        assert [c[:len(w)] for c, w in zip(img.captions, want)] == want
    assert f"AP {ap(raw, 11, 1)[q]:.4f}" in " ".join(c.value for c in at.caption)


# --- fail safely; the heatmap follows the run; crafted rows (issue 15 items 2-3, issue 14 item 5)

def test_a_page_that_fails_shows_one_line_and_no_traceback(fixture_db, monkeypatch) -> None:
    from dashboard import charts
    from dashboard.data import PAGE_FAILED

    def boom(*_a, **_k):
        raise RuntimeError("boom in /srv/secret/path.py")

    monkeypatch.setattr(charts, "class_dumbbell", boom)
    at = open_page(fixture_db, "Per class", monkeypatch, run=3)
    assert [w.value for w in at.warning] == [PAGE_FAILED]
    assert "boom" not in _all_text(at) and "/srv/secret" not in _all_text(at)
    monkeypatch.setattr("sys.argv", ["app.py", "--debug"])   # the developer's switch: shown again
    at = open_app(fixture_db, monkeypatch, run=3)
    at.switch_page("views/per_class.py").run()
    assert [e.value for e in at.exception] and "boom" in at.exception[0].value


def test_heatmap_slice_defaults_to_the_selected_runs_beta(fixture_db, raw, monkeypatch) -> None:
    runs = raw["runs"][(raw["runs"].status == "done") & (raw["runs"].method == "icfrr")
                       & (raw["runs"].sweep_id == 1)].set_index("run_id")
    for run_id in runs.index[[0, -1]]:      # DEMO's first config has beta 0.5, its last beta 1
        at = open_page(fixture_db, "Overview", monkeypatch, run=run_id)
        assert at.selectbox(key="_w_beta").value == runs.beta[run_id]
    # choosing another run in the sidebar moves the slice to its beta
    first, last = runs.index[0], runs.index[-1]
    assert runs.beta[first] != runs.beta[last]
    at = open_page(fixture_db, "Overview", monkeypatch, run=first)
    at.selectbox(key="_w_run").set_value(int(last)).run()
    assert at.selectbox(key="_w_beta").value == runs.beta[last]


@pytest.mark.parametrize("craft", ["no queries", "rankings past G"])
def test_crafted_rows_get_a_message_not_a_crash(fixture_db, raw, tmp_path, monkeypatch,
                                                craft) -> None:
    from dashboard.data import PAGE_FAILED

    db = tmp_path / "icfrr.duckdb"
    shutil.copy(fixture_db, db)
    con = duckdb.connect(str(db))
    if craft == "no queries":
        con.execute("UPDATE datasets SET n_query = 0")
    else:
        con.execute("UPDATE rankings SET gallery_idx = gallery_idx + 1000000 WHERE run_id = 5")
    con.close()
    for title in PAGES:
        at = open_app(db, monkeypatch, run=5, query=3)
        if PAGES[title]:
            at.switch_page(PAGES[title]).run()
        assert not at.exception, (title, [e.value for e in at.exception])
        assert [t.value for t in at.title] == [title]
        assert PAGE_FAILED not in [w.value for w in at.warning], title
    at = open_app(db, monkeypatch, run=5, query=3)
    at.switch_page("views/inspector.py").run()
    assert PAGE_FAILED not in [w.value for w in at.warning]
    if craft == "no queries":
        assert any("lists no queries" in i.value for i in at.info)
    else:   # gallery items the store does not list: "unknown class", never "None"
        text = _all_text(at)
        assert "unknown class" in text and "· None" not in text


def test_a_store_with_many_runs_offers_a_bounded_list_and_goes_to_any_run(fixture_db, raw,
                                                                          tmp_path, monkeypatch):
    from dashboard import sidebar

    monkeypatch.setattr(sidebar, "RUN_CHOICES", 5)   # the fixture's 14 runs stand for 300k
    done = raw["runs"][raw["runs"].status == "done"].set_index("run_id")
    ids = sorted(done.index)
    at = open_page(fixture_db, "Overview", monkeypatch, run=ids[-1])
    offered = at.sidebar.selectbox(key="_w_run").options     # the runs' labels, "#ID ..."
    assert len(offered) == 5 and at.sidebar.selectbox(key="_w_run").value == ids[-1]
    # the selected run's sweep comes first: every run of it that fits is offered
    own = done.index[done.sweep_id == done.sweep_id[ids[-1]]]
    assert len([o for o in offered if any(o.startswith(f"#{r} ") for r in own)]) == min(5, len(own))
    outside = next(r for r in ids if not any(o.startswith(f"#{r} ") for o in offered))
    at.sidebar.number_input(key="_w_goto_run").set_value(outside).run()
    assert at.sidebar.selectbox(key="_w_run").value == outside
    assert not at.exception
    assert at.subheader[0].value.startswith(f"\\#{outside} ")


def test_a_long_class_name_is_cut_with_the_whole_in_a_tooltip(fixture_db, tmp_path, monkeypatch):
    from dashboard.format import NAME_LIMIT, plain

    db = tmp_path / "icfrr.duckdb"
    shutil.copy(fixture_db, db)
    long = "[x](http://127.0.0.1:9/) " + "a" * 1000
    con = duckdb.connect(str(db))
    con.execute("UPDATE items SET class_name = ? WHERE class_name IS NOT NULL", [long])
    con.close()
    at = open_app(db, monkeypatch, run=5, query=3)
    at.switch_page("views/inspector.py").run()
    assert not at.exception
    heading = at.subheader[0]
    assert long not in heading.value and "…" in heading.value
    assert len(heading.value) < NAME_LIMIT + 200          # escaping adds backslashes
    assert heading.proto.help == plain(long)
