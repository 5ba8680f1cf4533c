"""The sweep's run: every configuration of a :class:`~jobs.sweep_plan.Plan` not yet stored, one transaction each.

Configurations of a method with a batch parameter (ICFRR's beta,
:attr:`icfrr.registry.Method.batch_param`) that differ only in it run together
through the engine (:func:`batch_groups`); an iterative method runs through
the ICFRR engine (:mod:`jobs.engine_runner`), a single-shot one through its
function (:mod:`jobs.method_runner`). The plan says how rankings are made:
by query chunks, or whole, iteration by iteration, for the published files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from icfrr.run_config import RunConfig
from jobs.executors import Group, Work
from jobs.progress import Progress
from jobs.sweep_plan import WHOLE_RANKINGS, Plan, artifact_info, config_label, dataset_row, recorded
from jobs.sweep_table import Row
from store import writes
from store.db import StoreError, writer

if TYPE_CHECKING:
    from jobs.engine_runner import RunOutcome


def warn(message: str) -> None:
    """One warning line on stderr (above any progress bar)."""
    tqdm.write(f"sweep: warning: {message}", file=sys.stderr)


def run_one(plan: Plan, cfg: RunConfig) -> RunOutcome:
    """Re-rank and evaluate one configuration, writing its published files as it goes.

    With :data:`~jobs.sweep_plan.WHOLE_RANKINGS` (the published files need
    every whole ranking) the iterations run one after the other over all
    queries; otherwise the queries stream through in chunks (memory bounded by
    one chunk).
    """
    from jobs import published_outputs as pub
    from jobs.method_runner import run_method
    from jobs.engine_runner import run_configs, run_whole

    whole = plan.rankings == WHOLE_RANKINGS
    out_dir = plan.out_dir(cfg)
    arts = plan.arts
    bar = Progress(cfg.n_iter + 1 if whole else len(arts.labels_q), "iterations" if whole else "queries",
                   "it" if whole else "q", mode=plan.progress, lines=False, leave=False)
    on_step = None
    if whole:
        published = _Published(out_dir, plan.args.query_idxs_to_vis, plan.args.num_gallery_ims_to_vis,
                               plan.images, arts.labels_q, arts.labels_g)
        on_step = lambda s, m: (bar.update(1), published(s, m))  # noqa: E731
    try:
        if not cfg.entry.iterative:
            outcome = run_method(plan.inputs, plan.labels_q, arts.labels_g, cfg,
                                 top_n=plan.args.top_n, on_step=on_step)
        elif whole:
            outcome = run_whole(arts.query_distances(), arts.graph, plan.labels_q, arts.labels_g, cfg,
                                device=plan.device, top_n=plan.args.top_n, on_step=on_step)
        else:
            outcome, = run_configs(arts.query_distances(), arts.graph, plan.labels_q, arts.labels_g, [cfg],
                                   device=plan.device, top_n=plan.args.top_n,
                                   on_progress=lambda done, total: bar.update_to(done))
    finally:
        bar.close()
    if whole:
        pub.save_metrics(out_dir, outcome.metrics)
    return outcome


def batch_groups(plan: Plan, todo: Sequence[int]) -> list[list[int]]:
    """The entries to run, grouped: configurations that differ only in their method's batch parameter
    (:attr:`Method.batch_param`, ICFRR's beta) run together.

    They share the initial ranking and the first update's votes (exact; see
    ``jobs.engine_runner.run_configs``). Entries that write the published
    per-iteration files, and methods without a batch parameter, run alone.
    Groups keep grid order by their first entry.
    """
    groups: dict[tuple, list[int]] = {}
    for i in todo:
        cfg = plan.entries[i]
        batch = cfg.entry.batch_param
        if batch and plan.rankings != WHOLE_RANKINGS:
            key: tuple = tuple((k, v) for k, v in cfg.key_params().items() if k != batch)
        else:
            key = ("alone", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def run_group(plan: Plan, configs: Sequence[RunConfig]) -> list[RunOutcome]:
    """Configurations that differ only in their batch parameter, streamed through the engine together."""
    from jobs.engine_runner import run_configs

    arts = plan.arts
    bar = Progress(len(plan.labels_q), "queries", "q", mode=plan.progress, lines=False, leave=False)
    try:
        return run_configs(arts.query_distances(), arts.graph, plan.labels_q, arts.labels_g, configs,
                           device=plan.device, top_n=plan.args.top_n,
                           on_progress=lambda done, total: bar.update_to(done))
    finally:
        bar.close()


def _groups(plan: Plan, todo: Sequence[int]) -> list[Group]:
    """:func:`batch_groups` for an executor: engine groups by query chunks can run as chunk tasks."""
    out = []
    for group in batch_groups(plan, todo):
        configs = tuple(plan.entries[i] for i in group)
        out.append(Group(tuple(group), configs, configs[0].entry.iterative and plan.rankings != WHOLE_RANKINGS))
    return out


def _work(plan: Plan) -> Work:
    """The inputs every engine group reads, for executors that ship them."""
    arts = plan.arts
    return Work(arts.query_distances(), arts.graph, np.asarray(plan.labels_q), np.asarray(arts.labels_g),
                plan.device, plan.args.top_n, plan.progress)


def run_sweep(plan: Plan, command: str) -> list[Row]:
    """Register the sweep, run every configuration not yet stored, one transaction each.

    Returns:
        One table row per grid entry, in grid order.
    """
    args, info = plan.args, artifact_info(plan.arts)
    keys = [cfg.config_key(info.key) for cfg in plan.entries]
    with writer(args.db) as con:
        dead = writes.mark_interrupted(con, lock_held=plan.lock is not None)
        dataset_id = writes.upsert_dataset(con, **dataset_row(plan.arts))
        artifact_id = writes.upsert_artifact(con, dataset_id, info)
        done = {} if args.force else writes.finished_runs(con, keys)
        kept_n = writes.stored_top_n(con, [run_id for run_id, _ in done.values()])
        sweep_id = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id,
                                      command=command)
    want = min(args.top_n, plan.arts.shape[1])     # a ranking keeps at most G items
    narrower = {key for key, (run_id, _) in done.items() if (kept_n.get(run_id) or 0) < want}
    if narrower:   # their stored rankings are shorter than asked: run again and replace, never skip
        tqdm.write(f"sweep: {len(narrower)} configuration(s) in {args.db} keep fewer than the top {want} "
                   f"per query (--top-n); running them again to store the top {want}", file=sys.stderr)
        done = {key: v for key, v in done.items() if key not in narrower}
    if dead:
        tqdm.write(f"sweep: marked {len(dead)} earlier sweep(s) whose process is gone 'interrupted' "
                   f"(ids {', '.join(map(str, dead))})", file=sys.stderr)
    rows: dict[int, Row] = {}
    todo = []
    for i, (cfg, key) in enumerate(zip(plan.entries, keys)):
        out_dir = plan.out_dir(cfg)
        files_missing = out_dir is not None and not (out_dir / "metrics.csv").is_file()
        if key in done and not files_missing:
            run_id, metrics = done[key]
            rows[i] = Row(cfg, metrics, writes.best_iteration(metrics), "skipped", run_id)
        else:
            todo.append(i)
    if rows:
        tqdm.write(f"sweep: skipping {len(rows)} configuration(s) already in {args.db} "
                   "(--force redoes them)", file=sys.stderr)
    status = "failed"
    bar = Progress(len(todo), "configurations", "cfg", mode=plan.progress if todo else "off")
    try:
        def run_here(group: Group) -> list[RunOutcome]:
            configs = list(group.configs)
            batch = configs[0].entry.batch_param
            bar.set_note(config_label(configs[0]) + (f" (+{len(configs) - 1} {batch}s)" if len(configs) > 1 else ""))
            return run_group(plan, configs) if len(configs) > 1 else [run_one(plan, configs[0])]

        for group, outcomes in plan.executor.run(_groups(plan, todo), lambda: _work(plan), run_here):
            for i, cfg, outcome in zip(group.entries, group.configs, outcomes):
                with writer(args.db) as con:
                    run_id = writes.write_run(
                        con, sweep_id=sweep_id, artifact_id=artifact_id, artifact_key=info.key,
                        config=recorded(plan.arts, cfg, outcome.notes), device=plan.device, seconds=outcome.seconds,
                        metrics=outcome.metrics, kept=outcome.kept,
                        per_query=outcome.per_query, force=args.force or keys[i] in narrower)
                    writes.heartbeat(con, sweep_id)
                # None: already stored by an earlier sweep, only the published files were missing
                state = "new" if run_id is not None else "files only"
                rows[i] = Row(plan.entries[i], outcome.metrics, outcome.best, state,
                              run_id if run_id is not None else done.get(keys[i], (None,))[0])
            bar.update(len(group.entries))  # once per group: its configurations finish together
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"      # stopped by the user, not failed: the same command resumes
        raise
    finally:
        bar.close()                 # before any message: a bar left open prints after it
        try:
            with writer(args.db) as con:
                writes.finish_sweep(con, sweep_id, status)
        except StoreError as exc:  # do not hide the error that got us here
            if status == "done":
                warn(f"could not mark sweep {sweep_id} {status}: {exc}")
    return [rows[i] for i in sorted(rows)]


@dataclass
class _Published:
    """Writes the published files of one configuration as its iterations arrive."""

    out_dir: Path
    query_idxs: list[int]
    n_gallery: int
    images: tuple | None          # (query paths, gallery paths) or None
    labels_q: object
    labels_g: object

    def __call__(self, step, _summary) -> None:
        from jobs import published_outputs as pub

        pub.save_ranking(self.out_dir, step.iteration, step.ranking)
        if self.query_idxs and self.images is not None:
            image = pub.strips_image(step.ranking[:, : self.n_gallery].numpy(), self.query_idxs,
                                     self.n_gallery, *self.images, self.labels_q, self.labels_g)
            pub.save_strips(self.out_dir, step.iteration, image)
