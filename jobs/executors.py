"""Where a sweep's configuration groups run: in this process (``local``) or as Ray tasks (``ray``).

``python -m jobs.sweep --executor local|ray [--ray-address auto|HOST:PORT]``.
The sweep groups its configurations (ICFRR configurations that differ only in
beta run together, ``jobs.sweep_run.batch_groups``) and hands the groups to an
executor, which yields each group's outcomes as they are ready; the sweep
then commits that group's runs, one transaction each, in this process. So
whichever executor runs, this process is the store's only writer.

- :class:`LocalExecutor`: today's loop, one group after the other. It never
  imports Ray.
- ``jobs.ray_executor.RayExecutor``: each (group x query chunk) is a Ray task;
  imported only for ``--executor ray``.

:class:`ChunkAssembler` is the Ray executor's bookkeeping, kept here (no Ray
needed) so that it is tested on its own: results are keyed by (group, chunk),
a chunk that arrives twice counts once, and a group is released exactly once,
when its last chunk is in.
"""

from __future__ import annotations

import argparse
import importlib
import math
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from icfrr.chunks import rerank_chunk_size
from jobs.cli import UsageError
from icfrr.run_config import RunConfig

if TYPE_CHECKING:  # the engine loads only once the flags are parsed
    import torch

    from icfrr.neighbors import FeatureDistances, NeighborGraph
    from icfrr.reranking import ChunkResult
    from jobs.engine_runner import RunOutcome

EXECUTORS = ("local", "ray")
#: How users get Ray (named in the error when it is missing).
RAY_EXTRA = 'pip install -e ".[ray]"'
#: Seconds to wait for a --ray-address HOST:PORT to accept a connection.
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Group:
    """Configurations the sweep runs together and then commits, one run each.

    Attributes:
        entries: Their indices in the sweep's grid.
        configs: Their configurations (ICFRR ones differ only in beta).
        remote: True when the group can run as chunk tasks: ICFRR without the
            published per-iteration files (which need whole rankings).
    """

    entries: tuple[int, ...]
    configs: tuple[RunConfig, ...]
    remote: bool


@dataclass(frozen=True)
class Work:
    """What every ICFRR group of a sweep reads (shipped once to a cluster).

    Attributes:
        qg: float32 [Q, G] distances, or a function of a query chunk computing them.
        graph: The gallery neighbour graph (K >= the largest KG).
        labels_q: int64 [Q] query labels the metrics use (-1: left out).
        labels_g: int64 [G] gallery labels.
        device: The sweep's device (``cpu``, ``cuda`` or ``cuda:N``).
        top_n: Best items kept per query and iteration.
        progress: ``jobs.progress`` mode of the bars.
    """

    qg: torch.Tensor | np.ndarray | FeatureDistances
    graph: NeighborGraph
    labels_q: np.ndarray
    labels_g: np.ndarray
    device: str
    top_n: int
    progress: str

    @property
    def n_query(self) -> int:
        """Q."""
        return int(len(self.labels_q))


#: Runs one group in this process (the sweep's own path, with its bars and published files).
RunHere = Callable[[Group], "list[RunOutcome]"]


class Executor(Protocol):
    """Runs groups and yields each with its outcomes (one per configuration, in order)."""

    name: str

    def run(self, groups: Sequence[Group], work: Callable[[], Work],
            run_here: RunHere) -> Iterator[tuple[Group, list[RunOutcome]]]:
        """Yield ``(group, outcomes)`` for every group, each exactly once, in any order.

        Args:
            groups: What to run.
            work: Called at most once, by executors that ship the inputs.
            run_here: Runs a group in this process.
        """
        ...

    def close(self) -> None:
        """Let go of what the executor holds (idempotent)."""
        ...


class LocalExecutor:
    """One group after the other in this process: the sweep's default."""

    name = "local"

    def run(self, groups: Sequence[Group], work: Callable[[], Work],
            run_here: RunHere) -> Iterator[tuple[Group, list[RunOutcome]]]:
        """Yield every group in order, run by ``run_here`` (``work`` is not needed)."""
        for group in groups:
            yield group, run_here(group)

    def close(self) -> None:
        """Nothing to let go of."""


def add_executor_flags(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """``--executor`` and ``--ray-address``."""
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="where configurations run: local (this process, default) or ray "
                            "(one Ray task per configuration group and chunk of queries; needs "
                            f"{RAY_EXTRA}); the store is written by this process either way")
    group.add_argument("--ray-address", "--ray_address", dest="ray_address", metavar="ADDRESS",
                       help="with --executor ray: auto (the cluster this machine belongs to) or "
                            "HOST:PORT of a head node (default: start a local Ray with this "
                            "machine's CPUs)")


