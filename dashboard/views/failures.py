"""Failure cases: queries ranked by AP change, with thumbnails and inspector links; then the
run's retrieval confusions (which other classes hold each class's top-k, before and after,
with the failure cases of a chosen pair) and its failure signature (initial top-KQ precision
against AP change, ``icfrr.failures``)."""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, queries, state, thumbs
from dashboard.format import NO_METRICS, has_metrics, method_label, plain
from icfrr.failures import signature_sentence
from dashboard.sidebar import context, iteration_select
from store.read import has_params

ORDERS = {
    "Hurt most": ("delta", True),
    "Helped most": ("delta", False),
    "Lowest AP after": ("ap_after", True),
}
ALL = "all"


def inspector_link(db: str, run_id: int, query_idx: int, iteration: int) -> str:
    """Relative URL of the inspector on one query (works under any base path)."""
    return "./inspector?" + urlencode(
        {"db": db, "run": run_id, "query": query_idx, "iteration": iteration})


def page() -> None:
    """Draw the page."""
    st.title("Failure cases")
    ctx = context()
    st.caption(plain(ctx.labels[ctx.run_id]))
    if not has_metrics(ctx.run):
        st.info(NO_METRICS.format(run=ctx.run_id))
        return
    top = st.columns([1, 1, 1, 1])
    iteration = iteration_select(top[0], ctx, ctx.run_id)
    classes = queries.classes(ctx.db, ctx.run_id)
    names = {int(r.label): f"{r.class_name} ({r.n_queries})" for r in classes.itertuples()}
    label = state.select(top[1], "Class", [ALL, *names], "class",
                         format_func=lambda v: "All classes" if v == ALL else names[v])
    order = top[2].radio("Order", list(ORDERS), horizontal=False)
    n_rows = top[3].slider("Rows", 5, 100, 25, step=5)

    changes = queries.query_changes(ctx.db, ctx.run_id, iteration,
                                    label=None if label == ALL else int(label))
    if changes.empty:
        st.info("No queries with known labels for this selection.")
    else:
        _cases(ctx, iteration, changes, order, n_rows)
    _confusions(ctx, iteration)
    _signature(ctx, iteration)


def _cases(ctx, iteration: int, changes: pd.DataFrame, order: str, n_rows: int) -> None:
    """The queries of the selection by AP change, with thumbnails and inspector links."""
    hurt, helped = int((changes.delta < -1e-12).sum()), int((changes.delta > 1e-12).sum())
    st.markdown(f"**{hurt}** queries lose AP, **{helped}** gain, "
                f"**{len(changes) - hurt - helped}** unchanged (of {len(changes)}).")
    col, asc = ORDERS[order]
    rows = changes.sort_values([col, "query_idx"], ascending=[asc, True]).head(n_rows).copy()
    root = queries.dataset_root(ctx.db, ctx.run_id)
    rows["image"] = [thumbs.data_url(thumbs.thumbnail(root, p, 64)) for p in rows.path]
    rows["inspect"] = [inspector_link(ctx.db.key, ctx.run_id, int(q), iteration)
                       for q in rows.query_idx]
    event = st.dataframe(
        rows[["image", "query_idx", "class_name", "ap_before", "ap_after", "delta",
              "first_relevant_before", "first_relevant_after", "inspect"]],
        hide_index=True, row_height=70, height=min(40 + 71 * len(rows), 760),
        on_select="rerun", selection_mode="single-row",
        key="failure_rows",
        column_config={
            "image": st.column_config.ImageColumn("image", width="small"),
            "query_idx": "query",
            "class_name": "class",
            "ap_before": st.column_config.NumberColumn("AP before", format="%.4f"),
            "ap_after": st.column_config.NumberColumn(f"AP after (it. {iteration})",
                                                      format="%.4f"),
            "delta": st.column_config.NumberColumn("change", format="%+.4f"),
            "first_relevant_before": "1st relevant before",
            "first_relevant_after": "1st relevant after",
            "inspect": st.column_config.LinkColumn("inspector", display_text="open ↗"),
        },
    )
    picked = event.selection.rows if event is not None else []
    query = int(rows.query_idx.iloc[picked[0]]) if picked else int(rows.query_idx.iloc[0])
    if picked:
        state.put("query", query)
    st.page_link("views/inspector.py", label=f"Inspect query {query} in this tab",
                 icon=":material/image_search:",
                 query_params={"db": ctx.db.key, "run": str(ctx.run_id),
                               "query": str(query), "iteration": str(iteration)})
    st.caption("Select a row to choose the query for the link above, or open a row's link.")


