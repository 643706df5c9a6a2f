"""One BLAS/OpenMP thread for numerics whose bits must not depend on the machine.

A sum split over several BLAS threads adds its parts in another order than one thread
does, and the last bits of the result differ. For most of the engine that is noise; for
a forecaster it is not: LEAR's LASSO fits feed a bid, and a live bid, a backtest of the
same decision and a backtest worker on another machine must give the same bits (the DE
year's LEAR summaries differed between a one-thread worker and a two-thread parent). So a
computation that must be reproducible runs inside :func:`one_thread`.

The limit is not per thread. OpenBLAS (the pthreads build NumPy and SciPy ship) has one
pool for the process, and threadpoolctl lets one thread at a time set it: the first to
set a limit controls it until that limit is lifted, and a limit asked by any other thread
meanwhile silently does nothing. The engine may run two such computations at once (the
first-bids job and a bidding cycle, each in its own thread), so one computation at a time
holds the limit, set and lifted by its own thread: a re-entrant lock, nestable within a
thread and serial across threads. Two LEAR forecasts asked at once run one after the
other, which costs the second a few seconds and never a bit of its answer. Nothing else
in the engine holds a limit (a backtest worker sets one in its main thread for its life,
which is where its forecasts run).

The limit covers the libraries loaded when the first caller enters: import what the
computation needs (scikit-learn's solvers load SciPy's OpenBLAS and an OpenMP runtime)
before entering.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.RLock()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with every loaded BLAS and OpenMP pool at one thread (nestable; other
    threads asking for it wait)."""
    from threadpoolctl import threadpool_limits

    with _lock, threadpool_limits(1):
        yield
