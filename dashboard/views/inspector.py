"""Query inspector: one query's top-k before and after, side by side, and why it moved.

"Beside it" chooses what stands on the left: the run's own initial ranking
(with each item's movement), or a second run of the same dataset, of any
method, at one of its stored iterations (two methods' top-k for the same
query). Relevant items are marked on both sides.

"Why did it move" replays the query's ICFRR votes (``dashboard.why``, over
``icfrr.explain``): each item of the after top-k with its bonus in the chosen
update and its voters, a sentence for each intruder (a wrong-class item that
rose), and the vote purity of every update. Baseline runs cast no votes; runs
whose artifact files are not readable get a one-line reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import queries, state, thumbs, why
from dashboard.data import image_roots
from dashboard.format import (NAME_LIMIT, graph_text, has_metrics, method_and_params, method_label,
                              movement, plain, short, signed)
from dashboard.sidebar import Context, context, iteration_select, run_choices
from store.read import explainable

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
        else:
            _beside(ctx, int(other), q, k, root, known)
    _why(ctx, q, item, iteration, topn[topn.side == "after"], root, known)


def _beside(ctx: Context, other: int, q: int, k: int, root: str | None, known: bool) -> None:
    """A second run's top-k for the same query."""
    it_other = iteration_select(st, ctx, other, param="iteration_other",
                                label="Iteration of the second run", initial=True)
    st.markdown(f"#### {plain(_name(ctx, other))}: "
                + ("initial ranking" if it_other == 0 else f"iteration {it_other}"))
    if known:
        _query_ap(ctx, other, q, it_other)
    theirs = queries.query_topn(ctx.db, other, q, it_other, top_n=k)
    _side(theirs[theirs.side == "after"], None, root, known)


def _name(ctx: Context, run_id: int) -> str:
    row = ctx.runs.loc[run_id]
    label, params = method_and_params(row)
    graph = graph_text(row)
    return f"#{run_id} {label}" + (f" ({params})" if params else "") + (f" · {graph}" if graph else "")


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


#: Voter thumbnails shown for one item (the largest votes first).
VOTER_LIMIT = 24


def _why(ctx: Context, q: int, item: dict, iteration: int, after: pd.DataFrame, root: str | None,
         known: bool) -> None:
    """Why the after list is what it is: the votes of update ``iteration`` (ICFRR runs only)."""
    st.subheader("Why did it move")
    if not explainable(ctx.run.method):
        st.info(f"Vote provenance is an ICFRR view: run #{ctx.run_id} is a {plain(method_label(ctx.run.method))} run, "
                "which casts no votes; the lists above show its rank movement only.")
        return
    if iteration == 0:
        st.info("Iteration 0 is the initial ranking: choose a later iteration to see the votes behind it.")
        return
    replay = why.replay(ctx.db, ctx.run_id, q, image_roots())
    if isinstance(replay, why.Unavailable):
        st.info(f"Vote provenance is unavailable: {plain(replay.reason)}")
        return
    step = replay.steps[iteration - 1]
    gallery = queries.dataset_items(ctx.db, ctx.run_id, "gallery").set_index("idx")
    labels_g = queries.item_labels(gallery.reset_index())
    q_label = int(item["label"])
    _purity(replay, labels_g, q_label, item["class_name"], iteration, known)

    k = len(after)
    shown = replay.ranking(iteration)[:k]
    stored = after.gallery_idx.to_numpy(np.int64)
    if not np.array_equal(shown, stored):
        st.caption(f"The replayed ranking differs from the stored top-{k} at "
                   f"{int((shown != stored[:shown.size]).sum())} positions (near-ties, or artifacts made "
                   "again since the run); the votes below are the replay's.")
    bonus = step.bonus()
    before0, after_t = replay.positions(0), replay.positions(iteration)
    rows = []
    for j in shown.tolist():
        votes = why.voters_of(step, j)
        g = gallery.loc[j] if j in gallery.index else None
        rows.append({
            "rank": int(after_t[j]), "item": j,
            "name": short(g.path, 60) if not root and g is not None and isinstance(g.path, str) else "",
            "image": thumbs.data_url(thumbs.thumbnail(root, None if g is None else g.path, 48)),
            "class_name": "unknown class" if g is None else g.class_name,
            "relevant": None if not known or g is None else bool(g.label == q_label),
            "rank_before": int(before0[j]), "bonus": float(bonus[j]), "voters": len(votes),
            "top_voters": ", ".join(f"#{int(v.rank)} {gallery.class_name.get(int(v.voter), '?')} "
                                    f"+{v.amount:.2e}" for v in votes.head(3).itertuples()),
        })
    table = pd.DataFrame(rows)
    if root:   # images are shown: the names only where there are none
        table = table.drop(columns="name")
    st.dataframe(table, hide_index=True, key="why_items", row_height=52,
                 column_config={
                     "rank": f"rank (it. {iteration})", "item": "gallery item", "name": "name",
                     "image": st.column_config.ImageColumn("image", width="small"),
                     "class_name": "class", "rank_before": "rank before",
                     "bonus": st.column_config.NumberColumn(f"bonus (update {iteration})", format="%.6f"),
                     "voters": "voters", "top_voters": "largest votes (rank at the time, class, amount)"})
    if known:
        _intruders(table, step, gallery, q_label)
    else:
        st.caption("Intruders need the query's class: "
                   + ("this run has no labels." if not has_metrics(ctx.run) else "this query's label is unknown."))
    _voters(table, step, gallery, root, iteration)


