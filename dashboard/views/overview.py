"""Overview: the shown run (and which protocol picked it), sweeps and runs, the methods
table under a selection protocol (test / holdout / cv, with 95% intervals, downloads and
ICFRR's sensitivity), metrics against iteration, the KG x KQ gain heatmap (ICFRR runs only)."""

from __future__ import annotations

import re
import shlex

import pandas as pd
import streamlit as st

from dashboard import charts, queries, state
from dashboard.format import (AFTER, BEFORE, BEST, GAIN, HEAD, METRIC_NAMES, NO_LABELS, NO_METRICS,
                              graph_text, has_metrics, method_and_params, method_label, plain,
                              signed)
from dashboard.sidebar import Context, best_run, context, run_choices
from icfrr.protocol_comparison import ProtocolComparison, intervals_text, selection_text, to_records
from icfrr.protocols import DEFAULT_PROTOCOL, OPTION_FLAGS, PROTOCOL_ENTRIES, TEST_LABEL, protocol as entry
from icfrr.registry import METHOD_KEYS
from icfrr.stats import PAIRED_TESTS
from store import report
from store.read import GRID_AXES, has_params, iterative, registered

#: Baseline choice meaning "each row against its own run's initial ranking".
INITIAL = "initial"
#: Dataset choice of the runs table meaning "every dataset".
ALL = "all"
#: Rows of the runs table per page (a store may hold a great many runs).
PAGE_ROWS = 500
_SLICE_OF = "_heatmap_slice_of"


def _picked_by(ctx: Context) -> str:
    """Which protocol picked the shown run, in one sentence."""
    if not ctx.runs[GAIN].notna().any():
        return "No run has metrics (no labels): the newest run is shown; no protocol chose it."
    if ctx.run_id == best_run(ctx.runs):
        return (f"Picked by the test protocol, {TEST_LABEL}: the largest "
                f"{METRIC_NAMES[HEAD]} gain at the last iteration among all {len(ctx.runs)} "
                "runs, measured on the queries it is reported on. The Methods table below "
                "chooses under holdout or cv.")
    return "Picked in the sidebar: no selection protocol chose this run."


