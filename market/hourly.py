"""Learned day-ahead forecasts for quarter-hour products, made per hour.

SDAC clears quarter-hours since delivery day 2025-10-01, but every year of history before
it is hourly, and so are the day-ahead load, wind and solar forecasts the learned
forecasters read. A LASSO (or a gradient-boosted model) per delivery quarter-hour would fit
four models to the same hourly information at four times the cost. So the learned
forecasters forecast the *hour*, and the quarter-hours take it plus the hour's shape:

    p̂_q = p̂_h(q) + s(hour of day of q, position of q in its hour)

where ``p̂_h`` is the inner forecaster's answer on hourly means (prices: the mean of each
complete hour known; features: each hour's mean, published when its latest quarter is) and
``s`` is the mean deviation of each quarter from its hour's mean over the last
``shape_days`` complete days known. On hourly history replayed as quarter-hours (each hour
held, :func:`market.prices.held`) ``s`` is zero and the forecast is the hourly one held; on
real quarter-hour prices ``s`` carries the ramps inside the hour that the hourly products
could not price. Quantiles move by the same ``s`` (the hour's spread, unchanged).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.features import FeatureSet
from market.forecasts import Forecast, ForecastError
from market.prices import PriceSeries

F64 = npt.NDArray[np.float64]
HOUR = timedelta(hours=1)


class _Inner(Protocol):
    name: str

    @property
    def lookback_days(self) -> int: ...

    def forecast(
        self, known: PriceSeries, feats: FeatureSet | None, starts: pd.DatetimeIndex
    ) -> Forecast: ...


def _first_hour(starts: pd.DatetimeIndex) -> int:
    """Position of the first interval that starts an hour (UTC; CET hours are UTC hours)."""
    on_hour = np.flatnonzero((starts.minute == 0) & (starts.second == 0))
    return int(on_hour[0]) if on_hour.size else len(starts)


def hourly_prices(known: PriceSeries, k: int) -> PriceSeries:
    """Means of the complete hours of a regular ``k``-per-hour series."""
    first = _first_hour(known.starts)
    n = (len(known) - first) // k * k
    values = np.asarray(known.values[first : first + n], dtype=np.float64).reshape(-1, k)
    return PriceSeries(
        known.name, known.currency, HOUR, known.starts[first : first + n : k], values.mean(1)
    )


def hourly_features(feats: FeatureSet) -> FeatureSet:
    """Each hour's mean of each feature, published when the hour's last value is (hourly
    or coarser features as they are)."""
    if len(feats.starts) < 2 or feats.starts[1] - feats.starts[0] >= HOUR:
        return feats
    step = feats.starts[1] - feats.starts[0]
    k = int(HOUR / step)
    first = _first_hour(feats.starts)
    n = (len(feats.starts) - first) // k * k
    values = feats.values[:, first : first + n].reshape(len(feats.names), -1, k)
    published = feats.published[:, first : first + n].reshape(len(feats.names), -1, k)
    return FeatureSet(
        feats.names,
        feats.starts[first : first + n : k],
        values.mean(axis=2),
        published.max(axis=2),
        feats.units,
    )


def quarter_shape(known: PriceSeries, starts: pd.DatetimeIndex, k: int, days: int) -> F64:
    """``s`` of the module docstring at each of ``starts`` (0 where nothing is known)."""
    first = _first_hour(known.starts)
    n = (len(known) - first) // k * k
    take = min(n, days * 24 * k)
    lo = first + n - take
    vals = np.asarray(known.values[lo : first + n], dtype=np.float64).reshape(-1, k)
    if not vals.size:
        return np.zeros(len(starts))
    dev = vals - vals.mean(axis=1, keepdims=True)
    hours = known.starts[lo : first + n : k].hour.to_numpy()
    sums = np.zeros((24, k))
    counts = np.zeros(24)
    np.add.at(sums, hours, dev)
    np.add.at(counts, hours, 1.0)
    shape = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    minutes_per = 60 // k
    return shape[starts.hour.to_numpy(), starts.minute.to_numpy() // minutes_per]


class HourlyForecaster:
    """An hourly forecaster answering for ``interval``-long products (see the module
    docstring); ``interval`` must divide the hour."""

    def __init__(self, inner: _Inner, interval: timedelta, *, shape_days: int = 28) -> None:
        k = HOUR / interval
        if k != int(k) or k < 2:
            raise ValueError(f"{interval} does not split an hour")
        self.inner = inner
        self.name = inner.name
        self.k = int(k)
        self.shape_days = shape_days

    @property
    def lookback_days(self) -> int:
        return max(self.inner.lookback_days, self.shape_days) + 1

    def forecast(
        self, known: PriceSeries, feats: FeatureSet | None, starts: pd.DatetimeIndex
    ) -> Forecast:
        hourly = hourly_prices(known, self.k)
        if len(hourly) < 2:
            raise ForecastError(f"{self.name}: no complete hour of price history")
        hours = starts.floor("h")
        targets = pd.DatetimeIndex(hours.unique())
        inner = self.inner.forecast(
            hourly, None if feats is None else hourly_features(feats), targets
        )
        pos = targets.get_indexer(hours)
        shape = quarter_shape(known, starts, self.k, self.shape_days)
        point = inner.point[pos] + shape
        quantiles = None
        if inner.quantiles is not None:
            quantiles = inner.quantiles[:, pos] + shape[None, :]
        return Forecast(point, inner.levels, quantiles, inner.note, inner.feature_fills)