def _purity(replay: why.Replay, labels_g: np.ndarray, q_label: int, q_class: str, iteration: int,
            known: bool) -> None:
    """One line: the share of each update's vote mass that went to the query's class."""
    if not known:
        st.caption("Vote purity needs the query's class (this run or this query has no label).")
        return
    parts = []
    for s in replay.steps:
        p = why.purity(s, labels_g, q_label)
        text = "n/a" if np.isnan(p) else f"{p:.1%}"
        parts.append(f"**{s.iteration}: {text}**" if s.iteration == iteration else f"{s.iteration}: {text}")
    st.markdown(f"Vote purity (share of each update's vote mass that went to {plain(q_class)} items), "
                f"by update: " + " · ".join(parts))


def _intruders(table: pd.DataFrame, step, gallery: pd.DataFrame, q_label: int) -> None:
    """A sentence for each wrong-class item of the after list that rose."""
    rose = table[(table.relevant == False) & (table.rank_before > table["rank"])]  # noqa: E712
    if rose.empty:
        st.caption("No intruder: no wrong-class item of this list rose.")
        return
    lines = []
    for r in rose.itertuples():
        votes = why.voters_of(step, int(r.item))
        classes = [str(gallery.class_name.get(int(v), "unknown class")) for v in votes.voter]
        lines.append(f"- **item {r.item}** ({plain(r.class_name)}, #{r.rank}): "
                     + plain(why.intruder_sentence(int(r.rank_before), int(r.rank), classes)))
    st.markdown("**Intruders** (wrong-class items that rose since the initial ranking):\n" + "\n".join(lines))


def _voters(table: pd.DataFrame, step, gallery: pd.DataFrame, root: str | None, iteration: int) -> None:
    """One item's voters as thumbnails: rank at the time, class, amount."""
    items = table.item.tolist()
    labels = {int(r.item): f"#{r.rank} · item {r.item} · {r.class_name}" for r in table.itertuples()}
    j = st.selectbox("Voters of", items, format_func=lambda v: labels[int(v)], key="why_item")
    votes = why.voters_of(step, int(j))
    st.markdown(f"Item {int(j)}: total bonus **{float(step.bonus()[int(j)]):.6f}** in update {iteration} "
                f"from {len(votes)} voter{'s' if len(votes) != 1 else ''}.")
    if votes.empty:
        return
    shown = votes.head(VOTER_LIMIT)
    images, captions = [], []
    for v in shown.itertuples():
        g = gallery.loc[int(v.voter)] if int(v.voter) in gallery.index else None
        images.append(thumbs.thumbnail(root, None if g is None else g.path, 80))
        name = "" if root or g is None or not isinstance(g.path, str) else f" · {plain(short(g.path, 40))}"
        captions.append(f"#{int(v.rank)} · {plain('?' if g is None else g.class_name)} · +{v.amount:.2e}{name}")
    st.image(images, caption=captions, width=80)
    if len(votes) > len(shown):
        st.caption(f"The {len(shown)} largest of {len(votes)} votes; rank: the voter's place in the ranking "
                   "the update started from.")


page()
