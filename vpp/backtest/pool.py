"""Run a backtest's independent parts (the bound, each strategy) in parallel processes.

Each part replays the period on its own: its own executor, simulated market, forecaster
and random generator seeded from the scenario, and nothing it computes is read by another.
So the parts can run in any order, in any process, and the result is the sequential run's
(a test holds them byte-identical). Processes, not threads: a replay is pure Python and
NumPy between solves, so threads would share one interpreter lock.

Workers are *spawned* (a fresh interpreter each), never forked: the parent may hold solver
or logging threads, and a fork copies their locks in whatever state they are in. A spawned
worker imports the engine once (about 2 s) and is then reused for every part it takes.

Progress crosses back on one queue: a worker's :func:`report` puts ``(tag, done, total)``
on it and a thread of the parent hands each to the caller's callback, so a progress bar
moves while the parts run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

Progress = Callable[[str, int, int], None]

_queue: Any = None  # in a worker: the parent's progress queue


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity, which containers narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


# Each worker is one core's worth of work: BLAS and OpenMP pools of their own (OpenBLAS and
# LightGBM's OpenMP start one thread per core) would put jobs x cores threads on the cores.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init(q: Any) -> None:
    global _queue
    _queue = q
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # for the worker's life: libraries it loaded before its first part


def report(tag: str, done: int, total: int) -> None:
    """Progress from inside a worker (nothing happens outside one)."""
    if _queue is not None:
        _queue.put((tag, done, total))


def run_parts(
    fn: Callable[..., Any],
    parts: Sequence[tuple[Any, ...]],
    jobs: int,
    progress: Progress | None = None,
) -> list[Any]:
    """``[fn(*p) for p in parts]``, computed by up to ``jobs`` worker processes; results in
    the order of ``parts``. ``fn`` must be a module-level function and its arguments and
    result picklable. A part that raises re-raises its exception here (the other parts
    are cancelled or run to their end, and the pool is shut down either way)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or not q.empty():
            try:
                tag, done, total = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if progress is not None:
                progress(tag, done, total)

    mover = threading.Thread(target=drain, name="backtest-progress", daemon=True)
    mover.start()
    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update(dict.fromkeys(_ONE_THREAD, "1"))  # read by each worker as it starts
    try:
        with ProcessPoolExecutor(
            max_workers=max(1, min(jobs, len(parts))),
            mp_context=ctx,
            initializer=_init,
            initargs=(q,),
        ) as pool:
            futures = [pool.submit(fn, *p) for p in parts]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop.set()
        mover.join()
        q.close()
        q.join_thread()
