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

Each decision optimizes from its first bid interval over ``horizon`` (default: the bid
window for day-ahead, 24 hours for real-time), never past the end of the evaluated
period, and keeps the bid window. ``vpp optimize`` with ``horizon`` or
``reoptimize_every`` solves exactly these windows with perfect foresight, so the
backtest's ``perfect`` strategy and the optimizer agree window by window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from market.definitions import MarketDefinition, Product
from market.learned import Window

DAY = timedelta(days=1)
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
    for pos in range(lo, hi, per):
        first_start = starts[pos].to_pydatetime()
        at = market.gate_closure(product, first_start) - lead
        known = int(np.searchsorted(starts, pd.Timestamp(at - step), side="right"))
        out.append(
            Decision(
                at=at,
                clears_at=first_start,
                cutoff=min(known, pos),
                first=pos,
                kept=min(per, hi - pos),
                end=min(hi, pos + h),
            )
        )
    return out
