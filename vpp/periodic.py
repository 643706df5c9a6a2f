"""A step run every ``period_s`` seconds until cancelled, on a fixed cadence.

Runs start at ``t₀, t₀ + p, t₀ + 2p, …`` (monotonic time): a step that takes a while does
not push the next one back by its duration, so a 1-second dispatch tick stays a 1-second
tick. A step that overruns a whole period skips the runs it missed (it never bursts to
catch up). A failing step is logged and the loop goes on: one bad tick must not stop
dispatch or the simulated gateways.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def run_every(
    period_s: float,
    step: Callable[[], Awaitable[Any]],
    log: logging.Logger,
    what: str,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    start = clock()
    k = 0
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)
        k = max(k + 1, math.floor((clock() - start) / period_s) + 1)
        await sleep(max(0.0, start + k * period_s - clock()))
