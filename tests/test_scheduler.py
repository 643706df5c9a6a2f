"""The scheduler's jobs at a stop: a run the stop cuts short is not a failure."""

from __future__ import annotations

import asyncio
import logging

import pytest

from vpp.config import SchedulerSettings
from vpp.scheduler import Scheduler


async def test_a_run_cut_short_by_the_stop_is_no_failure(caplog: pytest.LogCaptureFixture) -> None:
    """A clean stop logged "job bidding failed: CancelledError()" with a traceback: the
    engine's loop cancels a bidding cycle still waiting on its solve thread."""
    sched = Scheduler(SchedulerSettings(), stop_wait_s=0.2)
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    sched.soon("bidding", slow, delay_s=0.0)
    await sched.start()
    await asyncio.wait_for(started.wait(), 5)
    running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    with caplog.at_level(logging.INFO):
        await sched.stop()
        for t in running:  # what asyncio.run does to the tasks left at the end
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    assert sched.errors == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "cut short by the stop" in caplog.text


async def test_a_stop_lets_a_short_run_finish(caplog: pytest.LogCaptureFixture) -> None:
    """A run under way when the stop comes finishes (within stop_wait_s) instead of being
    cancelled by APScheduler's shutdown."""
    sched = Scheduler(SchedulerSettings(), stop_wait_s=5.0)
    started, finished = asyncio.Event(), asyncio.Event()

    async def short() -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.set()

    sched.soon("leadership", short, delay_s=0.0)
    await sched.start()
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.INFO):
        await sched.stop()
    assert finished.is_set() and sched.errors == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_cancellation_while_running_is_still_a_failure() -> None:
    sched = Scheduler(SchedulerSettings())

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await sched._guarded("bidding", cancelled)()
