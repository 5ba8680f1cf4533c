"""Failure cases: queries ranked by AP change, with thumbnails and inspector links."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from dashboard import queries, state, thumbs
from dashboard.format import NO_METRICS, has_metrics, plain
from dashboard.sidebar import context, iteration_select

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
        return
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


page()
