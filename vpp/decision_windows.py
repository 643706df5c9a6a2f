"""Decision windows: when a strategy decides, what it knows then, and what it bids.

A market's gates fix the structure (:mod:`market.definitions`):

- **Day-ahead** (a daily gate): one decision per trading day, ``decision_lead`` before the
  day's gate closure; it bids the whole trading day (23, 24 or 25 hours in local time).
  The prices it knows are those of every earlier trading day (each was published after
  its own auction, a day before).
- **Real-time** (a gate ``lead_minutes`` before each interval): a decision every
  ``reoptimize_every`` (default: the product's horizon), ``decision_lead`` before the gate
  of the first interval it bids; it bids the next ``reoptimize_every`` of intervals and
  knows the prices of every interval that has *ended* by the decision instant.

  Where the cadence starts is the *window clock* (``strategy.window_clock``):
  ``period`` (the default) counts from the evaluated period's first interval;
  ``trading_day`` starts each market-local trading day afresh (a daily window is 23 or
  25 hours long on the days the clocks change); ``standard_time`` counts from midnight of
  the market's zone in standard time all year (no daylight saving: every daily window is
  24 hours, starting an hour later in local summer time), as DER-VET's windows do. A
  cadence that does not divide a day counts from each day's start and the day's last
  window is cut at the next one.

Each decision optimizes from its first bid interval over ``horizon`` (default: the bid
window for day-ahead, 24 hours for real-time), never past the end of the evaluated
period, and keeps the bid window. ``vpp optimize`` with ``horizon`` or
``reoptimize_every`` solves exactly these windows with perfect foresight, so the
backtest's ``perfect`` strategy and the optimizer agree window by window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Literal

import numpy as np
import pandas as pd

from market.definitions import MarketDefinition, Product
from market.learned import Window

DAY = timedelta(days=1)
WindowClock = Literal["period", "trading_day", "standard_time"]
RT_HORIZON = timedelta(hours=24)


class WindowError(ValueError):
    """A strategy cadence the market's gates do not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class Decision:
    at: datetime  # the instant the decision is taken (simulated clock)
    clears_at: datetime  # the instant the market clears its first interval
    cutoff: int  # prices at positions < cutoff are known at ``at``
    first: int  # first interval bid (position in the series)
    kept: int  # intervals bid
    end: int  # end of the optimization horizon (exclusive position)

    @property
    def window(self) -> Window:
        return Window(self.cutoff, self.first, self.end)


def decisions(
    starts: pd.DatetimeIndex,
    lo: int,
    hi: int,
    market: MarketDefinition,
    product: Product,
    *,
    horizon: timedelta | None,
    every: timedelta | None,
    lead: timedelta,
    clock: WindowClock = "period",
) -> list[Decision]:
    """The decisions covering positions ``[lo, hi)`` of the regular series ``starts``."""
    if hi <= lo:
        return []
    step = (starts[1] - starts[0]).to_pytimedelta() if len(starts) > 1 else timedelta(hours=1)
    gate = market.product(product).gate_closure
    out: list[Decision] = []
    if gate.kind == "daily":
        if every is not None and every != DAY:
            raise WindowError(
                f"{market.market_id} {product.value} is a day-ahead auction: one decision per "
                f"trading day (reoptimize_every: P1D), not {every}"
            )
        pos = lo
        while pos < hi:
            day = market.trading_day(starts[pos].to_pydatetime())
            day_start = market.trading_day_start_utc(day)
            day_end = market.trading_day_start_utc(day + DAY)
            end_pos = min(hi, int(np.searchsorted(starts, pd.Timestamp(day_end), side="left")))
            day_pos = int(np.searchsorted(starts, pd.Timestamp(day_start), side="left"))
            kept = end_pos - pos
            h = kept if horizon is None else max(kept, round(horizon / step))
            closes = market.gate_closure(product, day_start)
            out.append(
                Decision(
                    at=closes - lead,
                    clears_at=closes,
                    cutoff=day_pos,
                    first=pos,
                    kept=kept,
                    end=min(hi, pos + h),
                )
            )
            pos = end_pos
        return out
    cadence = every or timedelta(hours=market.product(product).horizon_hours)
    if cadence % step:
        raise WindowError(f"reoptimize_every {cadence} is not a multiple of the {step} interval")
    per = round(cadence / step)
    h = round((horizon or RT_HORIZON) / step)
    if h < per:
        raise WindowError(f"horizon {horizon} is shorter than reoptimize_every {cadence}")
    firsts = (
        list(range(lo, hi, per))
        if clock == "period"
        else _clocked(starts, lo, hi, market, cadence, standard=clock == "standard_time")
    )
    for pos, nxt in zip(firsts, [*firsts[1:], hi], strict=True):
        first_start = starts[pos].to_pydatetime()
        at = market.gate_closure(product, first_start) - lead
        known = int(np.searchsorted(starts, pd.Timestamp(at - step), side="right"))
        kept = nxt - pos
        out.append(
            Decision(
                at=at,
                clears_at=first_start,
                cutoff=min(known, pos),
                first=pos,
                kept=kept,
                end=min(hi, pos + max(h, kept)),
            )
        )
    return out


def _clocked(
    starts: pd.DatetimeIndex,
    lo: int,
    hi: int,
    market: MarketDefinition,
    cadence: timedelta,
    *,
    standard: bool,
) -> list[int]:
    """First positions of the windows in ``[lo, hi)`` when the cadence restarts at each
    day's start: the market's trading day, or midnight of its zone in standard time."""
    zone = market.tz
    first = starts[lo].to_pydatetime()
    if standard:
        offset = zone.utcoffset(first) - (zone.dst(first) or timedelta(0))  # type: ignore[operator]
        fixed = timezone(offset)
        day = first.astimezone(fixed).date()

        def day_start(d: date) -> datetime:
            return datetime.combine(d, time(0), fixed).astimezone(UTC)

    else:
        day = market.trading_day(first)

        def day_start(d: date) -> datetime:
            return market.trading_day_start_utc(d)

    end = starts[hi - 1].to_pydatetime()
    bounds: list[datetime] = []
    while day_start(day) <= end:
        t, nxt = day_start(day), day_start(day + DAY)
        while t < nxt:
            bounds.append(t)
            t += cadence
        day += DAY
    positions = np.searchsorted(starts, pd.DatetimeIndex(bounds), side="left")
    return sorted({lo, *(int(p) for p in positions if lo < p < hi)})
