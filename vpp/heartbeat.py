"""The control loop's heartbeat: how late the engine's event loop runs what it schedules.

Ingest, dispatch, bidding and leadership share one asyncio loop (the control loop); the
API and the console are served from a loop of their own in another thread, so a crowd of
readers cannot hold it. What can still delay the control loop (a blocking call on it, the
interpreter lock held by other threads) shows as *lag*: a task that asks to wake every
``period_s`` wakes late by that much. The heartbeat measures it and keeps:

- the instant of the last beat, which ``/livez`` reads: a control loop that has not beaten
  for ``api.livez_max_lag_s`` is not alive, however fast the API answers;
- the ``vpp_control_loop_lag_seconds`` histogram, for dashboards;
- the recent ``(wall epoch, lag)`` samples, for benchmarks (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from prometheus_client import Histogram

LAG = Histogram(
    "vpp_control_loop_lag_seconds",
    "How late the control loop woke a task that asked to wake on time",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class Heartbeat:
    """Beats every ``period_s`` on the loop it is started on."""

    def __init__(self, period_s: float = 0.1, keep: int = 20_000) -> None:
        self.period_s = period_s
        self.samples: deque[tuple[float, float]] = deque(maxlen=keep)
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="control loop heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.period_s)
            now = time.monotonic()
            lag = max(0.0, now - asked - self.period_s)
            self._last = now
            LAG.observe(lag)
            self.samples.append((time.time(), lag))

    def age_s(self) -> float:
        """Seconds since the control loop last beat (read from any thread)."""
        return time.monotonic() - self._last
