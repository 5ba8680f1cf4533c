"""Altair charts of the dashboard (pure: DataFrame in, chart out)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboard.format import AFTER, BEFORE, GAIN, HEAD, METRIC_NAMES
from icfrr.registry import METHODS, Method

_GAIN_SCALE = alt.Scale(scheme="redblue", domainMid=0)


def metric_lines(by_iter: pd.DataFrame, labels: dict[int, str]) -> alt.FacetChart:
    """Each metric against iteration, one line per run, one panel per metric.

    Args:
        by_iter: ``store.read.metrics_by_iteration`` output.
        labels: Run id -> legend label.
    """
    long = by_iter.melt(id_vars=["run_id", "iteration"], value_vars=list(METRIC_NAMES),
                        var_name="metric", value_name="value")
    long["metric"] = long["metric"].map(METRIC_NAMES)
    long["run"] = long["run_id"].map(labels)
    return (
        alt.Chart(long, height=170, width=230)
        .mark_line(point=True)
        .encode(
            x=alt.X("iteration:O", title="iteration"),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", legend=alt.Legend(orient="bottom", columns=1, labelLimit=600)),
            tooltip=["run:N", "metric:N", "iteration:O", alt.Tooltip("value:Q", format=".4f")],
        )
        .facet(facet=alt.Facet("metric:N", sort=list(METRIC_NAMES.values()), title=None),
               columns=3)
        .resolve_scale(y="independent")
    )


def gain_heatmap(grid: pd.DataFrame, value: str = GAIN) -> alt.LayerChart:
    """mAP@all gain over KG (rows) x KQ (columns), diverging around zero, values written in,
    the best cell framed in black."""
    reach = float(grid[value].abs().max()) or 1e-6
    scale = alt.Scale(scheme="redblue", domain=[-reach, reach])
    base = alt.Chart(grid).encode(
        x=alt.X("kq:O", title="KQ (voting neighbours of the query)",
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y("kg:O", title="KG (gallery neighbours)", sort="descending"),
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color(f"{value}:Q", title="gain", scale=scale),
        tooltip=["run_id:Q", "kg:O", "kq:O", "beta:Q",
                 alt.Tooltip(f"{BEFORE}:Q", format=".4f", title=f"{METRIC_NAMES[HEAD]} before"),
                 alt.Tooltip(f"{AFTER}:Q", format=".4f", title=f"{METRIC_NAMES[HEAD]} after"),
                 alt.Tooltip(f"{value}:Q", format="+.4f", title="gain"),
                 "best_iteration:O"],
    )
    text = base.mark_text(fontSize=12).encode(
        text=alt.Text(f"{value}:Q", format="+.3f"),
        color=alt.condition(f"abs(datum.{value}) > {0.6 * reach}", alt.value("white"),
                            alt.value("black")))
    best = alt.Chart(grid.nlargest(1, value)).mark_rect(
        fill=None, stroke="black", strokeWidth=3).encode(x="kq:O", y=alt.Y("kg:O", sort="descending"))
    return (cells + text + best).properties(height=110 + 56 * grid["kg"].nunique())


def class_dumbbell(cls: pd.DataFrame) -> alt.LayerChart:
    """Per-class mAP before (hollow) and after (filled), joined, sorted by gain.

    Args:
        cls: ``store.read.class_before_after`` output.
    """
    order = cls.sort_values("gain")["class_name"].tolist()
    long = cls.melt(id_vars=["class_name", "gain"], value_vars=["map_before", "map_after"],
                    var_name="when", value_name="mAP")
    long["when"] = long["when"].map({"map_before": "before", "map_after": "after"})
    y = alt.Y("class_name:N", sort=order, title=None)
    rule = alt.Chart(cls).mark_rule(strokeWidth=3).encode(
        y=y, x=alt.X("map_before:Q", title="mAP"), x2="map_after:Q",
        color=alt.condition("datum.gain >= 0", alt.value("#2e7d32"), alt.value("#c62828")),
    )
    dots = alt.Chart(long).mark_point(size=70, filled=True).encode(
        y=y, x="mAP:Q",
        shape=alt.Shape("when:N", sort=["before", "after"], title=None),
        color=alt.Color("when:N", sort=["before", "after"], title=None,
                        scale=alt.Scale(range=["#9e9e9e", "#1565c0"])),
        tooltip=["class_name:N", "when:N", alt.Tooltip("mAP:Q", format=".4f"),
                 alt.Tooltip("gain:Q", format="+.4f")],
    )
    return (rule + dots).properties(height=90 + 26 * len(cls))


def ap_scatter(pairs: pd.DataFrame, name_a: str, name_b: str) -> alt.LayerChart:
    """Per-query AP of A (y) against B (x), with the diagonal; colour = who wins."""
    d = pairs.assign(outcome=pd.cut(pairs.ap_a - pairs.ap_b, [-2, -1e-9, 1e-9, 2],
                                    labels=["B better", "tie", "A better"]).astype(str))
    diag = alt.Chart(pd.DataFrame({"x": [0.0, 1.0]})).mark_line(
        color="#888", strokeDash=[4, 4]).encode(x="x:Q", y="x:Q")
    pts = alt.Chart(d).mark_circle(size=28, opacity=0.6).encode(
        x=alt.X("ap_b:Q", title=f"AP, B: {name_b}", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("ap_a:Q", title=f"AP, A: {name_a}", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("outcome:N", scale=alt.Scale(
            domain=["A better", "tie", "B better"], range=["#1565c0", "#9e9e9e", "#ef6c00"])),
        tooltip=["query_idx:Q", "class_name:N", alt.Tooltip("ap_a:Q", format=".4f"),
                 alt.Tooltip("ap_b:Q", format=".4f")],
    )
    return (diag + pts).properties(height=380)


def diff_bars(by_class: pd.DataFrame) -> alt.Chart:
    """Mean AP difference per class (A - B), largest absolute first."""
    return alt.Chart(by_class).mark_bar().encode(
        x=alt.X("mean_diff:Q", title="mean AP difference (A - B)"),
        y=alt.Y("class_name:N", sort=by_class["class_name"].tolist(), title=None),
        color=alt.Color("mean_diff:Q", scale=_GAIN_SCALE, legend=None),
        tooltip=["class_name:N", "n_queries:Q", alt.Tooltip("mean_diff:Q", format="+.4f")],
    ).properties(height=80 + 26 * len(by_class))


def method_intervals(table: pd.DataFrame, title: str, subtitle: str = "") -> alt.LayerChart:
    """Each row's mAP@all (a dot) with its 95% interval (a bar), rows in table order.

    Args:
        table: One row per method: ``label``, the headline metric ``HEAD`` (``map_all``),
            ``<HEAD>_ci_lo`` and ``<HEAD>_ci_hi`` (NaN: no interval; the dot alone is drawn).
        title / subtitle: Chart title (says which protocol chose the rows) and its second line.
    """
    order = table["label"].tolist()
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelOverlap=False, labelLimit=160))
    tip = ["label:N", alt.Tooltip(f"{HEAD}:Q", format=".4f", title=METRIC_NAMES[HEAD]),
           alt.Tooltip(f"{HEAD}_ci_lo:Q", format=".4f", title="95% CI low"),
           alt.Tooltip(f"{HEAD}_ci_hi:Q", format=".4f", title="95% CI high")]
    bars = alt.Chart(table.dropna(subset=[f"{HEAD}_ci_lo", f"{HEAD}_ci_hi"])).mark_rule(
        strokeWidth=2, color="#1565c0").encode(
        y=y, x=alt.X(f"{HEAD}_ci_lo:Q", title=f"{METRIC_NAMES[HEAD]} (95% CI)",
                     scale=alt.Scale(zero=False)),
        x2=f"{HEAD}_ci_hi:Q", tooltip=tip)
    dots = alt.Chart(table).mark_point(filled=True, size=70, color="#0d47a1").encode(
        y=y, x=alt.X(f"{HEAD}:Q", scale=alt.Scale(zero=False)), tooltip=tip)
    return (bars + dots).properties(height=alt.Step(36),
                                    title=alt.TitleParams(title, subtitle=subtitle or alt.Undefined))


#: Panel titles of the sensitivity chart's parameters that differ from their registry symbol (``Param.label``).
PARAM_TITLES = {"n_iter": "T (iteration)"}


def sensitivity_params(entry: Method) -> tuple[dict[str, str], tuple[str, ...]]:
    """What the sensitivity chart of a method draws and holds, from its registry parameters.

    Returns:
        (numeric parameter name -> panel title, in registry order; the names of its text
        parameters, held at the chosen value).
    """
    drawn = {p.name: PARAM_TITLES.get(p.name, p.label) for p in entry.params if p.kind is not str}
    return drawn, tuple(p.name for p in entry.params if p.kind is str)


#: The iterative method's (ICFRR's) charted and held parameters: the defaults of ``sensitivity_slices``.
SENSITIVITY_PARAMS, _SENSITIVITY_HELD = sensitivity_params(next(m for m in METHODS if m.iterative))


def _same(a: object, b: object) -> bool:
    if a is None or b is None or (isinstance(a, float) and a != a) or (isinstance(b, float) and b != b):
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))


def sensitivity_slices(grid: pd.DataFrame, run_id: int, iteration: int,
                       params: dict[str, str] = SENSITIVITY_PARAMS,
                       held: tuple[str, ...] = _SENSITIVITY_HELD) -> pd.DataFrame:
    """One-parameter slices of a method's grid through its chosen configuration.

    For each parameter of ``params``, the candidates whose other parameters (and
    ``held``) equal the chosen candidate's; a value stored by several runs keeps
    the lowest run id's (the protocols' tie rule).

    Args:
        grid: ``store.protocol_report.grid_scores`` output.
        run_id / iteration: The chosen candidate (a row of ``grid``).
        params / held: Parameter name -> panel title, and the names held fixed
            (:func:`sensitivity_params`; default ICFRR's).

    Returns:
        Columns ``parameter`` (display name), ``value``, the headline ``HEAD``, ``run_id``,
        ``iteration`` and ``chosen`` (the chosen candidate's own point); empty
        when ``grid`` lacks the chosen candidate.
    """
    cols = ["parameter", "value", HEAD, "run_id", "iteration", "chosen"]
    me = grid[(grid.run_id == run_id) & (grid.iteration == iteration)]
    if me.empty:
        return pd.DataFrame(columns=cols)
    me = me.iloc[0]
    out = []
    for name, shown in params.items():
        if name not in grid.columns:
            continue
        others = [c for c in (*params, *held) if c != name and c in grid.columns]
        same = grid[[all(_same(getattr(r, c), me[c]) for c in others)
                     for r in grid.itertuples()]]
        same = same.dropna(subset=[name]).sort_values(["run_id", "iteration"])
        same = same.loc[~same[name].astype(float).duplicated()]
        for r in same.itertuples():
            out.append({"parameter": shown, "value": float(getattr(r, name)),
                        HEAD: getattr(r, HEAD), "run_id": int(r.run_id),
                        "iteration": int(r.iteration),
                        "chosen": int(r.run_id) == run_id and int(r.iteration) == iteration})
    return pd.DataFrame(out, columns=cols)


def sensitivity(slices: pd.DataFrame, title: str) -> alt.FacetChart:
    """mAP@all against each parameter, the others held at the chosen values: one panel per
    parameter, the chosen configuration's point ringed.

    Args:
        slices: ``sensitivity_slices`` output.
        title: Chart title (says which protocol chose, and on which queries it is scored).
    """
    base = alt.Chart(slices, height=170, width=140)
    tip = ["parameter:N", alt.Tooltip("value:Q", title="value"),
           alt.Tooltip(f"{HEAD}:Q", format=".4f", title=METRIC_NAMES[HEAD]),
           "run_id:Q", "iteration:Q", "chosen:N"]
    line = base.mark_line(point=True).encode(
        x=alt.X("value:Q", title=None, scale=alt.Scale(zero=False),
                axis=alt.Axis(format="~g", tickMinStep=0.05)),
        y=alt.Y(f"{HEAD}:Q", title=METRIC_NAMES[HEAD], scale=alt.Scale(zero=False)),
        tooltip=tip)
    ring = base.transform_filter("datum.chosen").mark_point(
        size=160, color="black", strokeWidth=2).encode(x="value:Q", y=f"{HEAD}:Q", tooltip=tip)
    return (line + ring).facet(
        facet=alt.Facet("parameter:N", sort=list(dict.fromkeys(slices.parameter)), title=None),
        columns=4).resolve_scale(x="independent").properties(title=title)
#: The confusion heatmap's toggle: shown value -> (column, title, number format).
CONFUSION_VALUES = {
    "before": ("share_before", "share before", ".3f"),
    "after": ("share_after", "share after", ".3f"),
    "change": ("change", "change", "+.3f"),
}


def confusion_heatmap(conf: pd.DataFrame, shown: str, k: int) -> alt.Chart:
    """Query class (rows) x intruding class (columns): the share of the query class's top-k
    slots each other class holds, before, after, or the change (diverging around zero).

    Args:
        conf: ``dashboard.queries.confusions`` output.
        shown: A key of ``CONFUSION_VALUES``.
        k: The cut-off (for the titles).
    """
    col, title, fmt = CONFUSION_VALUES[shown]
    if shown == "change":
        reach = float(conf[col].abs().max()) or 1e-6
        scale = alt.Scale(scheme="redblue", domain=[reach, -reach])  # red: more intruders after
    else:
        scale = alt.Scale(scheme="orangered", domain=[0, float(conf[col].max()) or 1e-6])
    order_q = sorted(conf.query_class.unique())
    order_o = sorted(conf.other_class.unique())
    return alt.Chart(conf).mark_rect(stroke="white").encode(
        x=alt.X("other_class:N", sort=order_o, title=f"intruding class (holds top-{k} slots)",
                axis=alt.Axis(labelAngle=-60, labelLimit=160, labelOverlap=False)),
        y=alt.Y("query_class:N", sort=order_q, title="query class", axis=alt.Axis(labelLimit=160)),
        color=alt.Color(f"{col}:Q", title=title, scale=scale),
        tooltip=[alt.Tooltip("query_class:N", title="query class"),
                 alt.Tooltip("other_class:N", title="intruding class"), "n_queries:Q",
                 alt.Tooltip("share_before:Q", format=".3f", title="share before"),
                 alt.Tooltip("share_after:Q", format=".3f", title="share after"),
                 alt.Tooltip("change:Q", format="+.3f", title="change")],
    ).properties(height=alt.Step(24), width=alt.Step(30))   # fixed cells: labels never crowd


def signature_scatter(points: pd.DataFrame, bins: pd.DataFrame, cutoff: int) -> alt.LayerChart:
    """Each query's initial top-m precision (x) against its AP change (y), coloured by class,
    with the mean change of each precision bin as a line and the zero line.

    Args:
        points: query_idx, class_name, precision, change (``queries.failure_signature``).
        bins: mid, mean_change, n (non-empty bins only).
        cutoff: m, for the axis title.
    """
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#888", strokeDash=[4, 4]).encode(y="y:Q")
    pts = alt.Chart(points).mark_circle(size=36, opacity=0.65).encode(
        x=alt.X("precision:Q", title=f"initial top-{cutoff} precision", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("change:Q", title="AP change"),
        color=alt.Color("class_name:N", title="class", legend=alt.Legend(columns=2, labelLimit=160)),
        tooltip=["query_idx:Q", "class_name:N", alt.Tooltip("precision:Q", format=".3f"),
                 alt.Tooltip("change:Q", format="+.4f")],
    )
    line = alt.Chart(bins).mark_line(color="black", strokeWidth=2, point=alt.OverlayMarkDef(color="black")).encode(
        x="mid:Q", y="mean_change:Q",
        tooltip=[alt.Tooltip("mid:Q", format=".2f", title="bin centre"),
                 alt.Tooltip("mean_change:Q", format="+.4f", title="mean AP change"), "n:Q"],
    )
    return (zero + pts + line).properties(height=360)