def _headline(ctx: Context) -> None:
    run = ctx.run
    st.subheader(plain(ctx.labels[ctx.run_id]))
    st.caption(plain(_picked_by(ctx)))
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
    graphs = [graph_text(r) for r in runs.itertuples()]
    table = runs.assign(method=[m for m, _ in named], parameters=[p for _, p in named],
                        labels=["" if has_metrics(r) else NO_LABELS for r in runs.itertuples()],
                        graph=graphs)
    # the gallery graph only when some run's was approximate: its numbers say so
    cols = ["run_id", "dataset", "backbone", "method", "parameters",
            *(["graph"] if any(graphs) else []), "labels", "n_iter"]
    for m in METRIC_NAMES:
        cols += [f"{m}_before", f"{m}_after"]
    cols += [GAIN, "best_iteration", "seconds"]
    # numbers formatted by the Styler, so that a run without metrics shows "n/a", never "None"
    config: dict[str, object] = {f"{m}_{w}": f"{METRIC_NAMES[m]} {w}"
                                 for m in METRIC_NAMES for w in ("before", "after")}
    fmt = dict.fromkeys(config, "{:.4f}") | {GAIN: "{:+.4f}", "seconds": "{:.1f}",
                                              "best_iteration": "{:.0f}"}
    config["n_iter"] = st.column_config.NumberColumn("iterations")
    config["labels"] = st.column_config.TextColumn(
        "labels", help=f"'{NO_LABELS}': the dataset has no labels, the run has no metrics")
    config["graph"] = st.column_config.TextColumn(
        "graph", help="an approximate gallery graph and its recall of the exact KG neighbours, or the "
                      "approximate k-NN index of k-reciprocal/ECN and its recall@k (jobs.sweep --graph); "
                      "empty: exact")
    config[GAIN] = f"{METRIC_NAMES[HEAD]} gain"
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
    best = int(same.loc[same[GAIN].idxmax(), "run_id"]) if same[GAIN].notna().any() \
        else ctx.run_id
    measured = run_choices(ctx.runs, ctx.runs.run_id[ctx.runs[BEFORE].notna()],
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


#: Command-line flags in the store's one-line reasons, as the widgets here name them.
_FLAG_NAMES = (("--tune-fraction", "Tune fraction"), ("--folds", "Folds"),
               ("(use --protocol test)", "(choose the test protocol)"),
               ("--protocol test", "the test protocol"))


def _reason(message: str) -> str:
    """A store's one-line reason, its flags named as the Methods widgets name them."""
    for flag, name in _FLAG_NAMES:
        message = message.replace(flag, name)
    return message


def _ci_text(lo: float, hi: float, sign: bool = False) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return "n/a"
    return f"[{signed(lo) if sign else f'{lo:.4f}'}, {signed(hi) if sign else f'{hi:.4f}'}]"


def protocol_names() -> dict[str, str]:
    """Protocol key -> how the selector offers it, ``"<key>: <label>"`` (``test`` with its warning)."""
    return {p.key: f"{p.key}: {p.label}" for p in PROTOCOL_ENTRIES}


def _protocol_inputs() -> tuple[str, float, int, int]:
    """The protocol selector and its split's inputs: (protocol, tune fraction, folds, seed)."""
    cols = st.columns([3, 1, 1, 1])
    names = protocol_names()
    protocol = state.select(cols[0], "Selection protocol", list(names), "protocol",
                            default=DEFAULT_PROTOCOL, format_func=names.get,
                            help="How each method's configuration and iteration are chosen "
                                 f"(by {METRIC_NAMES[HEAD]} over iterations 1..T), and on "
                                 "which queries the table reports.")
    tune = state.number(cols[1], "Tune fraction", "tune_fraction", default=0.5, min_value=0.01,
                        max_value=0.99, step=0.05, format="%.2f",
                        disabled="tune_fraction" not in entry(protocol).options,
                        help="holdout: share of the query classes that tune")
    folds = state.number(cols[2], "Folds", "folds", default=5, min_value=2, step=1,
                         disabled="folds" not in entry(protocol).options,
                         help="cv: folds of query classes")
    seed = state.number(cols[3], "Seed", "seed", default=0, min_value=0, step=1,
                        help="seed of the class split and of the bootstrap intervals")
    return protocol, tune, folds, seed


def _methods(ctx: Context) -> None:
    """The methods table under a selection protocol (``store.protocol_report``) of the selected
    run's dataset and distances, with intervals, downloads and ICFRR's sensitivity."""
    st.subheader("Methods")
    run = ctx.run
    if not has_metrics(run):
        st.info(NO_METRICS.format(run=ctx.run_id))
        return
    here = ctx.runs[(ctx.runs.dataset_id == run.dataset_id)
                    & (ctx.runs.artifact_id == run.artifact_id)]
    present = sorted(set(here.method), key=lambda k: (METHOD_KEYS.index(k), k)
                     if k in METHOD_KEYS else (len(METHOD_KEYS), k))
    protocol, tune, folds, seed = _protocol_inputs()
    cols = st.columns(2)
    baseline = state.select(cols[0], "Baseline", [INITIAL, *present], "baseline",
                            format_func=lambda k: "the initial ranking" if k == INITIAL
                            else f"{method_label(k)} (same protocol)")
    test = state.select(cols[1], "Paired test", list(PAIRED_TESTS), "test",
                        format_func=PAIRED_TESTS.get)
    try:
        pc = queries.protocol_comparison(ctx.db, int(run.dataset_id), int(run.artifact_id),
                                         protocol, None if baseline == INITIAL else baseline,
                                         test, tune, folds, seed)
    except report.ReportError as exc:
        st.info(plain(f"Protocol {protocol}: {_reason(str(exc))}"))
        return
    # a split without held-out classes (test, cv) names its selection itself; holdout's is said here
    how = f"{selection_text(pc).capitalize()}. " if pc.tuning_classes else ""
    st.caption(plain(f"{run.dataset} (backbone {run.backbone}) · protocol {pc.split}. "
                     f"{how}Every value is over the {pc.n_queries} reported queries of "
                     f"{len(pc.reported_classes)} classes."))
    if pc.stored_note:
        st.caption(plain(f"Note: {pc.stored_note}."))
    table = pd.DataFrame(to_records(pc))
    table[f"{HEAD}_shown"] = [("n/a" if pd.isna(v) else f"{v:.4f}") + mark
                             for v, mark in zip(table[HEAD], table.mark)]
    table["ci_shown"] = [_ci_text(lo, hi) for lo, hi in zip(table[f"{HEAD}_ci_lo"],
                                                           table[f"{HEAD}_ci_hi"])]
    for col in ("optimism", "test_tuned"):   # text, so the initial ranking's shows "-"
        table[f"{col}_shown"] = ["-" if pd.isna(v) else (signed(v) if col == "optimism"
                                                          else f"{v:.4f}") for v in table[col]]
    table["delta_ci_shown"] = [_ci_text(lo, hi, sign=True) for lo, hi in
                               zip(table.delta_ci_lo, table.delta_ci_hi)]
    others = [m for m in pc.metrics if m != HEAD]
    # the headline metric, its interval and (unless tuned on the reported queries) its optimism
    # first, then the choice: the columns in view beside the interval chart
    kind = entry(protocol)
    optimistic = [] if kind.tunes_on_reported else ["optimism_shown"]
    shown = ["label", f"{HEAD}_shown", "ci_shown", *optimistic, "run_id", "iteration", "params",
             *(["test_tuned_shown"] if optimistic else []), *others,
             *(f"{m}_delta" for m in pc.metrics), "ap_diff", "delta_ci_shown", "p_value",
             "p_holm", *(["chosen"] if kind.several_choices else [])]
    config: dict[str, object] = {
        "label": "method", "params": "parameters",
        "run_id": st.column_config.NumberColumn(
            "run", width="small", help="cv: the run chosen by the most folds" if kind.several_choices
            else "the chosen run"),
        "iteration": st.column_config.NumberColumn("it", width="small",
                                                   help="the chosen iteration (T)"),
        f"{HEAD}_shown": st.column_config.TextColumn(METRIC_NAMES[HEAD]),
        "ci_shown": st.column_config.TextColumn("95% CI", help=f"of {METRIC_NAMES[HEAD]}"),
        "ap_diff": st.column_config.NumberColumn("vs baseline", format="%+.4f"),
        "delta_ci_shown": st.column_config.TextColumn("vs baseline 95% CI"),
        "p_value": st.column_config.NumberColumn("p", format="%.4f"),
        "p_holm": st.column_config.NumberColumn("p (Holm)", format="%.4f"),
        "test_tuned_shown": st.column_config.TextColumn(
            "test-tuned",
            help=f"{METRIC_NAMES[HEAD]} on the reported queries of the choice made on them"),
        "optimism_shown": st.column_config.TextColumn(
            "optimism", help="test-tuned minus this protocol's score"),
        "chosen": st.column_config.TextColumn("chosen per fold"),
    }
    for m in others:
        config[m] = st.column_config.NumberColumn(METRIC_NAMES[m], format="%.4f")
    for m in pc.metrics:
        config[f"{m}_delta"] = st.column_config.NumberColumn(f"Δ {METRIC_NAMES[m]}",
                                                             format="%+.4f")
    left, right = st.columns([5, 2])
    left.dataframe(table, hide_index=True, column_order=shown, column_config=config,
                   key="methods_table")
    right.altair_chart(charts.method_intervals(
        table[["label", HEAD, f"{HEAD}_ci_lo", f"{HEAD}_ci_hi"]],
        f"{METRIC_NAMES[HEAD]}, protocol {protocol}",
        TEST_LABEL if kind.tunes_on_reported else f"{pc.n_queries} reported queries"))
    few = (" n/a: fewer than 2 reported classes to resample." if pc.ci == "class"
           and len(pc.reported_classes) < 2 else "")
    st.caption(plain(f"{intervals_text(pc)}.{few} {pc.note()}. Δ: change from the initial "
                     "ranking on the same queries."))
    stem = (f"methods-{_file_stem(pc.dataset)}-{_file_stem(pc.backbone)}-{protocol}"
            f"-seed{seed}")
    # the CSV is python -m jobs.report --protocol ... --format csv's, byte for byte
    csv = pd.DataFrame(to_records(pc)).to_csv(index=False, lineterminator="\n")
    st.download_button("Download CSV", csv, file_name=f"{stem}.csv", mime="text/csv",
                       key="methods_csv")
    st.caption("LaTeX (booktabs) of this table:")
    st.code(latex_command(ctx.db.path, pc), language="bash")
    _sensitivity(ctx, pc)


def latex_command(db: object, pc: ProtocolComparison) -> str:
    """The ``python -m jobs.report`` command that writes ``pc`` as LaTeX (the formats live in jobs)."""
    flags = [f"--db {shlex.quote(str(db))}", f"--dataset {pc.dataset_id}", f"--backbone {pc.artifact_id}",
             f"--protocol {pc.protocol}", f"--seed {pc.seed}", f"--test {pc.test}"]
    flags += [OPTION_FLAGS[option].format(getattr(pc, option)) for option in entry(pc.protocol).options]
    if pc.baseline != "the initial ranking":
        flags.append(f"--baseline {next(r.method for r in pc.rows if r.role == 'baseline')}")
    return "python -m jobs.report " + " ".join(flags) + " --format latex"


def _sensitivity(ctx: Context, pc: ProtocolComparison) -> None:
    """ICFRR's mAP@all against each parameter, the others held at the protocol's choice."""
    st.subheader("ICFRR sensitivity")
    row = next((r for r in pc.rows if iterative(r.method)), None)
    if row is None:
        st.info("No ICFRR runs on these distances: no sensitivity chart.")
        return
    grid = queries.grid_scores(ctx.db, pc.dataset_id, pc.artifact_id, pc.reported_classes,
                               row.method)
    drawn, held = charts.sensitivity_params(registered(row.method))
    slices = charts.sensitivity_slices(grid, row.run_id, row.iteration, drawn, held)
    if slices.empty:
        st.info("ICFRR's chosen configuration holds no stored scores: no sensitivity chart.")
        return
    kind = entry(pc.protocol)
    chose = "the most often chosen" if kind.several_choices else "the chosen"
    st.caption(plain(
        f"{METRIC_NAMES[HEAD]} over the {pc.n_queries} reported queries against each "
        f"parameter, the others held at {chose} configuration ({row.params}, run #{row.run_id}; "
        f"ringed), protocol {pc.protocol}"
        + (f": {TEST_LABEL}" if kind.tunes_on_reported else "")
        + f". A panel with one point: the sweep did not vary that parameter around the choice."))
    st.altair_chart(charts.sensitivity(slices, f"ICFRR sensitivity, protocol {pc.protocol}"))


def _sweep_heatmap(ctx: Context) -> None:
    st.subheader("Gain over KG x KQ")
    sweeps = queries.sweeps(ctx.db)
    measured = ctx.runs[BEFORE].notna()   # runs without labels have no gain to draw
    on_grid = ctx.runs.method.map(lambda k: has_params(k, *GRID_AXES)).astype(bool)
    with_icfrr = set(ctx.runs.sweep_id[on_grid & measured])
    sweep_names = {int(r.sweep_id): f"sweep {r.sweep_id}: {r.dataset} · {r.backbone} · "
                   f"{r.n_runs} runs" for r in sweeps.itertuples()
                   if r.n_runs and r.sweep_id in with_icfrr}
    if not sweep_names:
        st.info("No sweep holds ICFRR runs with metrics: the KG x KQ heatmap is for ICFRR "
                "configurations of labelled data.")
        return
    own = has_params(ctx.run.method, *GRID_AXES) and int(ctx.run.sweep_id) in sweep_names
    cols = st.columns(4)
    sweep_id = state.select(cols[0], "Sweep", list(sweep_names), "sweep",
                            default=int(ctx.run.sweep_id), format_func=sweep_names.get)
    grid = queries.sweep_grid(ctx.db, sweep_id).dropna(subset=[GAIN, "best_gain"])
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
    value = GAIN if at == "last iteration" else "best_gain"

    best = grid.loc[grid[value].idxmax()]
    after = best[AFTER] if value == GAIN else best[BEST]
    it = best.n_iter if value == GAIN else best.best_iteration
    st.success(
        f"**Best configuration of this sweep ({plain(variant)}):** KG {best.kg} · KQ {best.kq} · "
        f"β {best.beta:g}: {METRIC_NAMES[HEAD]} {best[BEFORE]:.4f} → {after:.4f} "
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
