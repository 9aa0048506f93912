"""Where replications run: in this process, on local worker processes, or on a Dask cluster.

* One worker: in this process (it shares this process's compiled models).
* Several: a :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method
  (forking a process that has loaded numba and PyTensor is not safe). Each worker process keeps
  pymsem's reuse cache (:mod:`pymsem.reuse`), so it compiles a model once per design shape and
  fits every later replication of that shape in about half a second plus sampling; tasks are
  handed out in design order, so a worker mostly stays on one shape.
* A ``dask.distributed.Client`` (or a scheduler address): the same tasks through
  ``Client.submit`` / ``as_completed``, across as many machines as the cluster has (each needs
  pymsem installed). Results come back to this process, which alone writes the files.

Results never depend on the engine: a replication's seeds come from its place in the study.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from pymsem.study.replicate import Task, replicate

__all__ = ["available_cores", "default_workers", "execute"]

OnResult = Callable[[list[dict[str, Any]]], None]


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(chains: int) -> int:
    """Worker processes by default: one chain per core, ``cores // chains``, at least 1.

    Each chain of a replication already runs on its own thread, so with 2 chains a 2-core
    machine is busy with one worker, and the default runs in this process, where the model
    compiled once serves every replication. A new worker process compiles each design shape
    again (tens of seconds; ``bench/results/study_scaling.md``: Model 1 on 2 cores, 8
    replications in 3.5 s with 1 worker against 57 s with 2 spawned workers, which each
    compiled first). More workers pay off when there are cores to spare and many replications
    per shape.
    """
    return max(1, available_cores() // max(1, int(chains)))


def execute(
    tasks: Sequence[Task],
    on_result: OnResult,
    workers: int = 1,
    client: Any = None,
) -> None:
    """Run ``tasks``, passing each replication's rows to ``on_result`` as it finishes."""
    if not tasks:
        return
    if client is not None:
        _dask(tasks, on_result, client)
    elif workers <= 1:
        for t in tasks:
            on_result(replicate(t))
    else:
        _processes(tasks, on_result, workers)


def _processes(tasks: Sequence[Task], on_result: OnResult, workers: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx)
    try:
        pending = {pool.submit(replicate, t) for t in tasks}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                on_result(f.result())
    finally:
        # On an interruption, queued replications are dropped (they run on resume).
        pool.shutdown(wait=True, cancel_futures=True)


def _dask(tasks: Sequence[Task], on_result: OnResult, client: Any) -> None:
    try:
        from dask.distributed import Client, as_completed
    except ImportError as e:
        raise ImportError(
            "Running a study on Dask needs dask.distributed: pip install 'pymsem[dask]'."
        ) from e
    own = isinstance(client, str)
    if own:
        client = Client(client)
    try:
        futures = [client.submit(replicate, t, pure=False) for t in tasks]
        try:
            for f in as_completed(futures):
                on_result(f.result())
        finally:
            client.cancel([f for f in futures if not f.done()])
    finally:
        if own:
            client.close()
