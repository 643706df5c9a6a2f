"""One clock for the engine: time is a dependency, never read from the wall inside it.

The scheduler, market gates, the fleet simulator, the command tracker's timeouts and the
peak-shaving re-plans all take the same :class:`Clock`. Production uses
:class:`WallClock`; ``vpp run --speed N`` uses :class:`ScaledClock` (simulated time that
runs N times faster than the wall, from a chosen start); ``vpp backtest`` uses
:class:`SimClock`, which moves only when the runner advances it — no sleeps, so a year
plays in seconds, and a run with the same seed and inputs is the same run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def now(self) -> datetime:
        """The same instant as an aware UTC datetime."""
        ...


class WallClock:
    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(UTC)


class ScaledClock:
    """Simulated time from ``start`` that advances ``speed`` times faster than the wall."""

    def __init__(self, start: datetime, speed: float) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start = start.timestamp()
        self.speed = speed
        self._wall0 = time.monotonic()

    def time(self) -> float:
        return self.start + (time.monotonic() - self._wall0) * self.speed

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def wall_seconds(self, simulated_s: float) -> float:
        """How long ``simulated_s`` of simulated time takes on the wall."""
        return simulated_s / self.speed


class SimClock:
    """A clock that moves only when told to (backtests, deterministic tests)."""

    def __init__(self, start: datetime | float) -> None:
        self._t = start.timestamp() if isinstance(start, datetime) else float(start)

    def time(self) -> float:
        return self._t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._t, UTC)

    def advance_to(self, t: float) -> None:
        """Move to ``t``; time never runs backwards."""
        if t < self._t:
            raise ValueError(
                f"the clock cannot go back from {self.now().isoformat()} to "
                f"{datetime.fromtimestamp(t, UTC).isoformat()}"
            )
        self._t = t
