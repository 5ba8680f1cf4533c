"""Compare: two rankings of the same queries, query by query, with paired tests.

Side A is the sidebar's run (choosing another here changes the sidebar too),
side B any run of the same dataset, of any method; each at any stored
iteration, 0 being the initial ranking. By default B is A's own initial
ranking ("does re-ranking help").
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, queries, state
from dashboard.format import NO_METRICS, has_metrics, method_and_params, p_value, plain, signed
from dashboard.sidebar import Context, context, iteration_select, run_choices

_A_KEY = "_w_compare_run_a"


def _run_name(ctx: Context, run_id: int, iteration: int) -> str:
    """``#5 ICFRR (KG 4, KQ 3, β 1, T 4), iteration 4``; iteration 0 is the initial ranking."""
    label, params = method_and_params(ctx.runs.loc[run_id])
    name = f"#{run_id} {label}" + (f" ({params})" if params else "")
    return f"{name}, " + ("initial ranking" if iteration == 0 else f"iteration {iteration}")


def _follow_a() -> None:
    """A's run is the sidebar's run: a choice here becomes the sidebar's selection."""
    state.put("run", st.session_state[_A_KEY])
    st.session_state.pop(state.widget_key("run"), None)


def _pick_b(ctx: Context, runs: list[int]) -> int:
    """B's run (default: A's own run); a new B run starts at its last iteration."""
    before = state.get("run_b")
    run_b = state.select(st, "Run B", runs, "run_b", default=ctx.run_id,
                         format_func=ctx.labels.get,
                         help="Any run of the same dataset, of any method.")
    if before is not None and not state.matches(run_b, before):
        state.put("iteration_b", None)
        st.session_state.pop(state.widget_key("iteration_b"), None)
    return int(run_b)


def page() -> None:
    """Draw the page."""
    st.title("Compare")
    ctx = context()
    if not has_metrics(ctx.run):
        st.caption(plain(ctx.labels[ctx.run_id]))
        st.info(NO_METRICS.format(run=ctx.run_id))
        return
    same = run_choices(ctx.runs, ctx.runs.run_id[ctx.runs.dataset_id == ctx.run.dataset_id],
                       ctx.run_id, ctx.run_id, *filter(None, [state.get_int("run_b")]))
    st.caption(plain(f"Two rankings of the same queries of {ctx.run.dataset}: any two runs "
                     "(of any methods) at any stored iteration; iteration 0 is the initial "
                     "ranking."))
    a_col, b_col = st.columns(2)
    with a_col:
        st.session_state[_A_KEY] = ctx.run_id
        st.selectbox("Run A", same, key=_A_KEY, format_func=ctx.labels.get, on_change=_follow_a,
                     help="The run chosen in the sidebar.")
        it_a = iteration_select(st, ctx, ctx.run_id, label="Iteration of A", initial=True)
    with b_col:
        run_b = _pick_b(ctx, same)
        it_b = iteration_select(st, ctx, run_b, param="iteration_b", label="Iteration of B",
                                initial=True, default=0 if run_b == ctx.run_id else None)
    b = (run_b, it_b)
    name_a, name_b = _run_name(ctx, ctx.run_id, it_a), _run_name(ctx, run_b, it_b)
    st.markdown(f"**A:** {plain(name_a)}  \n**B:** {plain(name_b)}")
    pairs, res = queries.compare(ctx.db, (ctx.run_id, it_a), b)
    if res.n == 0:
        st.info("No queries with known labels in common.")
        return

    m = st.columns(4)
    m[0].metric("Queries", res.n)
    m[1].metric("Mean AP of A", f"{res.mean_a:.4f}")
    m[2].metric("Mean AP of B", f"{res.mean_b:.4f}")
    m[3].metric("Mean difference (A - B)", signed(res.mean_diff))
    w = st.columns(3)
    w[0].metric("A better (wins)", res.wins)
    w[1].metric("Ties", res.ties)
    w[2].metric("B better (losses)", res.losses)

    fisher = ("exact, all sign patterns" if res.fisher_exact
              else "Monte Carlo, 9,999 random sign flips, seed 0")
    tests = pd.DataFrame([
        {"test": "paired t-test", "p-value": p_value(res.p_ttest),
         "note": f"t = {res.t_statistic:.3f}" if pd.notna(res.t_statistic) else "undefined"},
        {"test": "Fisher randomisation", "p-value": p_value(res.p_fisher), "note": fisher},
        {"test": "Wilcoxon signed-rank", "p-value": p_value(res.p_wilcoxon),
         "note": "zero differences dropped"},
    ])
    st.markdown("**Paired significance tests** (two-sided, H0: no difference in mean AP)")
    st.dataframe(tests, hide_index=True)

    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Per-query AP**")
        st.altair_chart(charts.ap_scatter(pairs, name_a, name_b))
    with right:
        st.markdown("**Classes where A and B differ most**")
        by_class = (pairs.assign(diff=pairs.ap_a - pairs.ap_b)
                    .groupby("class_name", as_index=False)
                    .agg(n_queries=("diff", "size"), mean_diff=("diff", "mean")))
        by_class = by_class.reindex(by_class.mean_diff.abs().sort_values(ascending=False).index)
        top = by_class.head(10)
        st.altair_chart(charts.diff_bars(top))
        st.dataframe(top, hide_index=True, column_config={
            "class_name": "class", "n_queries": "queries",
            "mean_diff": st.column_config.NumberColumn("mean AP diff", format="%+.4f")})


page()
