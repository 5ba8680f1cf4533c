"""Per class: per-class mAP before and after for the selected run."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, queries
from dashboard.format import NO_METRICS, has_metrics, plain, signed
from dashboard.sidebar import context, iteration_select


def page() -> None:
    """Draw the page."""
    st.title("Per class")
    ctx = context()
    st.caption(plain(ctx.labels[ctx.run_id]))
    if not has_metrics(ctx.run):
        st.info(NO_METRICS.format(run=ctx.run_id))
        return
    iteration = iteration_select(st, ctx, ctx.run_id)
    cls = queries.class_before_after(ctx.db, ctx.run_id, iteration)
    if cls.empty:
        st.info("This run stored no per-query metrics with known labels.")
        return
    gain, loss = cls[cls.gain > 1e-12], cls[cls.gain < -1e-12]
    c = st.columns(4)
    c[0].metric("Classes", len(cls))
    c[1].metric("Classes that gain", len(gain))
    c[2].metric("Classes that lose", len(loss))
    c[3].metric("Mean class gain", signed(cls.gain.mean()))
    if len(gain):
        top = gain.iloc[-1]
        st.markdown(f"Largest gain: **{plain(top.class_name)}** {signed(top.gain)} "
                    f"({top.map_before:.4f} → {top.map_after:.4f}).")
    if len(loss):
        low = loss.iloc[0]
        st.markdown(f"Largest loss: **{plain(low.class_name)}** {signed(low.gain)} "
                    f"({low.map_before:.4f} → {low.map_after:.4f}).")
    st.altair_chart(charts.class_dumbbell(cls))
    worst = cls.iloc[0]
    st.page_link("views/failures.py", label=f"Failure cases of {plain(worst.class_name)}, the class "
                 f"that fares worst ({signed(worst.gain)})", icon=":material/report:",
                 query_params={"db": ctx.db.key, "run": str(ctx.run_id),
                               "iteration": str(iteration), "class": str(int(worst.label))})
    st.dataframe(
        cls.sort_values("gain", ascending=False), hide_index=True,
        column_config={
            "label": "label", "class_name": "class", "n_queries": "queries",
            "map_before": st.column_config.NumberColumn("mAP before", format="%.4f"),
            "map_after": st.column_config.NumberColumn(f"mAP after (it. {iteration})",
                                                       format="%.4f"),
            "gain": st.column_config.NumberColumn("gain", format="%+.4f"),
        },
    )


page()
