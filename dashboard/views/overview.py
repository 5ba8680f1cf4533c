"""Overview: sweeps and runs, the methods comparison, metrics against iteration,
the KG x KQ gain heatmap (ICFRR runs only)."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from dashboard import charts, queries, state
from dashboard.format import (METRIC_NAMES, NO_LABELS, NO_METRICS, has_metrics,
                              method_and_params, method_label, plain, signed)
from dashboard.sidebar import Context, context, run_choices
from icfrr.registry import METHOD_KEYS
from icfrr.stats import PAIRED_TESTS
from store import report

#: Baseline choice meaning "each row against its own run's initial ranking".
INITIAL = "initial"
#: Dataset choice of the runs table meaning "every dataset".
ALL = "all"
#: Rows of the runs table per page (a store may hold a great many runs).
PAGE_ROWS = 500
_SLICE_OF = "_heatmap_slice_of"


def _headline(ctx: Context) -> None:
    run = ctx.run
    st.subheader(plain(ctx.labels[ctx.run_id]))
    if not has_metrics(run):
        st.info(NO_METRICS.format(run=ctx.run_id))
        return
    cols = st.columns(len(METRIC_NAMES))
    for col, m in zip(cols, METRIC_NAMES):
        col.metric(f"{METRIC_NAMES[m]} after", f"{run[f'{m}_after']:.4f}",
                   delta=signed(run[f"{m}_after"] - run[f"{m}_before"]),
                   help=f"Before (initial ranking): {run[f'{m}_before']:.4f}; after "
                        f"iteration {run.last_iteration}.")


def _runs_table(ctx: Context) -> None:
    st.subheader("Runs")
    datasets = sorted(set(ctx.runs.dataset))
    top = st.columns([2, 1])
    dataset = state.select(top[0], "Dataset", [ALL, *datasets], "dataset",
                           default=ctx.run.dataset,
                           format_func=lambda d: "all datasets" if d == ALL else d)
    runs = ctx.runs if dataset == ALL else ctx.runs[ctx.runs.dataset == dataset]
    n_pages = max(1, -(-len(runs) // PAGE_ROWS))
    page = int(top[1].number_input(f"Page (of {n_pages})", 1, n_pages, 1, key="runs_page")) \
        if n_pages > 1 else 1
    runs = runs.iloc[(page - 1) * PAGE_ROWS: page * PAGE_ROWS]
    named = [method_and_params(r) for r in runs.itertuples()]
    table = runs.assign(method=[m for m, _ in named], parameters=[p for _, p in named],
                        labels=["" if has_metrics(r) else NO_LABELS for r in runs.itertuples()])
    cols = ["run_id", "dataset", "backbone", "method", "parameters", "labels", "n_iter"]
    for m in METRIC_NAMES:
        cols += [f"{m}_before", f"{m}_after"]
    cols += ["map_all_gain", "best_iteration", "seconds"]
    # numbers formatted by the Styler, so that a run without metrics shows "n/a", never "None"
    config: dict[str, object] = {f"{m}_{w}": f"{METRIC_NAMES[m]} {w}"
                                 for m in METRIC_NAMES for w in ("before", "after")}
    fmt = dict.fromkeys(config, "{:.4f}") | {"map_all_gain": "{:+.4f}", "seconds": "{:.1f}",
                                              "best_iteration": "{:.0f}"}
    config["n_iter"] = st.column_config.NumberColumn("iterations")
    config["labels"] = st.column_config.TextColumn(
        "labels", help=f"'{NO_LABELS}': the dataset has no labels, the run has no metrics")
    config["map_all_gain"] = "mAP@all gain"
    config["seconds"] = "time (s)"
    st.dataframe(table[cols].style.format(fmt, na_rep="n/a"), hide_index=True,
                 column_config=config)
    with st.expander("Sweeps"):
        st.dataframe(queries.sweeps(ctx.db), hide_index=True)


def _iteration_chart(ctx: Context) -> None:
    st.subheader("Metrics by iteration")
    if not has_metrics(ctx.run):
        st.info(NO_METRICS.format(run=ctx.run_id))
        return
    same = ctx.runs[ctx.runs.sweep_id == ctx.run.sweep_id]
    best = int(same.loc[same.map_all_gain.idxmax(), "run_id"]) if same.map_all_gain.notna().any() \
        else ctx.run_id
    measured = run_choices(ctx.runs, ctx.runs.run_id[ctx.runs.map_all_before.notna()],
                           ctx.run_id, ctx.run_id, best)
    chosen = st.multiselect("Runs to plot", measured, default=sorted({ctx.run_id, best}),
                            format_func=ctx.labels.get)
    by_iter = queries.metrics_by_iteration(ctx.db, tuple(chosen))
    if by_iter.empty:
        st.caption("Choose at least one run.")
        return
    st.altair_chart(charts.metric_lines(by_iter, {r: ctx.labels[r] for r in chosen}))


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "store"


def _methods(ctx: Context) -> None:
    """The comparison table (``store.report``) of the selected run's dataset and distances."""
    st.subheader("Methods")
    run = ctx.run
    if not has_metrics(run):
        st.info(NO_METRICS.format(run=ctx.run_id))
        return
    here = ctx.runs[(ctx.runs.dataset_id == run.dataset_id)
                    & (ctx.runs.artifact_id == run.artifact_id)]
    present = sorted(set(here.method), key=lambda k: (METHOD_KEYS.index(k), k)
                     if k in METHOD_KEYS else (len(METHOD_KEYS), k))
    st.caption(plain(f"Each method's best run on {run.dataset} (backbone {run.backbone}), by "
                     f"{METRIC_NAMES['map_all']} at its last iteration, against a baseline."))
    cols = st.columns(2)
    baseline = state.select(cols[0], "Baseline", [INITIAL, *present], "baseline",
                            format_func=lambda k: "each run's initial ranking" if k == INITIAL
                            else f"{method_label(k)} (its best run)")
    test = state.select(cols[1], "Paired test", list(PAIRED_TESTS), "test",
                        format_func=PAIRED_TESTS.get)
    try:
        cmp = queries.comparison(ctx.db, int(run.dataset_id), int(run.artifact_id),
                                 None if baseline == INITIAL else baseline, test)
    except report.ReportError as exc:
        st.info(plain(str(exc)))
        return
    table = pd.DataFrame(report.to_records(cmp))
    # Shown: each value as text with its mark right after it ("0.7772†"), the p-values last,
    # so no mark sits off-screen; the numbers stay in the frame (column_order picks the shown).
    table["configs_shown"] = [f"best of {n}" if role != "initial" else ""
                              for n, role in zip(table.n_configs, table.role)]
    for m in cmp.metrics:
        table[f"{m}_shown"] = [("n/a" if pd.isna(v) else f"{v:.4f}") + mark
                               for v, mark in zip(table[m], table[f"{m}_mark"])]
    shown = ["label", "params", "configs_shown", "run_id", "iteration",
             *(f"{m}_shown" for m in cmp.metrics), *(f"{m}_delta" for m in cmp.metrics),
             *(c for m in cmp.metrics for c in (f"{m}_p_holm", f"{m}_p"))]
    config: dict[str, object] = {"label": "method", "params": "parameters",
                                 "configs_shown": "configurations", "run_id": "run",
                                 "iteration": "iteration"}
    for m in cmp.metrics:
        config[f"{m}_shown"] = st.column_config.TextColumn(METRIC_NAMES[m])
        config[f"{m}_delta"] = st.column_config.NumberColumn(f"Δ {METRIC_NAMES[m]}",
                                                             format="%+.4f")
        config[f"{m}_p_holm"] = st.column_config.NumberColumn(f"p (Holm) {METRIC_NAMES[m]}",
                                                              format="%.4f")
        config[f"{m}_p"] = st.column_config.NumberColumn(f"p {METRIC_NAMES[m]}", format="%.4f")
    st.dataframe(table, hide_index=True, column_order=shown, column_config=config,
                 key="methods_table")
    st.caption(plain(cmp.note()) + ". " + plain(cmp.delta_note()) + ".")
    stem = f"methods-{_file_stem(cmp.dataset)}-{_file_stem(cmp.backbone)}"
    down = st.columns(2)
    down[0].download_button("Download CSV", report.to_csv(cmp), file_name=f"{stem}.csv",
                            mime="text/csv", key="methods_csv")
    down[1].download_button("Download LaTeX", report.to_latex(cmp), file_name=f"{stem}.tex",
                            mime="text/x-tex", key="methods_latex")


