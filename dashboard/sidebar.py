"""The shared sidebar (database and run) and the context every page reads."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import queries, state
from dashboard.data import NEUTRAL, Db, Stores, StoreError, store_problem
from dashboard.format import GAIN, run_label

_CTX = "_context"
#: Most runs one selector offers: a store may hold a great many runs, and every option is
#: sent to the browser. The rest are reached by id (the sidebar's "Go to run", ``?run=ID``).
RUN_CHOICES = 1000


class RunLabels(Mapping[int, str]):
    """Run id -> ``run_label``, each made when first asked for (not 300k at every rerun).

    Args:
        runs: ``store.read.runs`` indexed by run_id.
    """

    def __init__(self, runs: pd.DataFrame) -> None:
        self._runs = runs
        self._made: dict[int, str] = {}

    def __getitem__(self, run_id: int) -> str:
        if run_id not in self._made:
            if run_id not in self._runs.index:
                raise KeyError(run_id)
            self._made[run_id] = run_label(self._runs.loc[run_id])
        return self._made[run_id]

    def __iter__(self) -> Iterator[int]:
        return iter(int(r) for r in self._runs.index)

    def __len__(self) -> int:
        return len(self._runs)


def run_choices(runs: pd.DataFrame, ids: Sequence[int], anchor: int, *keep: int) -> list[int]:
    """At most ``RUN_CHOICES`` of ``ids`` for a selector, in id order: ``keep`` (runs
    already chosen), then the runs of ``anchor``'s sweep, then the others by id.

    Args:
        runs: ``store.read.runs`` indexed by run_id.
        ids: The runs the selector may offer.
        anchor: The run whose sweep comes first.
        *keep: Runs that must stay offered when they are in ``ids``.
    """
    ids = [int(i) for i in ids]
    if len(ids) <= RUN_CHOICES:
        return ids
    sweep = runs.sweep_id.get(anchor)
    own = [i for i in runs.run_id[runs.sweep_id == sweep] if i in set(ids)] if sweep is not None else []
    wanted = set(ids)
    picked = dict.fromkeys([*(k for k in keep if k in wanted), *own[:RUN_CHOICES], *ids[:RUN_CHOICES]])
    return sorted(list(picked)[:RUN_CHOICES])


def best_run(runs: pd.DataFrame) -> int:
    """The run shown when none is chosen: the largest headline (mAP@all) gain at its last iteration,
    measured on the queries it is reported on (the ``test`` protocol's rule); the newest
    run when no run has metrics."""
    gain = runs[GAIN]
    if gain.notna().any():
        return int(runs.loc[gain.idxmax(), "run_id"])
    return int(runs.run_id.iloc[-1])


def _go_to_run(runs: pd.DataFrame) -> None:
    """The "Go to run" box: a run id that exists becomes the selected run."""
    value = st.session_state.get(_GOTO)
    if value is not None and int(value) in runs.index:
        state.put("run", int(value))
        st.session_state.pop(state.widget_key("run"), None)


_GOTO = "_w_goto_run"


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
    labels: Mapping[int, str]

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
    labels = RunLabels(runs)
    best = best_run(runs)
    wanted = state.get_int("run")
    anchor = wanted if wanted is not None and wanted in runs.index else best
    options = run_choices(runs, runs.run_id, anchor, anchor, best)
    run_id = state.select(sb, "Run", options, "run", default=best, format_func=labels.get)
    n_sweeps = runs.sweep_id.nunique()
    sb.caption(f"{len(runs)} finished runs in {n_sweeps} sweep{'s' * (n_sweeps != 1)}. "
               "The selection is kept in the URL: copy it to share this view.")
    if len(options) < len(runs):
        sb.number_input(f"Go to run (the list offers {len(options)}: the run's sweep first)",
                        min_value=int(runs.run_id.min()), max_value=int(runs.run_id.max()),
                        value=None, step=1, key=_GOTO, on_change=_go_to_run, args=(runs,))
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
