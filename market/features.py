"""Exogenous feature series (load, wind and solar forecasts, a neighbour's price) with the
price series' contract, and when each value becomes known.

A feature is one column of numbers on a regular grid of UTC interval starts (the loader
is :func:`market.prices.load_feature_csv`: the same unit, label and time-zone rules as
prices; an empty cell is a *gap*). What makes a feature usable without look-ahead is its
**publication rule**: the value for delivery interval ``t`` is known from

    known(t) = gate(t) + offset

where ``gate(t)`` is the gate closure that closes ``t``'s product in the market (for a
day-ahead auction the daily gate of ``t``'s trading day, for a real-time market the lead
gate of ``t`` itself) and ``offset`` a signed duration per feature (default 0: known at the
gate of its own trading day — the convention of the day-ahead price-forecasting
literature, a proxy for the weather-based forecasts a trader holds then; ENTSO-E's load
forecast is due two hours earlier, its wind and solar forecasts may come later).

Before a decision at instant ``τ`` a forecaster sees :meth:`FeatureSet.known_at` ``(τ)``:
every value with ``known(t) > τ`` is hidden (``NaN``), so no feature can leak the future —
the no-look-ahead test poisons exactly those values and checks that nothing changes.

Gaps (cells the source left empty, and values not published yet where a forecaster needs
them) are filled by one documented rule, :func:`fill_gaps`: the same interval one week
earlier, else one day earlier, else the mean of what is known; every fill is counted so
the caller can report it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.definitions import MarketDefinition, Product
from market.prices import PriceSeries

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class FeatureError(ValueError):
    """Feature data that cannot be used as given; the message names the feature."""


def gate_times(market: MarketDefinition, product: Product, starts: pd.DatetimeIndex) -> I64:
    """Epoch seconds of the gate closing each interval's product (vectorised: one gate
    computation per trading day for a daily gate)."""
    gate = market.product(product).gate_closure
    secs = np.asarray(starts.as_unit("s").asi8, dtype=np.int64)
    if gate.kind == "lead":
        assert gate.lead_minutes is not None
        out: I64 = secs - 60 * int(gate.lead_minutes)
        return out
    local = starts.tz_convert(market.tz)
    days = pd.Index(local.date)
    out = np.empty(len(starts), dtype=np.int64)
    cache: dict[object, int] = {}
    for i, day in enumerate(days):
        if day not in cache:
            first = starts[i].to_pydatetime()
            day_start = market.trading_day_start_utc(market.trading_day(first))
            cache[day] = int(market.gate_closure(product, day_start).timestamp())
        out[i] = cache[day]
    return out


@dataclass(frozen=True)
class FeatureSet:
    """Feature series on one grid: ``values[k]`` is feature ``names[k]``, ``NaN`` a gap;
    ``published[k]`` the epoch second each value becomes known."""

    names: tuple[str, ...]
    starts: pd.DatetimeIndex
    values: F64  # (K, T)
    published: I64  # (K, T)
    units: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.names), len(self.starts)):
            raise FeatureError(
                f"features: values {self.values.shape} for {len(self.names)} names and "
                f"{len(self.starts)} intervals"
            )

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise FeatureError(
                f"no feature {name!r}; the feature file gives {', '.join(self.names)}"
            ) from None

    def select(self, names: Sequence[str]) -> FeatureSet:
        ks = [self.index(n) for n in names]
        return FeatureSet(
            tuple(names),
            self.starts,
            self.values[ks],
            self.published[ks],
            tuple(self.units[k] for k in ks),
        )

    def known_at(self, instant: datetime | float) -> FeatureSet:
        """Every value published after ``instant`` hidden (``NaN``)."""
        t = instant if isinstance(instant, int | float) else instant.timestamp()
        values = np.where(self.published <= t, self.values, np.nan)
        return FeatureSet(self.names, self.starts, values, self.published, self.units)

    def poisoned_after(self, instant: datetime, seed: int = 12345) -> FeatureSet:
        """Every value published after ``instant`` replaced by noise (the no-look-ahead
        test: a decision that reads any of them changes)."""
        late = self.published > instant.timestamp()
        rng = np.random.default_rng(seed)
        values = self.values.copy()
        values[late] = rng.uniform(-1e5, 1e5, int(late.sum()))
        return FeatureSet(self.names, self.starts, values, self.published, self.units)

    def on(self, starts: pd.DatetimeIndex) -> F64:
        """``(K, len(starts))`` values at those interval starts (``NaN`` off the grid)."""
        pos = self.starts.get_indexer(starts)
        out = np.full((len(self.names), len(starts)), np.nan)
        ok = pos >= 0
        out[:, ok] = self.values[:, pos[ok]]
        return out

    def gaps(self) -> dict[str, int]:
        """Empty values per feature (what the source left out)."""
        return {n: int(np.isnan(self.values[k]).sum()) for k, n in enumerate(self.names)}


def feature_set(
    series: Mapping[str, PriceSeries],
    market: MarketDefinition,
    product: Product,
    offsets: Mapping[str, timedelta] | None = None,
) -> FeatureSet:
    """Series (one grid) and their publication offsets → a :class:`FeatureSet`."""
    if not series:
        raise FeatureError("features: no series")
    names = tuple(series)
    first = series[names[0]]
    for name in names[1:]:
        s = series[name]
        if s.interval != first.interval or not s.starts.equals(first.starts):
            raise FeatureError(f"feature {name!r} is not on the grid of {names[0]!r}")
    gates = gate_times(market, product, first.starts)
    offsets = offsets or {}
    published = np.vstack(
        [gates + int(offsets.get(n, timedelta(0)).total_seconds()) for n in names]
    )
    values = np.vstack([np.asarray(series[n].values, dtype=np.float64) for n in names])
    return FeatureSet(
        names, first.starts, values, published, tuple(series[n].currency for n in names)
    )


def fill_gaps(values: F64, per_day: int) -> tuple[F64, int]:
    """``values`` (K, T) with every ``NaN`` filled, and how many were.

    The rule: the same interval one week earlier (``7·per_day`` positions), else one day
    earlier, else the mean of the feature's known values (0 if none). Earlier fills feed
    later ones, so a gap of several weeks repeats the last known week. Only values at
    earlier positions are read — filling never looks ahead."""
    out = np.array(values, dtype=np.float64, copy=True)
    holes = np.isnan(out)
    count = int(holes.sum())
    if not count:
        return out, 0
    for k in range(out.shape[0]):
        row = out[k]
        missing = np.flatnonzero(np.isnan(row))
        known = row[~np.isnan(row)]
        mean = float(known.mean()) if known.size else 0.0
        for t in missing.tolist():
            for lag in (7 * per_day, per_day):
                if t - lag >= 0 and not np.isnan(row[t - lag]):
                    row[t] = row[t - lag]
                    break
            else:
                row[t] = mean
    return out, count