def _sweep_heatmap(ctx: Context) -> None:
    st.subheader("Gain over KG x KQ")
    sweeps = queries.sweeps(ctx.db)
    measured = ctx.runs.map_all_before.notna()   # runs without labels have no gain to draw
    with_icfrr = set(ctx.runs.sweep_id[(ctx.runs.method == "icfrr") & measured])
    sweep_names = {int(r.sweep_id): f"sweep {r.sweep_id}: {r.dataset} · {r.backbone} · "
                   f"{r.n_runs} runs" for r in sweeps.itertuples()
                   if r.n_runs and r.sweep_id in with_icfrr}
    if not sweep_names:
        st.info("No sweep holds ICFRR runs with metrics: the KG x KQ heatmap is for ICFRR "
                "configurations of labelled data.")
        return
    own = ctx.run.method == "icfrr" and int(ctx.run.sweep_id) in sweep_names
    cols = st.columns(4)
    sweep_id = state.select(cols[0], "Sweep", list(sweep_names), "sweep",
                            default=int(ctx.run.sweep_id), format_func=sweep_names.get)
    grid = queries.sweep_grid(ctx.db, sweep_id).dropna(subset=["map_all_gain", "best_gain"])
    if grid.empty:
        st.info("This sweep holds no ICFRR runs with metrics: the KG x KQ heatmap is for ICFRR "
                "configurations of labelled data.")
        return
    # the default slice is the selected run's own, so the framed cell agrees with the banner above;
    # choosing another run in the sidebar moves the slice to that run's
    own = own and int(sweep_id) == int(ctx.run.sweep_id)
    before = st.session_state.get(_SLICE_OF)
    if before != ctx.run_id:
        st.session_state[_SLICE_OF] = ctx.run_id
        if own and before is not None:   # a shared link's own beta is kept on arrival
            for param in ("variant", "beta"):
                state.put(param, None)
                st.session_state.pop(state.widget_key(param), None)
    variant = state.select(cols[1], "Variant", sorted(grid.variant.unique()), "variant",
                           default=ctx.run.variant if own else None)
    grid = grid[grid.variant == variant]
    beta = state.select(cols[2], "β", sorted(grid.beta.unique()), "beta",
                        default=ctx.run.beta if own else None, format_func=lambda b: f"{b:g}")
    at = cols[3].radio("Gain at", ["last iteration", "best iteration"], horizontal=True)
    value = "map_all_gain" if at == "last iteration" else "best_gain"

    best = grid.loc[grid[value].idxmax()]
    after = best.map_all_after if value == "map_all_gain" else best.best_map_all
    it = best.n_iter if value == "map_all_gain" else best.best_iteration
    st.success(
        f"**Best configuration of this sweep ({plain(variant)}):** KG {best.kg} · KQ {best.kq} · "
        f"β {best.beta:g}: mAP@all {best.map_all_before:.4f} → {after:.4f} "
        f"({signed(best[value])}) at iteration {it} (run #{best.run_id})."
    )
    panel = grid[grid.beta == beta]
    # one cell per (KG, KQ): a store holding the same configuration many times sends its best
    panel = panel.loc[panel.groupby(["kg", "kq"])[value].idxmax()]
    if panel.kg.nunique() * panel.kq.nunique() < 2:
        st.caption("This sweep has a single KG x KQ configuration for this β: no grid to draw.")
        return
    st.altair_chart(charts.gain_heatmap(panel, value))


def page() -> None:
    """Draw the page."""
    st.title("Overview")
    ctx = context()
    _headline(ctx)
    _runs_table(ctx)
    _methods(ctx)
    _iteration_chart(ctx)
    _sweep_heatmap(ctx)


page()
