"""Price forecasts and price scenarios, for live bidding and backtests.

Point forecasts for the intervals ``starts`` (UTC), using only prices before them:

- ``perfect``: the actual prices (perfect foresight, the benchmark for backtests);
- ``persistence_day`` / ``persistence_week``: the price one day / one week earlier;
- ``seasonal``: the mean of the same time of day over the previous ``seasonal_days`` days
  of the same day type (weekday or weekend).

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


def _lagged(series: PriceSeries, starts: pd.DatetimeIndex, lag: timedelta) -> F64:
    try:
        return series.at(starts - lag)
    except KeyError as exc:
        raise ForecastError(f"not enough history for a {lag} lag: {exc.args[0]}") from None


def point_forecast(
    series: PriceSeries, starts: pd.DatetimeIndex, method: Method, *, seasonal_days: int = 28
) -> F64:
    """The forecast of ``series`` for the intervals ``starts``."""
    if method == "perfect":
        return series.at(starts)
    if method == "persistence_day":
        return _lagged(series, starts, DAY)
    if method == "persistence_week":
        return _lagged(series, starts, 7 * DAY)
    if method == "seasonal":
        weekend = starts.day_of_week >= 5
        total = np.zeros(len(starts))
        count = np.zeros(len(starts))
        for k in range(1, seasonal_days + 1):
            lag = starts - k * DAY
            pos = series.starts.get_indexer(lag)
            same_type = (lag.day_of_week >= 5) == weekend
            use = (pos >= 0) & same_type
            total[use] += series.values[pos[use]]
            count[use] += 1
        if (count == 0).any():
            first = starts[int(np.flatnonzero(count == 0)[0])]
            raise ForecastError(f"no history of the same day type before {first}")
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
