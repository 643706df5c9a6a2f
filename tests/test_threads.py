"""Forecasts whose bits must not depend on the machine's cores (market.threads).

The live bidder runs LEAR with the process's BLAS threads, a backtest worker with one:
before LEAR pinned its fits to one thread their bids differed in the last bits on a
two-core machine (the first test fails without the pin)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sklearn.linear_model  # noqa: F401  (its BLAS and OpenMP loaded before any limit)
from threadpoolctl import threadpool_info, threadpool_limits

from market.lear import LearForecaster
from market.threads import one_thread
from tests.test_backtest import scenario_file
from vpp.backtest.runner import prepare
from vpp.scenario import load_scenario


def blas_threads() -> set[int]:
    return {int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"}


def test_lear_gives_the_same_bits_on_one_blas_thread_and_on_several(tmp_path: Path) -> None:
    sc = load_scenario(scenario_file(tmp_path, "de-2019-backtest.yaml"))
    inputs = prepare(
        sc, start=datetime(2019, 3, 4, tzinfo=UTC), end=datetime(2019, 3, 5, tzinfo=UTC)
    )
    s, d = inputs.series, inputs.decisions[0]
    assert inputs.features is not None
    known = s.window(s.starts[0], s.starts[d.cutoff])
    starts = s.starts[d.first : d.end + 1]
    feats = inputs.features.known_at(d.at)
    answers = []
    for threads in (1, 2):
        with threadpool_limits(threads):  # the process as a worker, and as a 2-core engine
            lear = LearForecaster(
                inputs.market, features=list(inputs.features.names), windows_days=(364, 728)
            )
            answers.append(lear.forecast(known, feats, starts).point)
            assert blas_threads() == {threads}  # the limit was lifted on the way out
    assert np.isfinite(answers[0]).all()
    assert answers[0].tobytes() == answers[1].tobytes()


def test_two_threads_take_the_limit_in_turn_and_each_lifts_its_own() -> None:
    """Two fits at once (the first-bids job and a bidding cycle): the second waits for
    the first (OpenBLAS ignores a limit lifted from another thread, and a shared limit
    would be lifted under one of them), each runs at one thread, and the original count
    is back when both are done."""
    first_in, release = threading.Event(), threading.Event()
    seen: list[tuple[str, set[int]]] = []

    def fit(name: str, hold: bool) -> None:
        with one_thread():
            seen.append((name, blas_threads()))
            if hold:
                first_in.set()
                release.wait(10)
            seen.append((name, blas_threads()))

    before = blas_threads()  # the machine's default (no thread holds a limit)
    a = threading.Thread(target=fit, args=("a", True))
    b = threading.Thread(target=fit, args=("b", False))
    a.start()
    assert first_in.wait(10)
    b.start()
    b.join(0.3)
    assert b.is_alive()  # waiting for a's turn to end
    release.set()
    a.join(10)
    b.join(10)
    assert seen == [("a", {1}), ("a", {1}), ("b", {1}), ("b", {1})]
    assert blas_threads() == before
    with one_thread(), one_thread():  # nested in one thread
        assert blas_threads() == {1}
    assert blas_threads() == before


def test_an_error_inside_still_restores_the_limit() -> None:
    with threadpool_limits(2):
        with pytest.raises(RuntimeError), one_thread():
            raise RuntimeError("fit failed")
        assert blas_threads() == {2}
