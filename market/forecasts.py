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

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Forecast:
    """A forecaster's answer for the intervals ``starts``: the point forecast, quantiles
    at ``levels`` (ascending, ``(L, T)``) when it has them, and what it had to fill."""

    point: F64
    levels: F64 | None = None
    quantiles: F64 | None = None
    note: str | None = None
    feature_fills: int = 0


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


def error_quantiles(
    series: PriceSeries,
    starts: pd.DatetimeIndex,
    method: Method,
    levels: F64,
    *,
    window_days: int = 56,
    seasonal_days: int = 28,
) -> F64:
    """``(L, T)``: the point forecast plus the quantiles at ``levels`` of its own errors at
    the same time of day over the ``window_days`` before the first target (all of them
    where a time of day has none) — the distribution :func:`price_buckets` cuts up."""
    forecast = point_forecast(series, starts, method, seasonal_days=seasonal_days)
    errors = historical_errors(
        series, starts[0], method, window_days=window_days, seasonal_days=seasonal_days
    )
    step_s = int(series.interval.total_seconds())
    slot_of_day = ((errors.index.hour * 3600 + errors.index.minute * 60) // step_s).to_numpy()
    target_slot = ((starts.hour * 3600 + starts.minute * 60) // step_s).to_numpy()
    pool_all = errors.to_numpy()
    out = np.empty((levels.size, len(starts)))
    cache: dict[int, F64] = {}
    for t, slot in enumerate(target_slot.tolist()):
        if slot not in cache:
            pool = pool_all[slot_of_day == slot]
            cache[slot] = np.quantile(pool if pool.size else pool_all, levels)
        out[:, t] = forecast[t] + cache[slot]
    return out


@dataclass(frozen=True)
class Buckets:
    """A price distribution per interval cut into ``n`` equally likely buckets.

    Bucket ``k`` holds the prices between the quantiles at ``k/n`` and ``(k+1)/n``:
    ``lower[k]``/``upper[k]`` are its edges (the outer edges are the market's floor and
    cap), ``price[k]`` its conditional mean ``E[π | π in bucket k]``, ``prob[k] = 1/n``.
    Rows ascend in every interval (comonotone), so the scenario model reads bucket ``k``
    as scenario ``k`` and its dispatch as what a curve delivers at any price in the
    bucket (:func:`optimizer.curves.curve_for_interval` with the edges as prices)."""

    price: F64  # (n, T)
    lower: F64  # (n, T)
    upper: F64  # (n, T)
    prob: F64  # (n,)


def price_buckets(
    levels: F64, quantiles: F64, n: int, floor: float, cap: float, fine: int = 8
) -> Buckets:
    """Cut the distribution given by ``quantiles`` ``(L, T)`` at ``levels`` into ``n``
    buckets (see :class:`Buckets`).

    The quantile function ``Q(u)`` is linear between the given levels and extended
    beyond the outer ones with the slope of the nearest pair (a tail as wide as the
    neighbouring spacing); each bucket's mean is the average of ``Q`` at ``fine``
    equally spaced points inside it — the midpoint rule for ``n ∫ Q(u) du`` over the
    bucket — and is clipped to the floor and cap."""
    lv = np.asarray(levels, dtype=np.float64)
    q = np.sort(np.asarray(quantiles, dtype=np.float64), axis=0)
    if lv.size < 2:
        raise ForecastError("a price distribution needs at least two quantile levels")

    def quantile_at(u: F64) -> F64:
        out = np.empty((u.size, q.shape[1]))
        for t in range(q.shape[1]):
            col = q[:, t]
            lo_slope = (col[1] - col[0]) / (lv[1] - lv[0])
            hi_slope = (col[-1] - col[-2]) / (lv[-1] - lv[-2])
            v = np.interp(u, lv, col)
            v = np.where(u < lv[0], col[0] - (lv[0] - u) * lo_slope, v)
            v = np.where(u > lv[-1], col[-1] + (u - lv[-1]) * hi_slope, v)
            out[:, t] = v
        return out

    edges_u = np.arange(1, n) / n
    inner = quantile_at(edges_u) if n > 1 else np.empty((0, q.shape[1]))
    t_count = q.shape[1]
    lower = (
        np.vstack([np.full((1, t_count), floor), inner]) if n > 1 else np.full((1, t_count), floor)
    )
    upper = np.vstack([inner, np.full((1, t_count), cap)]) if n > 1 else np.full((1, t_count), cap)
    mid_u = (np.arange(n * fine) + 0.5) / (n * fine)
    price = quantile_at(mid_u).reshape(n, fine, t_count).mean(axis=1)
    price = np.clip(np.maximum.accumulate(price, axis=0), floor, cap)
    lower = np.clip(np.maximum.accumulate(lower, axis=0), floor, cap)
    upper = np.clip(np.maximum.accumulate(upper, axis=0), floor, cap)
    return Buckets(price, lower, upper, np.full(n, 1.0 / n))
