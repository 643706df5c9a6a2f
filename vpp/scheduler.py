"""The scheduler: APScheduler jobs for gate-driven and periodic work.

Every job is coalesced (a backlog of missed runs becomes one run), limited to one
instance at a time (a slow solve is never overlapped by the next), and skipped when it is
more than ``misfire_grace_s`` late (a job that woke up far too late would act on stale
state). Interval jobs are aligned to the interval grid of the engine's clock, so "every 5
minutes" means at :00, :05, ... not five minutes after start-up. Each job's last error is
kept for status.

Periods and delays are in the engine's time. On a simulated clock that runs ``speed``
times faster than the wall (``vpp run --speed N``), APScheduler — which waits on the wall —
is given every period divided by ``speed`` and first run times mapped from the simulated
grid to the wall, so jobs fire at the simulated instants they are meant for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from vpp.clock import Clock, WallClock
from vpp.config import SchedulerSettings

log = logging.getLogger(__name__)


class Scheduler:
    name = "scheduler"

    def __init__(
        self, settings: SchedulerSettings, clock: Clock | None = None, stop_wait_s: float = 10.0
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        self.speed = float(getattr(self.clock, "speed", 1.0))
        self.aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(settings.misfire_grace_s),
            },
        )
        self.errors: dict[str, str] = {}
        self.missed: dict[str, int] = {}
        self._stopping = False
        self._running: set[asyncio.Task[Any]] = set()
        self.stop_wait_s = stop_wait_s  # how long a stop lets running jobs finish
        self.aps.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    def _on_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            self.missed[event.job_id] = self.missed.get(event.job_id, 0) + 1
            log.warning("job %s missed its run at %s", event.job_id, event.scheduled_run_time)
        elif event.exception is not None:
            self.errors[event.job_id] = repr(event.exception)
            log.error("job %s failed: %r", event.job_id, event.exception)

    def _guarded(self, job_id: str, func: Callable[[], Awaitable[None]]) -> Callable[[], Any]:
        """``func`` as a job: a run cancelled because the engine is stopping (its loop
        cancels what still runs, e.g. a bidding cycle waiting on its solve thread) ends
        quietly; any other cancellation or error is the job's failure, kept for status.
        (A clean stop logged "job bidding failed: CancelledError()" with a traceback.)"""

        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await func()
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                log.info("job %s: its run was cut short by the stop", job_id)
            finally:
                self._running.discard(task)

        return run

    def every(
        self,
        job_id: str,
        seconds: float,
        func: Callable[[], Awaitable[None]],
        *,
        offset_s: float = 0.0,
    ) -> None:
        """Run ``func`` every ``seconds`` (engine time), aligned to the grid (plus
        ``offset_s``)."""
        now = self.clock.time()
        first = math.ceil((now - offset_s) / seconds) * seconds + offset_s
        wall_first = time.time() + (first - now) / self.speed
        self.aps.add_job(
            self._guarded(job_id, func),
            IntervalTrigger(
                seconds=seconds / self.speed, start_date=datetime.fromtimestamp(wall_first, UTC)
            ),
            id=job_id,
            replace_existing=True,
        )

    def soon(self, job_id: str, func: Callable[[], Awaitable[None]], delay_s: float = 1.0) -> None:
        """Run ``func`` once shortly (e.g. a first bidding cycle at start-up)."""
        self.aps.add_job(
            self._guarded(job_id, func),
            "date",
            run_date=datetime.now(UTC) + timedelta(seconds=delay_s / self.speed),
            id=job_id,
            replace_existing=True,
        )

    async def start(self) -> None:
        self.aps.start()

    async def stop(self) -> None:
        """No new runs; the running ones get ``stop_wait_s`` to finish (APScheduler's
        shutdown cancels whatever still runs, and a run cancelled before it began was
        logged as "Error running job")."""
        self._stopping = True
        if self.aps.running:
            self.aps.pause()
            await asyncio.sleep(0)  # a run already handed to the loop enters its wrapper
            if self._running:
                await asyncio.wait(set(self._running), timeout=self.stop_wait_s)
            self.aps.shutdown(wait=False)

    def status(self) -> dict[str, Any]:
        wall, now = time.time(), self.clock.time()
        jobs = {
            j.id: datetime.fromtimestamp(
                now + (j.next_run_time.timestamp() - wall) * self.speed, UTC
            ).isoformat()
            if j.next_run_time
            else None
            for j in self.aps.get_jobs()
        }
        line = f"{len(jobs)} jobs" + (f", {len(self.errors)} failing" if self.errors else "")
        return {
            "line": line,
            "jobs": jobs,
            "errors": dict(self.errors),
            "missed": dict(self.missed),
        }
