"""Where oracle calls run: in this process, in local worker processes, or on a Dask cluster.

Every executor has the same call::

    with make_executor("processes", workers=4) as executor:
        executor.label(oracle, [(row_id, atoms), ...], on_result=store.record)

``on_result(row_id, result)`` runs in the calling process as soon as each label is done (in
completion order, not input order), so results can be committed one by one. An error inside
a worker (including a worker that died) becomes a failed :class:`LabelResult`; it is never
raised.

The same workers can run the committee's own work (``map``): members trained in groups
(``train.parallel``), seeds attacked in chunks (``sampler.parallel``). Such a job wraps its
torch work in :func:`worker_threads` so that workers share the cores instead of each
starting one thread per core.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ase import Atoms

from advsample.oracles.base import LabelResult, Oracle, describe_exception
from advsample.progress import progress_bar
from advsample.runtime import tune_allocator

Items = Sequence[tuple[int, Atoms]]
OnResult = Callable[[int, LabelResult], None]


def _label_one(oracle: Oracle, atoms: Atoms) -> LabelResult:
    """The task each worker runs (module level so it pickles by reference); an oracle that
    breaks its never-raise contract still yields a failed result."""
    try:
        return oracle.label(atoms)
    except Exception as exc:
        return LabelResult.failed(f"oracle raised {describe_exception(exc)}")


class WorkerDied(ChildProcessError):
    """A worker process ended in the middle of a job (an OSError: the environment's doing,
    reported in one line by the CLI)."""


class Executor(ABC):
    """Runs ``oracle.label`` over many structures; a context manager that closes itself.

    ``workers``: how many jobs run at once (1 in this process), the number of parts that
    parallel training and sampling split their work into.
    """

    workers: int = 1

    def label(
        self, oracle: Oracle, items: Items, on_result: OnResult, progress: bool = True
    ) -> None:
        """Label each (row_id, atoms) of ``items``; call ``on_result(row_id, result)`` per item,
        once, as each finishes. ``progress`` shows a bar (:func:`advsample.progress.progress_bar`,
        kept on screen when done)."""
        if not items:
            return
        desc = f"labelling ({oracle.name})"
        with progress_bar(total=len(items), desc=desc, disable=not progress, leave=True) as bar:
            for row_id, result in self._run(oracle, items):
                on_result(row_id, result)
                bar.update()

    def map(self, fn: Callable, jobs: list) -> list:
        """[fn(job) for job in jobs], run where this executor runs things; results in order.

        Used for work other than labelling, e.g. training committee members in parallel.
        Exceptions propagate.
        """
        return [fn(job) for job in jobs]

    @abstractmethod
    def _run(self, oracle: Oracle, items: Items):
        """Yield (row_id, LabelResult) in completion order, exactly once per item."""

    @abstractmethod
    def close(self) -> None:
        """Release the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Labels one structure after the other in the calling process."""

    def _run(self, oracle, items):
        for row_id, atoms in items:
            yield row_id, _label_one(oracle, atoms)

    def close(self) -> None:
        """Nothing to release."""


class ProcessExecutor(Executor):
    """A pool of ``workers`` local processes, started with "spawn" (safe with torch loaded).

    Each worker gets ``OMP_NUM_THREADS = cpu_count // workers`` unless the variable is set
    already, so the workers' OpenMP codes (tblite, PySCF) do not oversubscribe the cores.
    The pool is started on first use and reused until :meth:`close`. As with any spawned
    pool, a script using it needs the ``if __name__ == "__main__":`` guard.
    """

    def __init__(self, workers: int = 2):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _run(self, oracle, items):
        pool = self._start()
        futures = {pool.submit(_label_one, oracle, atoms): row_id for row_id, atoms in items}
        broken = False
        for future in as_completed(futures):
            broken |= isinstance(future.exception(), BrokenProcessPool)
            yield futures[future], _result_of(future)
        if broken:  # a worker died and took the pool with it: start a fresh one next time
            self.close()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads,),
            )
        return self._pool

    def map(self, fn: Callable, jobs: list) -> list:
        """[fn(job) for job in jobs] on the worker pool, results in order; ``fn`` and the jobs must
        pickle, exceptions propagate. A worker that dies (killed, out of memory) raises
        :class:`WorkerDied` and the next use starts a fresh pool.
        """
        try:
            return list(self._start().map(fn, jobs))
        except BrokenProcessPool as exc:
            self.close()
            raise WorkerDied(f"a worker process died while running {fn.__name__} (killed, or "
                             "out of memory?); run the same command again to resume") from exc

    def close(self) -> None:
        """Shut the pool down, cancelling pending tasks; the next use starts a new pool."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """Tasks on a Dask cluster: a new ``LocalCluster`` of ``workers`` single-threaded processes
    when ``address`` is None, else the running scheduler at ``address`` (e.g. one started by
    dask-jobqueue on SLURM). Connects on first use; :meth:`close` shuts down a cluster it
    started and disconnects from one it did not.
    """

    def __init__(self, workers: int = 2, address: str | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.address = address
        self._client = None
        self._cluster = None

    def _connect(self):
        from distributed import Client, LocalCluster

        if self._client is None:
            if self.address is None:
                self._cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                self._client = Client(self._cluster)
            else:
                self._client = Client(self.address)
        return self._client

    def map(self, fn: Callable, jobs: list) -> list:
        """[fn(job) for job in jobs] as Dask tasks, results in order; exceptions propagate."""
        client = self._connect()
        return client.gather(client.map(fn, jobs, pure=False))

    def _run(self, oracle, items):
        from distributed import as_completed as dask_completed

        client = self._connect()
        futures = {
            client.submit(_label_one, oracle, atoms, pure=False): row_id for row_id, atoms in items
        }
        for future in dask_completed(futures):
            yield futures[future], _result_of(future)

    def close(self) -> None:
        """Disconnect the client, and close the LocalCluster if this executor started it."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def make_executor(
    kind: str = "inprocess", workers: int = 2, address: str | None = None
) -> Executor:
    """An executor by name: "inprocess", "processes" (``workers`` local processes) or "dask"
    (a LocalCluster of ``workers`` processes, or the scheduler at ``address``)."""
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "processes":
        return ProcessExecutor(workers)
    if kind == "dask":
        return DaskExecutor(workers, address)
    raise ValueError(f"unknown executor {kind!r}; choose 'inprocess', 'processes' or 'dask'")


