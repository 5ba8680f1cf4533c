"""``python -m jobs.sweep --dataset NAME [--method icfrr k_reciprocal ...]``: re-rank over grids into DuckDB.

Pipeline: check every input (flags, data, checkpoint, database) -> reuse or
make the Parquet artifacts (features, distances, one gallery neighbour graph
with K >= the largest KG, shared by every configuration) -> for each
configuration not already in the database: re-rank once over all
iterations, evaluate every iteration, commit the run in one transaction ->
print a table and the command that opens the dashboard.

``--method`` picks the re-ranking methods of :data:`icfrr.registry.METHODS`
(default icfrr); each has its own grid flags, made from the registry. A
method other than ICFRR re-ranks once: its run has iteration 0 (the initial
ranking) and 1 (its own), ``kg``/``kq``/``beta``/``variant`` NULL and its
parameters in ``runs.params``. Those that need query-query distances
(k-reciprocal, ECN) compute them from the features and keep them as
``qq_dists.parquet`` in the cache folder; an imported cache must bring them as
``qq_dists.pth``.

Distances come from the images (``--backbone``), the published cache under
``--cache_root``, matrices (``--qg --gg [--labels --qq]``) or features
(``--query-features --gallery-features [--labels] [--no-normalise]``); see
:mod:`jobs.artifacts`, which ``jobs.extract`` shares.

The published code's flags are accepted with the same meaning (``--KG --KQ
--n_times --per_class --data_root --cache_root --pretrained_root --batchsize
--gpu_id --no_cache --force_cache --limited_memory --cpu_as_metric_device
--rerank_results_dir --query_idxs_to_vis --num_gallery_ims_to_vis``).

Every input file is identified by content (sha256) once, when the sweep
starts, and every method of the sweep uses artifacts of exactly those files;
one that changes while the sweep runs stops it when it is next read (one line,
exit status 2; the runs committed before are kept).

The command is parse -> plan -> run -> print: :mod:`jobs.sweep_flags` (flags,
their checks, the grid), :mod:`jobs.sweep_plan` (inputs loaded, store locked,
how each configuration runs), :mod:`jobs.sweep_run` (the runs, one transaction
each) and :mod:`jobs.sweep_table` (the printed table).

Exit status: 0 done, 2 bad input (one line on stderr, nothing written to the
database) or an input file changed during the sweep, 130 stopped by Ctrl-C
(one line; the sweep is marked interrupted), 1 an unexpected failure while
running (finished runs stay committed; running the same command again
resumes).
"""

from __future__ import annotations

import shlex
import sys
import warnings
from collections.abc import Sequence

from tqdm import tqdm

from jobs.cli import UsageError
from jobs.sweep_flags import build_parser  # noqa: F401  (the command's parser)
from jobs.sweep_plan import Plan, graph_note, prepare, unanswerable  # noqa: F401  (unanswerable: its rule)
from jobs.sweep_run import run_sweep, warn
from jobs.sweep_table import format_table
from store.db import StoreError
from store.identity import InputChanged


def _fail(message: str) -> int:
    print(f"sweep: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns the exit status (0 ok, 2 bad input, 130 Ctrl-C)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    notes: list[str] = []
    command = "python -m jobs.sweep " + shlex.join(argv)
    with warnings.catch_warnings(record=True) as caught:   # held back: a refusal is one line only
        try:
            plan = prepare(argv, notes.append, command)
        except (UsageError, StoreError, ValueError, OSError) as exc:
            return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            return _interrupted("stopped before any run; nothing was written to the database")
    notes += [f"sweep: warning: {w.category.__name__}: {w.message}" for w in caught]
    try:
        return _run(plan, notes, command)
    except KeyboardInterrupt:
        return _interrupted(f"runs committed before are kept in {plan.args.db} and the sweep is marked "
                            "interrupted; run the same command again to resume")
    finally:
        plan.executor.close()
        if plan.lock is not None:
            plan.lock.release()


#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def _interrupted(what: str) -> int:
    print(f"sweep: interrupted (Ctrl-C): {what}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _run(plan: Plan, notes: list[str], command: str) -> int:
    """Print the held-back notes, run the sweep, print the table; returns the exit status."""
    for message in notes:  # held back so that bad input gets one line only
        tqdm.write(message, file=sys.stderr)
    for message in plan.warnings:
        warn(message)
    try:
        rows = run_sweep(plan, command)
    except StoreError as exc:  # the database stayed locked, or a write failed (disk full)
        return _fail(str(exc))
    except InputChanged as exc:  # an input file changed after the sweep identified it at its start
        return _fail(f"{exc.path} {exc.what} since the sweep started, so its runs would mix inputs; the runs "
                     f"committed before are kept in {plan.args.db}: run the same command again")
    except OSError as exc:     # a published file could not be written (disk full)
        return _fail(f"could not write {exc.filename or 'a file'} ({exc.strerror or exc}); runs committed "
                     f"before are kept in {plan.args.db}: free some space and run the same command again")
    print(format_table(rows))
    note = graph_note(plan.arts, [r.config for r in rows])
    if note is not None:
        print(note)
    print(f"\nResults in {plan.args.db}. Open the dashboard on them with:\n"
          f"  streamlit run dashboard/app.py -- --db {shlex.quote(str(plan.args.db))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
