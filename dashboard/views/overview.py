"""Overview: sweeps and runs, the methods comparison, metrics against iteration,
the KG x KQ gain heatmap (ICFRR runs only)."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from dashboard import charts, queries, state
from dashboard.format import METRIC_NAMES, method_and_params, method_label, plain, signed
from dashboard.sidebar import Context, context
from icfrr.registry import METHOD_KEYS
from icfrr.stats import PAIRED_TESTS
from store import report

#: Baseline choice meaning "each row against its own run's initial ranking".
INITIAL = "initial"


def _headline(ctx: Context) -> None:
    run = ctx.run
    st.subheader(plain(ctx.labels[ctx.run_id]))
    cols = st.columns(len(METRIC_NAMES))
    for col, m in zip(cols, METRIC_NAMES):
        col.metric(f"{METRIC_NAMES[m]} after", f"{run[f'{m}_after']:.4f}",
                   delta=signed(run[f"{m}_after"] - run[f"{m}_before"]),
                   help=f"Before (initial ranking): {run[f'{m}_before']:.4f}; after "
                        f"iteration {run.last_iteration}.")


def _runs_table(ctx: Context) -> None:
    st.subheader("Runs")
    named = [method_and_params(r) for r in ctx.runs.itertuples()]
    table = ctx.runs.assign(method=[m for m, _ in named], parameters=[p for _, p in named])
    cols = ["run_id", "dataset", "backbone", "method", "parameters", "n_iter"]
    for m in METRIC_NAMES:
        cols += [f"{m}_before", f"{m}_after"]
    cols += ["map_all_gain", "best_iteration", "seconds"]
    config = {f"{m}_{w}": st.column_config.NumberColumn(f"{METRIC_NAMES[m]} {w}", format="%.4f")
              for m in METRIC_NAMES for w in ("before", "after")}
    config["n_iter"] = st.column_config.NumberColumn("iterations")
    config["map_all_gain"] = st.column_config.NumberColumn("mAP@all gain", format="%+.4f")
    config["seconds"] = st.column_config.NumberColumn("time (s)", format="%.1f")
    st.dataframe(table[cols], hide_index=True, column_config=config)
    with st.expander("Sweeps"):
        st.dataframe(queries.sweeps(ctx.db), hide_index=True)


def _iteration_chart(ctx: Context) -> None:
    st.subheader("Metrics by iteration")
    same = ctx.runs[ctx.runs.sweep_id == ctx.run.sweep_id]
    best = int(same.loc[same.map_all_gain.idxmax(), "run_id"]) if same.map_all_gain.notna().any() \
        else ctx.run_id
    chosen = st.multiselect("Runs to plot", list(ctx.labels), default=sorted({ctx.run_id, best}),
                            format_func=ctx.labels.get)
    by_iter = queries.metrics_by_iteration(ctx.db, tuple(chosen))
    if by_iter.empty:
        st.caption("Choose at least one run.")
        return
    st.altair_chart(charts.metric_lines(by_iter, ctx.labels))


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "store"


def _methods(ctx: Context) -> None:
    """The comparison table (``store.report``) of the selected run's dataset and distances."""
    st.subheader("Methods")
    run = ctx.run
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
    with_icfrr = set(ctx.runs.sweep_id[ctx.runs.method == "icfrr"])
    sweep_names = {int(r.sweep_id): f"sweep {r.sweep_id}: {r.dataset} · {r.backbone} · "
                   f"{r.n_runs} runs" for r in sweeps.itertuples()
                   if r.n_runs and r.sweep_id in with_icfrr}
    if not sweep_names:
        st.info("No sweep holds ICFRR runs: the KG x KQ heatmap is for ICFRR configurations.")
        return
    cols = st.columns(4)
    sweep_id = state.select(cols[0], "Sweep", list(sweep_names), "sweep",
                            default=int(ctx.run.sweep_id), format_func=sweep_names.get)
    grid = queries.sweep_grid(ctx.db, sweep_id)
    if grid.empty:
        st.info("This sweep holds no ICFRR runs: the KG x KQ heatmap is for ICFRR configurations.")
        return
    variant = state.select(cols[1], "Variant", sorted(grid.variant.unique()), "variant")
    grid = grid[grid.variant == variant]
    beta = state.select(cols[2], "β", sorted(grid.beta.unique()), "beta",
                        format_func=lambda b: f"{b:g}")
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
