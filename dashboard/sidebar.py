"""The shared sidebar (database and run) and the context every page reads."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import state
from dashboard.data import Db, default_db, load, probe
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


def render() -> tuple[Db, Context | None, str | None]:
    """Draw the sidebar; return the database, the context (None when there is
    nothing to show) and, in that case, why."""
    sb = st.sidebar
    key = state.widget_key("db")
    if key not in st.session_state:
        st.session_state[key] = state.get("db") or default_db()
    path = sb.text_input("Results database", key=key,
                         help="A DuckDB file written by `python -m jobs.sweep` (read-only here).")
    state.put("db", path)
    db = Db.at(path)
    problem = probe(db)
    if problem is not None:
        st.session_state.pop(_CTX, None)
        return db, None, problem
    runs = load(db, "runs").set_index("run_id", drop=False)
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
                     label: str = "Iteration (after)") -> int:
    """A selector of a run's stored iterations (the initial ranking is the "before").

    Defaults to the run's last iteration; marks the best one.
    """
    its = [int(i) for i in load(ctx.db, "stored_iterations", run_id)]
    after = [i for i in its if i != 0] or its or [0]
    row = ctx.runs.loc[run_id]

    def name(i: int) -> str:
        tags = [t for t, hit in (("last", i == row.last_iteration),
                                 ("best", i == row.best_iteration)) if hit]
        return f"{i} ({', '.join(tags)})" if tags else str(i)

    return int(state.select(container, label, after, param,
                            default=int(row.last_iteration) if row.last_iteration in after
                            else after[-1], format_func=name))
