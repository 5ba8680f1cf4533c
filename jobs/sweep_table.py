"""The table the sweep prints: one row per configuration, each metric before -> after re-ranking."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from icfrr.registry import HEADLINE, METRICS
from icfrr.run_config import RunConfig

#: The table's metric columns: (run_metrics key, header), from the registry.
TABLE_METRICS = tuple((m.key, m.label) for m in METRICS)
#: The configuration columns: (parameter, header, alignment, number format). A
#: configuration whose method has all of them (ICFRR) is shown in these columns;
#: any other as its method key and ``name=value`` pairs.
CONFIG_COLUMNS = (("variant", "variant", "<9", ""), ("kg", "KG", ">5", ""), ("kq", "KQ", ">5", ""),
                  ("beta", "beta", ">6", "g"), ("n_iter", "T", ">3", ""))


@dataclass
class Row:
    """One line of the final table.

    Attributes:
        config: The configuration.
        metrics: ``icfrr.summarize`` output of every iteration, in order.
        best: The iteration with the highest headline metric.
        status: ``'new'``, ``'skipped'`` or ``'files only'``.
        run_id: Its ``runs`` row (None when none was written).
    """

    config: RunConfig
    metrics: list[dict[str, float]]
    best: int
    status: str
    run_id: int | None = None


def in_columns(cfg: RunConfig) -> bool:
    """Whether ``cfg`` is shown in :data:`CONFIG_COLUMNS` (its method has every one of them)."""
    return all(name in cfg.params for name, *_ in CONFIG_COLUMNS)


def config_cell(cfg: RunConfig) -> str:
    """The table's configuration cell: the configuration columns, or the method and its parameters."""
    if in_columns(cfg):
        return " ".join(f"{cfg.params[name]:{align}{spec}}" for name, _, align, spec in CONFIG_COLUMNS)
    return " ".join([cfg.method, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in cfg.params.items())])


def format_table(rows: Sequence[Row]) -> str:
    """The compact table: each metric before -> after the last iteration, best row starred."""
    def fmt(v: float) -> str:
        return "  n/a " if v is None or math.isnan(v) else f"{v:.4f}"

    width = 16  # "0.1234 -> 0.5678"
    configs = [config_cell(r.config) for r in rows]
    head = " ".join(f"{header:{align}}" for _, header, align, _ in CONFIG_COLUMNS)
    cw = max([len(head), *map(len, configs)])
    header = (f"  {head:<{cw}}  "
              + "  ".join(f"{h:^{width}}" for _, h in TABLE_METRICS) + f"  {'best it':>7}  run")
    finals = [r.metrics[-1][HEADLINE.key] for r in rows]
    ranked = [i for i, v in enumerate(finals) if not math.isnan(v)]
    star = max(ranked, key=lambda i: finals[i]) if ranked else None
    lines = [header]
    for i, (r, config) in enumerate(zip(rows, configs)):
        cells = "  ".join(f"{fmt(r.metrics[0][k])} -> {fmt(r.metrics[-1][k])}"
                          for k, _ in TABLE_METRICS)
        lines.append(f"{'*' if i == star else ' '} {config:<{cw}}  {cells}  {r.best:>7}  "
                     f"{r.run_id if r.run_id is not None else '-'} ({r.status})")
    lines.append("each metric: before re-ranking -> after the last iteration; best it: the "
                 "iteration with the highest mAP@all")
    if not all(in_columns(r.config) for r in rows):
        lines.append("other methods: the method and its parameters; one re-ranking, so the last "
                     "iteration is 1")
    if star is not None:
        lines.append("* best configuration (highest mAP@all after the last iteration)")
    return "\n".join(lines)
