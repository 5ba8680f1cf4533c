"""Query inspector: one query's top-k before and after, side by side.

"Beside it" chooses what stands on the left: the run's own initial ranking
(with each item's movement), or a second run of the same dataset, of any
method, at one of its stored iterations (two methods' top-k for the same
query). Relevant items are marked on both sides.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import queries, state, thumbs
from dashboard.format import (NAME_LIMIT, has_metrics, method_and_params, movement, plain, short,
                              signed)
from dashboard.sidebar import Context, context, iteration_select, run_choices

_THUMB = 112
_ICONS = {"relevant": "✓", "irrelevant": "✗", "unknown": "?"}
#: "Beside it" choice: the run's own initial ranking.
INITIAL = "initial"


def _query_select(ctx: Context, container, iteration: int, n: int) -> int:
    key = state.widget_key("query")
    wanted = state.get_int("query")
    if wanted is None or not 0 <= wanted < n:
        changes = queries.query_changes(ctx.db, ctx.run_id, iteration)
        wanted = int(changes.query_idx.iloc[0]) if len(changes) else 0
    if key not in st.session_state or not 0 <= st.session_state[key] < n:
        st.session_state[key] = wanted
    q = int(container.number_input(f"Query (0 to {n - 1})", min_value=0, max_value=n - 1,
                                   step=1, key=key,
                                   help="Defaults to the query re-ranking hurt most."))
    state.put("query", q)
    return q


def _rank(r: object) -> str:
    return "none" if pd.isna(r) else str(int(r))


def _side(rows: pd.DataFrame, side: str | None, root: str | None, known: bool) -> None:
    """Thumbnails of one stored list; ``side`` ('before'/'after') adds each item's movement."""
    images, captions = [], []
    for r in rows.itertuples():
        # an item the store does not list (a crafted ranking past G) has no known relevance
        mark = "unknown" if not known or pd.isna(r.relevant) else \
            "relevant" if r.relevant else "irrelevant"
        images.append(thumbs.thumbnail(root, r.path, _THUMB, mark))
        moved = "" if side is None else f" {movement(side, r.rank_before, r.rank_after)}"
        # without a dataset root no image resolves: the item's name (from the user's files) is shown
        named = f" · {plain(short(r.path, 60))}" if not root and isinstance(r.path, str) else ""
        captions.append(f"#{r.rank} {_ICONS[mark]}{moved} · {plain(r.class_name)}{named}")
    if images:
        st.image(images, caption=captions, width=_THUMB)
    else:
        st.caption("No stored ranking for this iteration.")


def page() -> None:
    """Draw the page."""
    st.title("Query inspector")
    ctx = context()
    st.caption(plain(ctx.labels[ctx.run_id]))
    top = st.columns(3)
    iteration = iteration_select(top[1], ctx, ctx.run_id)
    n = int(queries.n_queries(ctx.db, ctx.run_id))
    if n <= 0:
        st.info("This run's dataset lists no queries: there is nothing to inspect.")
        return
    q = _query_select(ctx, top[0], iteration, n)
    k = top[2].slider("Top k", 5, 50, 10, step=5)

    item = queries.query_item(ctx.db, ctx.run_id, q)
    if item is None:
        st.warning(f"Query {q} is not in this run's dataset.")
        return
    root = queries.dataset_root(ctx.db, ctx.run_id)
    known = item["label"] != -1 and has_metrics(ctx.run)
    per_it = queries.query_metrics_by_iteration(ctx.db, ctx.run_id, q).set_index("iteration")

    left, right = st.columns([1, 4])
    left.image(thumbs.thumbnail(root, item["path"], 160), width=160,
               caption=plain(short(item["path"])) if item["path"] else "(no image: imported distances)")
    with right:
        full = item["full_class_name"]
        st.subheader(f"Query {q}: {plain(item['class_name'])} (label {item['label']})",
                     help=plain(full) if isinstance(full, str) and len(full) > NAME_LIMIT else None)
        if not has_metrics(ctx.run):
            st.info("This run has no labels: its rankings are shown without relevance marks "
                    "and without AP.")
        elif not known:
            st.warning("This query's label is unknown (-1): it has no AP and relevance is "
                       "not marked.")
        elif 0 in per_it.index and iteration in per_it.index:
            b, a = per_it.loc[0], per_it.loc[iteration]
            m = st.columns(3)
            m[0].metric("AP before", f"{b.ap:.4f}")
            m[1].metric(f"AP after (iteration {iteration})", f"{a.ap:.4f}",
                        delta=signed(a.ap - b.ap))
            m[2].metric("First relevant rank", f"{_rank(a.first_relevant_rank)} "
                        f"(was {_rank(b.first_relevant_rank)})")
        st.caption("✓ relevant (green frame, tick) · ✗ not relevant (red frame, cross). "
                   "Movement compares the two stored top-N lists: 'new' was outside the stored top-N before, "
                   "'dropped' fell outside it after.")

    topn = queries.query_topn(ctx.db, ctx.run_id, q, iteration, top_n=k)
    other = _beside_select(ctx)
    before, after = st.columns(2)
    with after:
        st.markdown(f"#### {plain(_name(ctx, ctx.run_id))}: iteration {iteration}")
        side = "after" if other == INITIAL else None
        _side(topn[topn.side == "after"], side, root, known)
    with before:
        if other == INITIAL:
            st.markdown("#### Before: initial ranking")
            _side(topn[topn.side == "before"], "before", root, known)
            return
        it_other = iteration_select(st, ctx, int(other), param="iteration_other",
                                    label="Iteration of the second run", initial=True)
        st.markdown(f"#### {plain(_name(ctx, int(other)))}: "
                    + ("initial ranking" if it_other == 0 else f"iteration {it_other}"))
        if known:
            _query_ap(ctx, int(other), q, it_other)
        theirs = queries.query_topn(ctx.db, int(other), q, it_other, top_n=k)
        _side(theirs[theirs.side == "after"], None, root, known)


def _name(ctx: Context, run_id: int) -> str:
    label, params = method_and_params(ctx.runs.loc[run_id])
    return f"#{run_id} {label}" + (f" ({params})" if params else "")


def _beside_select(ctx: Context) -> str | int:
    """What stands beside the run's list: its initial ranking, or another run of the dataset."""
    others = ctx.runs.run_id[(ctx.runs.dataset_id == ctx.run.dataset_id)
                             & (ctx.runs.run_id != ctx.run_id)]
    same = run_choices(ctx.runs, others, ctx.run_id, *filter(None, [state.get_int("other")]))
    return state.select(st, "Beside it", [INITIAL, *same], "other",
                        format_func=lambda v: "its initial ranking (with movement)"
                        if v == INITIAL else f"run {ctx.labels[v]}",
                        help="Show a second run's top-k for the same query: two methods "
                             "side by side.")


def _query_ap(ctx: Context, run_id: int, q: int, iteration: int) -> None:
    per_it = queries.query_metrics_by_iteration(ctx.db, run_id, q).set_index("iteration")
    if iteration in per_it.index:
        row = per_it.loc[iteration]
        st.caption(f"AP {row.ap:.4f} · first relevant rank {_rank(row.first_relevant_rank)}")


page()