def check_executor_flags(args: argparse.Namespace) -> None:
    """Refuse executor flags that do not go together (no import, no connection).

    Raises:
        UsageError: One line saying what to change.
    """
    address = getattr(args, "ray_address", None)
    if address is None:
        return
    if args.executor != "ray":
        raise UsageError("--ray-address is for --executor ray: add --executor ray, or drop --ray-address "
                         "to run here")
    if address != "auto":
        split_address(address)


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port).

    Raises:
        UsageError: Anything else (with what is accepted).
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray-address {address!r} is not auto or HOST:PORT (the head node's GCS port, "
                         "6379 by default: what `ray start --head` printed)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float | None = None) -> None:
    """Refuse a ``HOST:PORT`` that does not accept a TCP connection within ``timeout_s``
    (default :data:`CONNECT_TIMEOUT_S`).

    Ray itself retries an unreachable head for minutes; this answers first.

    Raises:
        UsageError: The address and why it could not be reached.
    """
    host, port = split_address(address)
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except TimeoutError:
        raise UsageError(f"--ray-address {address}: no answer within {timeout_s:g} s; check that the head node "
                         "runs (`ray start --head`) and that this machine can reach it") from None
    except OSError as exc:
        raise UsageError(f"--ray-address {address}: cannot connect ({exc.strerror or exc}); check that the head "
                         "node runs (`ray start --head`) and the address and port it printed") from None


def open_executor(args: argparse.Namespace, device: str, log: Callable[[str], None]) -> Executor:
    """The executor the flags ask for; for Ray, connected (or a local Ray started) already.

    Args:
        args: Parsed flags (``executor``, ``ray_address``).
        device: The sweep's device; CUDA makes Ray tasks ask for a GPU each.
        log: Where notes go (the cluster's size, the dashboard link).

    Raises:
        UsageError: Ray missing, an unreachable address, or a cluster that cannot run the tasks.
    """
    if getattr(args, "executor", "local") == "local":
        return LocalExecutor()
    try:
        importlib.import_module("ray")
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA} "
                         "(or drop --executor ray to run here)") from None
    if args.ray_address not in (None, "auto"):
        check_reachable(args.ray_address)
    from jobs.ray_executor import RayExecutor

    return RayExecutor.connect(args.ray_address, device=device, log=log)


def query_chunks(n_query: int, n_gallery: int, n_betas: int, n_iter: int, top_n: int,
                 slots: int) -> list[slice]:
    """The query chunks of one group's tasks: equal sizes, at least ``slots`` when there are
    enough queries, none above the chunk ``icfrr.rerank_chunks`` makes by default
    (:func:`icfrr.chunks.rerank_chunk_size`).

    Args:
        n_query, n_gallery: Q, G.
        n_betas: The group's configurations.
        n_iter: Their updates T.
        top_n: Kept items per query and iteration.
        slots: Tasks the cluster runs at once (CPUs, or GPUs for a CUDA sweep).

    Returns:
        Consecutive slices covering 0..Q-1, their sizes within one of each other.
    """
    cap = rerank_chunk_size(n_gallery, n_betas, n_iter, min(top_n, n_gallery))
    n_chunks = min(n_query, max(math.ceil(n_query / cap), slots, 1))
    bounds = [i * n_query // n_chunks for i in range(n_chunks + 1)]   # sizes differ by one at most
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class ChunkAssembler:
    """Gathers chunk results keyed by (group, chunk) into each group's outcomes, once.

    A chunk result that arrives twice (a retried task whose first attempt also
    answered) is counted once; a group is released when its last chunk is in,
    and never again.

    Args:
        groups: The groups, indexed as the keys' first element.
        chunks: Each group's query chunks.
        labels_q: int64 [Q] labels the metrics use.
    """

    def __init__(self, groups: Sequence[Group], chunks: Sequence[Sequence[slice]], labels_q: np.ndarray) -> None:
        from jobs.engine_runner import ChunkCollector

        self._groups, self._chunks, self._labels_q = list(groups), [list(c) for c in chunks], labels_q
        self._collectors = {g: ChunkCollector(len(group.configs), len(labels_q), group.configs[0].n_iter)
                            for g, group in enumerate(self._groups)}
        self._seen: set[tuple[int, int]] = set()
        self._seconds = [0.0] * len(self._groups)
        self.duplicates = 0

    def add(self, group: int, chunk: int, result: ChunkResult, seconds: float) -> list[RunOutcome] | None:
        """Take one chunk's result; returns the group's outcomes when it completed the group.

        Args:
            group, chunk: The key.
            result: The chunk's ``icfrr.rerank_chunks`` result (queries numbered within the sweep).
            seconds: The task's work time (each configuration's run records its share of the sum).

        Raises:
            ValueError: A result whose queries are not those of its chunk.
        """
        if (group, chunk) in self._seen:
            self.duplicates += 1
            return None
        want = self._chunks[group][chunk]
        if (result.queries.start, result.queries.stop) != (want.start, want.stop):
            raise ValueError(f"chunk {chunk} of group {group} answered queries {result.queries.start}.."
                             f"{result.queries.stop - 1}, expected {want.start}..{want.stop - 1}")
        self._seen.add((group, chunk))
        collector = self._collectors[group]
        collector.add(result)
        self._seconds[group] += seconds
        if not collector.complete:
            return None
        del self._collectors[group]   # released once; its arrays go with the outcomes
        return collector.outcomes(self._labels_q, self._seconds[group] / len(self._groups[group].configs))

    @property
    def pending(self) -> int:
        """Groups not released yet."""
        return len(self._collectors)
