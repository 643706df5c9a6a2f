"""A regular UTC series seen as trading days × local slots, the shape day-ahead price
forecasters work in.

Day-ahead prices are set per delivery day for each local hour (or quarter-hour), so a
forecaster's rows are trading days and its columns the local clock's slots: slot
``k = (minutes since the trading day's start on the local clock) // step``. A
daylight-saving day has 23 or 25 hours: on the short day one slot has no interval (its
value is filled from the slot before), on the long day two intervals share a slot (their
mean is the slot's value, and both get its forecast). :func:`to_days` and
:func:`from_days` convert both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.definitions import MarketDefinition

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DayGrid:
    """Trading day ordinal and local slot of each interval of a regular series."""

    first_day: date  # ordinal 0
    day: I64  # (T,) trading-day ordinal
    slot: I64  # (T,) slot of the trading day
    per_day: int  # slots per (24-hour) trading day

    def date_of(self, ordinal: int) -> date:
        return self.first_day + timedelta(days=int(ordinal))

    def ordinal(self, day: date) -> int:
        return (day - self.first_day).days


def day_grid(starts: pd.DatetimeIndex, market: MarketDefinition) -> DayGrid:
    """The grid of ``starts`` (regular, UTC) in ``market``'s trading days."""
    if len(starts) < 2:
        raise ValueError("a day grid needs at least two intervals")
    step_min = int((starts[1] - starts[0]).total_seconds() // 60)
    if step_min <= 0 or 1440 % step_min:
        raise ValueError(f"an interval of {step_min} minutes does not divide a day")
    local = starts.tz_convert(market.tz)
    begin = market.trading_day_start.hour * 60 + market.trading_day_start.minute
    minutes = np.asarray(local.hour * 60 + local.minute, dtype=np.int64) - begin
    dates = local.normalize().tz_localize(None)
    days = np.asarray(dates.as_unit("s").asi8 // 86_400, dtype=np.int64)  # any resolution
    days = days - (minutes < 0)  # before the local day start: the previous trading day
    minutes = minutes % 1440
    first = int(days[0])
    first_day = date(1970, 1, 1) + timedelta(days=first)
    return DayGrid(first_day, days - first, minutes // step_min, 1440 // step_min)


def to_days(values: F64, grid: DayGrid, n_days: int | None = None) -> F64:
    """``(days, per_day)``: each slot's mean; a slot no interval fills (the short day's
    skipped hour, or data not there) is taken from the slot before it on the same day
    (from the slot after for the first), and stays ``NaN`` where the whole day is empty."""
    n = int(grid.day.max()) + 1 if n_days is None else n_days
    keep = grid.day < n
    flat = grid.day[keep] * grid.per_day + grid.slot[keep]
    v = np.asarray(values, dtype=np.float64)[keep]
    ok = ~np.isnan(v)
    total = np.bincount(flat[ok], weights=v[ok], minlength=n * grid.per_day)
    count = np.bincount(flat[ok], minlength=n * grid.per_day)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (total / count).reshape(n, grid.per_day)
    # fill holes within a day from the neighbouring slot (forward, then backward)
    frame = pd.DataFrame(out)
    filled: F64 = frame.ffill(axis=1).bfill(axis=1).to_numpy(dtype=np.float64)
    return filled


def from_days(matrix: F64, grid: DayGrid) -> F64:
    """Each interval's value from its (day, slot) cell."""
    out: F64 = matrix[grid.day, grid.slot]
    return out
