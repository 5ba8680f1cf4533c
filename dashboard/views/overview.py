"""Overview: sweeps and runs, metrics against iteration, the KG x KQ gain heatmap."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, queries, state
from dashboard.format import METRIC_NAMES, plain, signed
from dashboard.sidebar import Context, context


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
    cols = ["run_id", "dataset", "backbone", "method", "variant", "kg", "kq", "beta", "n_iter"]
    for m in METRIC_NAMES:
        cols += [f"{m}_before", f"{m}_after"]
    cols += ["map_all_gain", "best_iteration", "seconds"]
    config = {f"{m}_{w}": st.column_config.NumberColumn(f"{METRIC_NAMES[m]} {w}", format="%.4f")
              for m in METRIC_NAMES for w in ("before", "after")}
    config["map_all_gain"] = st.column_config.NumberColumn("mAP@all gain", format="%+.4f")
    config["seconds"] = st.column_config.NumberColumn("time (s)", format="%.1f")
    st.dataframe(ctx.runs[cols], hide_index=True, column_config=config)
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


def _sweep_heatmap(ctx: Context) -> None:
    st.subheader("Gain over KG x KQ")
    sweeps = queries.sweeps(ctx.db)
    sweep_names = {int(r.sweep_id): f"sweep {r.sweep_id}: {r.dataset} · {r.backbone} · "
                   f"{r.n_runs} runs" for r in sweeps.itertuples() if r.n_runs}
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
    _iteration_chart(ctx)
    _sweep_heatmap(ctx)


page()
