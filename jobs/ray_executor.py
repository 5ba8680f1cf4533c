"""``--executor ray``: every (configuration group x query chunk) is a Ray task.

The driver (the ``jobs.sweep`` process) puts the sweep's inputs in Ray's
object store once (``ray.put``: the query-gallery distances or the features
they are computed from, the gallery neighbour graph, the labels), submits one
task per chunk of queries of every ICFRR group, and gathers the results with
``jobs.executors.ChunkAssembler``. A task re-ranks its queries through every
iteration with ``icfrr.rerank_chunks`` and returns their per-query metric
rows, kept top N and its seconds; each query's re-ranking depends only on
that query and the graph, so the chunks give exactly the local run's numbers.
When a group's last chunk is in, the driver yields its outcomes and the sweep
commits them, so the DuckDB file never leaves the driver's machine.

A task whose worker dies is run again by Ray (``max_retries``); an error
raised by the engine is not retried (it would fail again) and stops the sweep
as it would locally. Groups that cannot be chunked (other methods, and
configurations writing the published per-iteration files) run on the driver
after the tasks.

Only ``jobs.executors.open_executor`` imports this module, for ``--executor ray``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import ray
from tqdm import tqdm

from jobs.cli import UsageError
from jobs.executors import ChunkAssembler, Group, RunHere, Work, query_chunks
from jobs.progress import Progress

#: Times Ray runs a task again after its worker died (Ray's own retry; engine errors are not retried).
MAX_RETRIES = 3
#: Whether a local Ray started by the sweep runs Ray's dashboard: None when its packages are
#: installed (``ray[default]``); the tests set False.
INCLUDE_DASHBOARD: bool | None = None
#: Test hook: a marker file path; the first task to create it exits its worker (``os._exit``).
CRASH_ONCE_ENV = "ICFRR_RAY_CRASH_ONCE"


@dataclass(frozen=True)
class TaskParams:
    """One group's engine parameters, as a task receives them."""

    kg: int
    kq: int
    betas: tuple[float, ...]
    n_iter: int
    variant: str
    top_n: int
    device: str


