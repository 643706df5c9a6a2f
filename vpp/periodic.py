"""A step run every ``period_s`` seconds until cancelled; a failing step is logged and the
loop goes on (one bad tick must not stop dispatch or the simulated gateways)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any


async def run_every(
    period_s: float, step: Callable[[], Awaitable[Any]], log: logging.Logger, what: str
) -> None:
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(period_s)