def _confusions(ctx, iteration: int) -> None:
    """The confusion heatmap (query class x intruding class) and the cases of one pair."""
    st.header("Retrieval confusions")
    q_idx, before = queries.top_rankings(ctx.db, ctx.run_id, 0)
    after = queries.top_rankings(ctx.db, ctx.run_id, iteration)[1]
    stored = int(min(before.shape[1], after.shape[1]))
    if stored == 0:
        st.info(f"Run #{ctx.run_id} has no stored rankings for iterations 0 and {iteration}: "
                "confusions are computed from them.")
        return
    top = st.columns([1, 2])
    k = int(top[0].number_input(f"Top k (at most the stored top-{stored})", 1, stored, min(10, stored),
                                key="confusion_k"))
    shown = top[1].radio("Show", list(charts.CONFUSION_VALUES), horizontal=True, key="confusion_show", index=1,
                         format_func=lambda v: {"after": f"after (iteration {iteration})",
                                                "before": "before (initial ranking)",
                                                "change": "change"}[v])
    try:
        conf = queries.confusions(ctx.db, ctx.run_id, iteration, k)
    except ValueError as exc:   # stored rankings naming items the dataset does not list
        st.info(f"Confusions cannot be computed for run #{ctx.run_id}: {plain(str(exc))}.")
        return
    if conf.empty:
        st.info(f"No query class has items of another class in its top-{k}, before or after.")
        return
    st.altair_chart(charts.confusion_heatmap(conf, shown, k), width="content")
    st.caption(f"Each cell: the share of the query class's top-{k} slots (its queries × {k}) held by "
               "items of the intruding class; queries of unknown label are left out.")
    col = charts.CONFUSION_VALUES[shown][0]
    pairs = conf.sort_values([col, "query_class", "other_class"], ascending=[False, True, True],
                             kind="stable")
    options = list(zip(pairs.query_label.tolist(), pairs.other_label.tolist()))
    names = {(int(r.query_label), int(r.other_label)): r for r in pairs.itertuples()}

    def name(pair: tuple[int, int]) -> str:
        r = names[pair]
        return (f"{r.query_class} ← {r.other_class}: {r.share_before:.3f} → {r.share_after:.3f} "
                f"({r.change:+.3f})")

    pair = st.selectbox("Failure cases of a pair (query class ← intruding class)", options,
                        format_func=name, key="confusion_pair",
                        help="Pairs ordered by the value shown in the heatmap, largest first.")
    r = names[pair]
    st.caption(plain(f"{r.query_class} queries, {r.other_class} intruders: {r.share_before:.3f} of their "
                     f"top-{k} slots before, {r.share_after:.3f} after ({r.change:+.3f})."))
    _pair_cases(ctx, iteration, k, *pair, q_idx, before, after)


def _pair_cases(ctx, iteration: int, k: int, q_label: int, o_label: int, q_idx: np.ndarray,
                before: np.ndarray, after: np.ndarray) -> None:
    """The query class's queries with the intruding class's top-k slots before and after."""
    gallery = queries.dataset_items(ctx.db, ctx.run_id, "gallery")
    is_other = np.zeros(int(gallery.idx.max()) + 1, dtype=bool)
    is_other[gallery.idx[gallery.label == o_label].to_numpy()] = True
    slots = pd.DataFrame({"query_idx": q_idx, "intruders_before": is_other[before[:, :k]].sum(axis=1),
                          "intruders_after": is_other[after[:, :k]].sum(axis=1)})
    cases = queries.query_changes(ctx.db, ctx.run_id, iteration, label=q_label).merge(slots, on="query_idx")
    cases = cases.assign(intruders_change=cases.intruders_after - cases.intruders_before)
    cases = cases.sort_values(["intruders_change", "delta", "query_idx"], ascending=[False, True, True])
    cases["inspect"] = [inspector_link(ctx.db.key, ctx.run_id, int(q), iteration) for q in cases.query_idx]
    st.dataframe(
        cases[["query_idx", "class_name", "intruders_before", "intruders_after", "ap_before", "ap_after",
               "delta", "inspect"]],
        hide_index=True, key="pair_cases",
        column_config={
            "query_idx": "query", "class_name": "class",
            "intruders_before": st.column_config.NumberColumn(f"intruders in top-{k} before"),
            "intruders_after": st.column_config.NumberColumn(f"after (it. {iteration})"),
            "ap_before": st.column_config.NumberColumn("AP before", format="%.4f"),
            "ap_after": st.column_config.NumberColumn("AP after", format="%.4f"),
            "delta": st.column_config.NumberColumn("change", format="%+.4f"),
            "inspect": st.column_config.LinkColumn("inspector", display_text="open ↗"),
        })


def _signature(ctx, iteration: int) -> None:
    """Initial top-KQ precision against AP change, with the binned means and the finding."""
    st.header("Failure signature")
    kq = ctx.run.kq
    if not has_params(ctx.run.method, "kq") or pd.isna(kq):
        st.info(f"The failure signature measures ICFRR's initial top-KQ (its voters): run #{ctx.run_id} "
                f"is a {plain(method_label(ctx.run.method))} run. Pick an ICFRR run.")
        return
    if queries.top_rankings(ctx.db, ctx.run_id, 0)[1].shape[1] == 0:
        st.info(f"Run #{ctx.run_id} has no stored initial ranking: the signature is computed from it.")
        return
    try:
        s, points = queries.failure_signature(ctx.db, ctx.run_id, iteration, int(kq))
    except ValueError as exc:   # stored rankings naming items the dataset does not list
        st.info(f"The failure signature cannot be computed for run #{ctx.run_id}: {plain(str(exc))}.")
        return
    if points.empty:
        st.info("No query of known label with an AP before and after: nothing to plot.")
        return
    bins = pd.DataFrame({"mid": (s.bin_lo + s.bin_hi) / 2, "mean_change": s.bin_mean_change, "n": s.bin_n})
    top = f"top-{s.cutoff}" if s.cutoff == int(kq) else \
        f"top-{s.cutoff} (KQ {int(kq)}, capped by the stored top-{s.cutoff})"
    st.altair_chart(charts.signature_scatter(points, bins[bins.n > 0], s.cutoff))
    sentence = signature_sentence(s, top)
    st.markdown(plain(sentence[0].upper() + sentence[1:] + "."))
    st.caption(f"Each point is a query: the share of relevant items among the {s.cutoff} that cast its first "
               f"update's votes, against its AP change at iteration {iteration}; the black line is the mean "
               "change of each precision bin.")


page()