def run_chunk(qg, graph, labels_q: np.ndarray, labels_g: np.ndarray, params: TaskParams,
              queries: slice, crash_marker: str | None = None):
    """A Ray task's body: one chunk of queries of one group through every iteration.

    Args:
        qg: float32 [Q, G] numpy distances (from the object store, read-only), or the
            features computing them per chunk (``icfrr.neighbors.FeatureDistances``, as
            :func:`_to_store` put it).
        graph: The gallery ``NeighborGraph``, as :func:`_to_store` put it.
        labels_q, labels_g: int64 [Q], [G] labels.
        params: The group's parameters.
        queries: Which queries.
        crash_marker: Test hook (see :data:`CRASH_ONCE_ENV`).

    Returns:
        (``icfrr.reranking.ChunkResult`` with ``queries`` numbered within the sweep, seconds).
    """
    if crash_marker is not None:
        try:
            os.close(os.open(crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os._exit(1)   # a worker dying mid-task, once per marker
    import dataclasses

    import numba

    from icfrr.reranking import rerank_chunks

    start = time.perf_counter()
    numba.set_num_threads(1)   # one CPU per task: Ray runs as many tasks as the node has CPUs
    if isinstance(qg, np.ndarray):
        dist = np.array(qg[queries])   # a writable copy of the chunk (the stored array is read-only)
    else:
        dist = _from_store(qg)(queries)
    (chunk,) = rerank_chunks(dist, _from_store(graph), kg=params.kg, kq=params.kq, betas=params.betas, n_iter=params.n_iter,
                             variant=params.variant, labels_q=labels_q[queries], labels_g=labels_g,
                             top_n=params.top_n, chunk_size=queries.stop - queries.start, device=params.device)
    return dataclasses.replace(chunk, queries=queries), time.perf_counter() - start


def _to_store(value):
    """What the object store holds for a graph or a feature-distance function: their numpy
    arrays (read in place by every task on a node, where pickled tensors are copied per task)."""
    from icfrr.neighbors import FeatureDistances, NeighborGraph

    if isinstance(value, NeighborGraph):
        return ("graph", value.indices.numpy(), value.distances.numpy())
    if isinstance(value, FeatureDistances):
        return ("features", value.query.numpy(), value.gallery.numpy(), value.metric)
    return value


def _from_store(value):
    """:func:`_to_store`'s inverse, on the worker; the tensors view the stored (read-only) arrays,
    which the engine only reads."""
    if not isinstance(value, tuple):
        return value
    import warnings

    import torch

    from icfrr.neighbors import FeatureDistances, NeighborGraph

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = [torch.from_numpy(a) for a in value[1:3]]
    if value[0] == "graph":
        return NeighborGraph(*tensors)
    return FeatureDistances(*tensors, value[3])


def warm_up() -> int:
    """A Ray task's body that readies its worker: imports the engine and loads its compiled
    kernels (numba's disk cache) on a tiny problem. Returns the worker's process id."""
    import numba

    from icfrr.reranking import rerank_chunks

    numba.set_num_threads(1)
    tiny = np.random.default_rng(0).random((4, 30), dtype=np.float32)
    list(rerank_chunks(tiny, np.abs(tiny[:1].T - tiny[:1]), kg=3, kq=3, n_iter=2, labels_q=np.zeros(4, np.int64),
                       labels_g=np.zeros(30, np.int64), device="cpu"))
    return os.getpid()


class RayExecutor:
    """Runs ICFRR groups as chunk tasks on a Ray cluster (or a local Ray); see the module doc.

    Args:
        device: The sweep's device; CUDA tasks ask for one GPU each.
        started: True when this executor started Ray (then ``close`` stops it).
        log: Where notes go.
    """

    name = "ray"

    def __init__(self, device: str, started: bool, log: Callable[[str], None]) -> None:
        self.device, self._started, self._log = device, started, log
        self._warming: list = []

    @classmethod
    def connect(cls, address: str | None, *, device: str, log: Callable[[str], None]) -> RayExecutor:
        """Join the Ray cluster at ``address``, or start a local Ray with this machine's CPUs.

        A Ray already started in this process (a notebook, a test) is used as it is.

        Args:
            address: ``auto``, ``HOST:PORT`` or None (start a local Ray).
            device: The sweep's device.
            log: Where notes go.

        Raises:
            UsageError: No cluster at ``address``, or a CUDA sweep on a cluster without GPUs.
        """
        started = False
        if ray.is_initialized():
            context = None
        else:
            try:
                if address is None:
                    context = ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=INCLUDE_DASHBOARD,
                                       logging_level=logging.WARNING)
                    started = True
                else:
                    context = ray.init(address=address, logging_level=logging.WARNING)
            except ConnectionError as exc:
                if address == "auto":
                    raise UsageError("--ray-address auto: no Ray cluster runs on this machine; start one with "
                                     "`ray start --head`, or drop --ray-address to start a local Ray") from None
                raise UsageError(f"--ray-address {address}: {str(exc).splitlines()[0]}") from None
        executor = cls(device, started, log)
        try:
            executor._describe(address, context)
        except BaseException:
            executor.close()
            raise
        # start the workers now, while the sweep loads its artifacts: they import the engine once
        options = {"num_cpus": 0, "num_gpus": 1} if executor._cuda else {"num_cpus": 1}
        executor._warming = [ray.remote(warm_up).options(**options).remote() for _ in range(executor._slots())]
        return executor

    def _describe(self, address: str | None, context) -> None:
        """Log the cluster's size and dashboard; refuse a CUDA sweep on a cluster without GPUs."""
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        where = ("a local Ray" if self._started else f"the Ray cluster at {address}" if context is not None
                 else "the Ray already started in this process")
        self._log(f"sweep: --executor ray: {where}, {cpus} CPU(s), {gpus} GPU(s), "
                  f"{len(ray.nodes())} node(s)")
        url = getattr(context, "dashboard_url", None)
        if url:
            self._log(f"sweep: Ray dashboard: {url if '://' in url else 'http://' + url}")
        if self.device.startswith("cuda") and gpus == 0:
            raise UsageError(f"the sweep's device is {self.device} but the Ray cluster has no GPUs: pass "
                             "--device cpu, or add GPU workers")
        if not self.device.startswith("cuda") and cpus == 0:
            raise UsageError("the Ray cluster has no CPUs to run tasks on: add workers (`ray start --address ...`)")

    def _slots(self) -> int:
        """Tasks the cluster runs at once."""
        resources = ray.cluster_resources()
        return max(1, int(resources.get("GPU" if self._cuda else "CPU", 1)))

    @property
    def _cuda(self) -> bool:
        return self.device.startswith("cuda")

    def run(self, groups: Sequence[Group], work: Callable[[], Work],
            run_here: RunHere) -> Iterator[tuple[Group, list]]:
        """Yield every group with its outcomes: the chunked groups as their last chunk arrives,
        then the others, run on this machine.

        Args:
            groups: What to run.
            work: The sweep's inputs (called once, when a group is chunked).
            run_here: Runs a group on this machine.
        """
        remote = [g for g in groups if g.remote]
        here = [g for g in groups if not g.remote]
        if here:
            tqdm.write(f"sweep: --executor ray: {len(here)} configuration group(s) of other methods or with "
                       "--rerank_results_dir run on this machine after the Ray tasks", file=sys.stderr)
        if remote:
            yield from self._run_remote(remote, work())
        for group in here:
            yield group, run_here(group)

    def _run_remote(self, groups: Sequence[Group], work: Work) -> Iterator[tuple[Group, list]]:
        qg = work.qg.numpy() if hasattr(work.qg, "numpy") and not callable(work.qg) else _to_store(work.qg)
        shared = [ray.put(qg), ray.put(_to_store(work.graph)), ray.put(np.asarray(work.labels_q)),
                  ray.put(np.asarray(work.labels_g))]           # once, whatever the number of tasks
        n_gallery = int(work.labels_g.shape[0])
        slots = self._slots()
        chunks = [query_chunks(work.n_query, n_gallery, len(g.configs), g.configs[0].n_iter, work.top_n, slots)
                  for g in groups]
        assembler = ChunkAssembler(groups, chunks, work.labels_q)
        task = ray.remote(run_chunk).options(num_cpus=0 if self._cuda else 1, num_gpus=1 if self._cuda else 0,
                                             max_retries=MAX_RETRIES, retry_exceptions=False)
        device = "cuda" if self._cuda else "cpu"   # Ray shows each task its GPU as device 0
        crash = os.environ.get(CRASH_ONCE_ENV) or None
        pending = {}
        for g, group in enumerate(groups):
            c0 = group.configs[0]
            params = TaskParams(c0.kg, c0.kq, tuple(c.beta for c in group.configs), c0.n_iter, c0.variant,
                                work.top_n, device)
            for c, queries in enumerate(chunks[g]):
                pending[task.remote(*shared, params, queries, crash)] = (g, c)
        n_tasks, task_s, start = len(pending), 0.0, time.perf_counter()
        bar = Progress(n_tasks, "chunks", "chunk", mode=work.progress, lines=False, leave=False)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    g, c = pending.pop(ref)
                    result, seconds = ray.get(ref)
                    bar.update(1)
                    task_s += seconds
                    outcomes = assembler.add(g, c, result, seconds)
                    if outcomes is not None:
                        yield groups[g], outcomes
        finally:
            bar.close()
            for ref in pending:   # the sweep stopped early: do not leave its tasks running
                ray.cancel(ref)
        # the numbers of the throughput model (docs/ARCHITECTURE.md): work in the tasks against wall time
        tqdm.write(f"sweep: --executor ray: {n_tasks} task(s) of {len(groups)} group(s): {task_s:.1f} s of task "
                   f"time in {time.perf_counter() - start:.1f} s on {slots} slot(s)", file=sys.stderr)

    def close(self) -> None:
        """Stop the local Ray this executor started (a cluster, or a Ray started by the caller, stays)."""
        for ref in self._warming:
            ray.cancel(ref)
        self._warming = []
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False
