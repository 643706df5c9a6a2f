"""Price forecasts and price scenarios, for live bidding and backtests.

A forecast is made from the prices *known at the decision*: the caller passes the series
cut at its information cutoff (``PriceSeries.window``), and nothing here reads a price that
is not in it. Point forecasts for the intervals ``starts`` (UTC):

- ``perfect``: the actual prices (perfect foresight, the benchmark for backtests; the
  caller passes the whole series);
- ``persistence_day`` / ``persistence_week``: the price one day / one week earlier — or,
  where that is not known yet (a target more than a day beyond the cutoff), the newest
  known price at the same time of day (of the same weekday);
- ``seasonal``: the mean of the same time of day over the ``seasonal_days`` most recent
  known days, counting only days of the same type (weekday or weekend).

Scenarios. The forecast's historical errors ``e = actual − forecast`` over a trailing
window (``window_days`` before the first forecast interval) are grouped by time of day.
Scenario ``k`` of ``n`` adds, in every interval, the empirical quantile
``(k + ½)/n`` of that time of day's errors to the forecast. The scenarios are therefore
*comonotone*: in every interval scenario ``k+1`` is priced at or above scenario ``k``. That
is what lets the scenario bidding model state "higher price ⇒ no less discharge" as fixed
constraints between adjacent scenarios, with prices as mutable parameters. Each scenario
has probability ``1/n``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.prices import PriceSeries

Method = Literal["perfect", "persistence_day", "persistence_week", "seasonal"]
METHODS: tuple[Method, ...] = ("perfect", "persistence_day", "persistence_week", "seasonal")
F64 = npt.NDArray[np.float64]
DAY = timedelta(days=1)


class ForecastError(ValueError):
    pass


def _lag_positions(
    series: PriceSeries, starts: pd.DatetimeIndex, lag: timedelta, first_k: int = 1
) -> npt.NDArray[np.int64]:
    """Position in ``series`` of ``start − k·lag`` for the smallest ``k ≥ first_k`` that is
    in the series (−1 where none is)."""
    pos = np.full(len(starts), -1, dtype=np.int64)
    if not len(series):
        return pos
    last = series.starts[-1]
    first = series.starts[0]
    k = np.maximum(first_k, np.ceil((starts - last) / lag).astype(np.int64))
    k = np.maximum(k, first_k)
    lagged = starts - pd.to_timedelta(k * lag.total_seconds(), unit="s")
    found = series.starts.get_indexer(lagged)
    ok = (found >= 0) & (lagged >= first)
    pos[ok] = found[ok]
    return pos


def _lagged(series: PriceSeries, starts: pd.DatetimeIndex, lag: timedelta) -> F64:
    pos = _lag_positions(series, starts, lag)
    if (pos < 0).any():
        missing = starts[int(np.flatnonzero(pos < 0)[0])]
        raise ForecastError(
            f"not enough history for a {lag} lag: no known price at that time of day before "
            f"the interval starting {missing}"
        )
    out: F64 = series.values[pos]
    return out


def point_forecast(
    series: PriceSeries, starts: pd.DatetimeIndex, method: Method, *, seasonal_days: int = 28
) -> F64:
    """The forecast of the intervals ``starts`` from the known prices ``series``."""
    if method == "perfect":
        return series.at(starts)
    if method == "persistence_day":
        return _lagged(series, starts, DAY)
    if method == "persistence_week":
        return _lagged(series, starts, 7 * DAY)
    if method == "seasonal":
        weekend = starts.day_of_week >= 5
        first = _lag_positions(series, starts, DAY)  # the newest known day of each target
        if (first < 0).any():
            missing = starts[int(np.flatnonzero(first < 0)[0])]
            raise ForecastError(f"no history before the interval starting {missing}")
        k0 = np.rint(np.asarray((starts - series.starts[first]) / DAY, dtype=np.float64))
        total = np.zeros(len(starts))
        count = np.zeros(len(starts))
        for j in range(seasonal_days):
            lag_days = k0 + j
            lag = starts - pd.to_timedelta(lag_days, unit="D")
            pos = series.starts.get_indexer(lag)
            same_type = (lag.day_of_week >= 5) == weekend
            use = (pos >= 0) & same_type
            total[use] += series.values[pos[use]]
            count[use] += 1
        if (count == 0).any():
            missing = starts[int(np.flatnonzero(count == 0)[0])]
            raise ForecastError(f"no history of the same day type before {missing}")
        out: F64 = total / count
        return out
    raise ForecastError(f"unknown forecast method {method!r}; known: {', '.join(METHODS)}")


def historical_errors(
    series: PriceSeries,
    before: pd.Timestamp,
    method: Method,
    *,
    window_days: int = 56,
    seasonal_days: int = 28,
) -> pd.Series:
    """actual − forecast over the ``window_days`` before ``before`` (where history allows)."""
    lo = before - pd.Timedelta(days=window_days)
    mask = (series.starts >= lo) & (series.starts < before)
    starts = series.starts[mask]
    history_needed = {
        "perfect": timedelta(0),
        "persistence_day": DAY,
        "persistence_week": 7 * DAY,
        "seasonal": seasonal_days * DAY,
    }[method]
    starts = starts[starts - history_needed >= series.starts[0]]
    if len(starts) == 0:
        raise ForecastError(
            f"no history before {before} to learn {method} forecast errors from "
            f"(needs {window_days} days plus {history_needed})"
        )
    actual = series.at(starts)
    forecast = point_forecast(series, starts, method, seasonal_days=seasonal_days)
    return pd.Series(actual - forecast, index=starts)


def price_scenarios(
    series: PriceSeries,
    starts: pd.DatetimeIndex,
    method: Method,
    n: int,
    *,
    window_days: int = 56,
    seasonal_days: int = 28,
) -> F64:
    """``(n, T)`` comonotone price scenarios (rows ascending), see the module docstring."""
    if n < 1:
        raise ForecastError("need at least one scenario")
    forecast = point_forecast(series, starts, method, seasonal_days=seasonal_days)
    errors = historical_errors(
        series, starts[0], method, window_days=window_days, seasonal_days=seasonal_days
    )
    step_s = int(series.interval.total_seconds())
    slot_of_day = ((errors.index.hour * 3600 + errors.index.minute * 60) // step_s).to_numpy()
    target_slot = ((starts.hour * 3600 + starts.minute * 60) // step_s).to_numpy()
    levels = (np.arange(n) + 0.5) / n
    by_slot: dict[int, F64] = {}
    for slot in np.unique(target_slot):
        pool = errors.to_numpy()[slot_of_day == slot]
        if pool.size == 0:
            pool = errors.to_numpy()  # no history at this time of day: use all of it
        by_slot[int(slot)] = np.quantile(pool, levels)
    out = np.empty((n, len(starts)))
    for t, slot in enumerate(target_slot):
        out[:, t] = forecast[t] + by_slot[int(slot)]
    return out
