"""The shared sidebar (database and run) and the context every page reads."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import queries, state
from dashboard.data import NEUTRAL, Db, Stores, StoreError, store_problem
from dashboard.format import run_label

_CTX = "_context"


@dataclass(frozen=True)
class Context:
    """What the sidebar chose this run.

    Attributes:
        db: The database.
        runs: ``store.read.runs`` (finished runs), indexed by run_id.
        run_id: The selected run.
        labels: Run id -> display name.
    """

    db: Db
    runs: pd.DataFrame
    run_id: int
    labels: dict[int, str]

    @property
    def run(self) -> pd.Series:
        """The selected run's row."""
        return self.runs.loc[self.run_id]


def _store_select(sb) -> Db | None:
    """The store selector: only the allowed stores (``Stores``) are offered.

    Returns:
        The chosen store, None when the selection (say a hand-edited URL)
        names anything else.
    """
    stores = Stores.from_launch()
    keys = stores.keys()
    wanted = state.get("db")
    path = stores.default if wanted is None else stores.find(wanted)
    key = state.widget_key("db")
    if key in st.session_state and st.session_state[key] not in keys:
        del st.session_state[key]
    index = keys.index(stores.key(path)) if path is not None else None
    picked = sb.selectbox("Results store", keys, index=index, key=key,
                          placeholder="Choose a store",
                          help="DuckDB files written by `python -m jobs.sweep` in the "
                               "dashboard's results folder (read-only here).")
    if picked is None:
        return None
    path = stores.find(picked)
    if path is None:  # the file went away since the list was made
        return None
    state.put("db", stores.key(path))
    return Db.at(path, stores.key(path))


def render() -> tuple[Db | None, Context | None, str | None]:
    """Draw the sidebar; return the database (None when the selection names no
    allowed store), the context (None when there is nothing to show) and, in
    that case, why (``NEUTRAL``, or a "nothing yet" reason)."""
    sb = st.sidebar
    db = _store_select(sb)
    if db is None:
        st.session_state.pop(_CTX, None)
        return None, None, NEUTRAL
    problem = queries.probe(db)
    if problem is not None:
        st.session_state.pop(_CTX, None)
        return db, None, problem
    try:
        runs = queries.runs(db).set_index("run_id", drop=False)
    except StoreError as exc:
        st.session_state.pop(_CTX, None)
        return db, None, store_problem(exc)
    labels = {r.run_id: run_label(r) for r in runs.itertuples()}
    best = int(runs.loc[runs.map_all_gain.idxmax(), "run_id"]) if runs.map_all_gain.notna().any() \
        else int(runs.run_id.iloc[-1])
    run_id = state.select(sb, "Run", list(labels), "run", default=best, format_func=labels.get)
    n_sweeps = runs.sweep_id.nunique()
    sb.caption(f"{len(runs)} finished runs in {n_sweeps} sweep{'s' * (n_sweeps != 1)}. "
               "The selection is kept in the URL: copy it to share this view.")
    ctx = Context(db, runs, int(run_id), labels)
    st.session_state[_CTX] = ctx
    return db, ctx, None


def context() -> Context:
    """The context the sidebar made for this run (pages only run when it exists)."""
    return st.session_state[_CTX]


def iteration_select(container, ctx: Context, run_id: int, param: str = "iteration",
                     label: str = "Iteration (after)", *, initial: bool = False,
                     default: int | None = None) -> int:
    """A selector of a run's stored iterations (the initial ranking is the "before").

    Args:
        container: Where to draw it.
        ctx: The context.
        run_id: Whose iterations.
        param: Selection key.
        label: Widget label.
        initial: Offer iteration 0 (the initial ranking) too.
        default: Iteration chosen when the selection names none (default the
            run's last iteration).

    Marks the last, the best and (when offered) the initial iteration.
    """
    its = [int(i) for i in queries.stored_iterations(ctx.db, run_id)]
    after = (its if initial else [i for i in its if i != 0]) or its or [0]
    row = ctx.runs.loc[run_id]

    def name(i: int) -> str:
        tags = [t for t, hit in (("initial ranking", i == 0),
                                 ("last", i == row.last_iteration),
                                 ("best", i == row.best_iteration)) if hit]
        return f"{i} ({', '.join(tags)})" if tags else str(i)

    if default not in after:
        default = int(row.last_iteration) if row.last_iteration in after else after[-1]
    return int(state.select(container, label, after, param, default=default, format_func=name))