def _init_worker(threads: int) -> None:
    """Worker initializer: cap OpenMP threads before the oracle's libraries load, keep large
    freed tensors in the heap (members may be trained here), and end with the parent."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    tune_allocator()
    exit_with_parent()


def exit_with_parent() -> None:
    """In a worker process: exit as soon as the process that started it ends, even in the
    middle of a task. A pool's idle workers otherwise outlive a parent that was killed
    (SIGKILL, the OOM killer): they wait forever on a task queue whose other end they hold
    themselves. A daemon thread waits on the parent's sentinel."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        """Block until the parent ends, then end this process at once."""
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@contextlib.contextmanager
def worker_threads() -> Iterator[None]:
    """Inside a worker process, torch uses ``OMP_NUM_THREADS`` threads (the pool's share of
    the cores, 1 when unset) for the duration; restored afterwards. In the main process
    (in-process executor) nothing changes: the run keeps its own thread setting."""
    import torch

    if multiprocessing.parent_process() is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _result_of(future) -> LabelResult:
    """The future's LabelResult, or a failed one (0 s) when the task itself raised."""
    try:
        return future.result()
    except Exception as exc:  # a dead worker, an unpicklable oracle, a lost connection, ...
        return LabelResult.failed(f"worker error: {describe_exception(exc)}")
