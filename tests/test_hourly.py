"""Quarter-hour forecasts made per hour (market.hourly): the hour's forecast plus the shape
of its quarters, with features averaged per hour and published with their last quarter."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from market.features import FeatureSet
from market.hourly import HourlyForecaster, hourly_features, hourly_prices, quarter_shape
from market.prices import PriceSeries, held
from vpp.bidding.strategies import MethodForecaster

Q = timedelta(minutes=15)


def quarters(days: int) -> PriceSeries:
    """A day that repeats: an hourly level plus a ramp inside each hour (−6, −2, +2, +6)."""
    starts = pd.date_range("2026-01-01", periods=days * 96, freq="15min", tz="UTC")
    level = 50 + 20 * np.sin(2 * np.pi * starts.hour.to_numpy() / 24)
    ramp = np.array([-6.0, -2.0, 2.0, 6.0])[starts.minute.to_numpy() // 15]
    return PriceSeries("q", "EUR", Q, starts, level + ramp)


def test_hours_plus_their_shape_reproduce_a_repeating_quarter_hour_day() -> None:
    series = quarters(10)
    known, target = series.window(series.start, series.starts[8 * 96]), series.starts[8 * 96 :]
    f = HourlyForecaster(
        MethodForecaster("persistence_day", levels=None, history_days=7), Q
    ).forecast(known, None, pd.DatetimeIndex(target))
    assert f.point == pytest.approx(series.values[8 * 96 :])
    hourly = hourly_prices(known, 4)
    assert hourly.interval == timedelta(hours=1) and len(hourly) == 8 * 24
    assert hourly.values[0] == pytest.approx(series.values[:4].mean())


def test_held_history_has_no_shape_and_a_partial_hour_is_not_an_hour() -> None:
    hours = PriceSeries(
        "h",
        "EUR",
        timedelta(hours=1),
        pd.date_range("2026-01-01", periods=48, freq="h", tz="UTC"),
        np.arange(48.0),
    )
    q = held(hours, Q)
    assert len(q) == 192 and (q.values[:4] == 0).all() and q.values[4] == 1
    assert quarter_shape(q, q.starts[-8:], 4, 28) == pytest.approx(np.zeros(8))
    cut = q.window(q.start, q.starts[-2])  # the last hour half known
    assert len(hourly_prices(cut, 4)) == 47
    with pytest.raises(ValueError, match="cannot be replayed"):
        held(hours, timedelta(minutes=25))


def test_features_are_averaged_per_hour_and_published_with_their_last_quarter() -> None:
    starts = pd.date_range("2026-01-01 00:00", periods=8, freq="15min", tz="UTC")
    values = np.arange(16.0).reshape(2, 8)
    published = np.arange(16, dtype=np.int64).reshape(2, 8) * 10
    hourly = hourly_features(FeatureSet(("a", "b"), starts, values, published, ("MW", "MW")))
    assert list(hourly.starts) == [starts[0], starts[4]]
    assert hourly.values.tolist() == [[1.5, 5.5], [9.5, 13.5]]
    assert hourly.published.tolist() == [[30, 70], [110, 150]]
