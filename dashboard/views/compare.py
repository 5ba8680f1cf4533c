"""Compare: two rankings of the same queries, query by query, with paired tests."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, queries, state
from dashboard.format import p_value, plain, signed
from dashboard.sidebar import context, iteration_select

INITIAL = "initial"


def page() -> None:
    """Draw the page."""
    st.title("Compare")
    ctx = context()
    a_col, b_col = st.columns(2)
    with a_col:
        st.markdown(f"**A:** {plain(ctx.labels[ctx.run_id])}")
        it_a = iteration_select(st, ctx, ctx.run_id, label="Iteration of A")
    same = ctx.runs[(ctx.runs.dataset_id == ctx.run.dataset_id)]
    others = [int(r) for r in same.run_id if r != ctx.run_id]
    with b_col:
        run_b = state.select(st, "B", [INITIAL, *others], "run_b",
                             format_func=lambda v: "the initial ranking of A" if v == INITIAL
                             else ctx.labels[v])
        if run_b == INITIAL:
            b = (ctx.run_id, 0)
            name_b = "initial ranking"
        else:
            it_b = iteration_select(st, ctx, int(run_b), param="iteration_b",
                                    label="Iteration of B")
            b = (int(run_b), it_b)
            name_b = f"run #{run_b}, iteration {it_b}"
    name_a = f"run #{ctx.run_id}, iteration {it_a}"
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
