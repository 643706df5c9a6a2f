"""Market prices for the running engine: a real year of prices replayed by time of year.

The embedded engine has no live market connection; its simulated market clears against
this feed. The price at instant ``t`` is the shipped series' price at
``(t − first interval start) mod 365 days`` — real five-minute US real-time prices, with
their real shape, negative hours and spikes (see ``data/ATTRIBUTION.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.definitions import MarketDefinition, Product
from market.features import FeatureSet, gate_times
from market.prices import PriceDataError, PriceSeries, load_feature_csv, load_price_csv
from vpp.config import FeatureFileSettings, PriceFileSettings

YEAR_S = 365 * 86_400


class PriceFeed:
    def __init__(
        self,
        values: npt.NDArray[np.float64],
        first_start: datetime,
        interval: timedelta,
        currency: str = "USD",
    ) -> None:
        self.values = values
        self.first_start = first_start
        self.interval = interval
        self.currency = currency
        self._step = int(interval.total_seconds())

    def _index(self, starts: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
        offset = (starts.as_unit("s").asi8 - int(self.first_start.timestamp())) % YEAR_S
        idx: npt.NDArray[np.int64] = (offset // self._step) % len(self.values)
        return idx

    def prices(self, starts: pd.DatetimeIndex) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = self.values[self._index(starts)]
        return out

    def series(self, start: datetime, end: datetime) -> PriceSeries:
        """The replayed prices of the intervals starting in ``[start, end)``, grid-aligned."""
        step = self.interval
        first = start.astimezone(UTC)
        aligned = first - timedelta(seconds=(first.timestamp() % self._step))
        starts = pd.date_range(aligned, end.astimezone(UTC), freq=step, inclusive="left")
        return PriceSeries("replayed", self.currency, step, starts, self.prices(starts))


def _load(name: str, key: str, currency: str) -> PriceFeed:
    with files("vpp.bidding").joinpath(f"data/{name}").open("rb") as fh, np.load(fh) as data:
        values = data[key].astype(np.float64)
        first = datetime.fromtimestamp(int(data["first_start_utc"][0]), UTC)
        interval = timedelta(seconds=int(data["interval_s"][0]))
    return PriceFeed(values, first, interval, currency)


@cache
def us_realtime_feed() -> PriceFeed:
    """The shipped year of five-minute US real-time prices (USD/MWh)."""
    return _load("us_rt_2019_5min.npz", "price_usd_mwh", "USD")


@cache
def de_dayahead_feed() -> PriceFeed:
    """The shipped 2019 German day-ahead prices, hourly (EUR/MWh)."""
    return _load("de_da_2019_hourly.npz", "price_eur_mwh", "EUR")


def averaged(feed: PriceFeed, interval: timedelta) -> PriceFeed:
    """The feed averaged over longer intervals (a whole number of its own)."""
    k = interval / feed.interval
    if k != int(k) or k < 1 or len(feed.values) % int(k):
        raise ValueError(f"{interval} is not a whole number of {feed.interval} intervals")
    values = feed.values.reshape(-1, int(k)).mean(axis=1)
    return PriceFeed(values, feed.first_start, interval, feed.currency)


def _times(coarse: timedelta, fine: timedelta) -> int | None:
    """How many ``fine`` intervals one ``coarse`` interval holds (None: not whole)."""
    k = coarse / fine
    return int(k) if k >= 1 and k == int(k) else None


def held_feed(feed: PriceFeed, interval: timedelta) -> PriceFeed:
    """The feed on a finer interval, each price held over the intervals its own spans (the
    rule of :func:`market.prices.held`: SDAC's quarter-hours from hourly prices)."""
    k = _times(feed.interval, interval)
    if k is None:
        raise ValueError(f"{interval} does not divide the feed's {feed.interval} intervals")
    return PriceFeed(np.repeat(feed.values, k), feed.first_start, interval, feed.currency)


def held_features(feed: FeatureFeed, interval: timedelta) -> FeatureFeed:
    """:func:`held_feed` for feature series."""
    k = _times(feed.interval, interval)
    if k is None:
        raise ValueError(f"{interval} does not divide the features' {feed.interval} intervals")
    return FeatureFeed(
        feed.names,
        feed.units,
        feed.offsets,
        np.repeat(feed.values, k, axis=1),
        feed.first_start,
        interval,
    )


def feed_from_file(cfg: PriceFileSettings, currency: str, interval: timedelta) -> PriceFeed:
    """A price CSV as the feed, checked against the market it clears: its currency and its
    product interval, and a whole number of intervals with none missing (the loader refuses
    gaps and bad rows, naming the line)."""
    series = load_price_csv(
        cfg.file,
        time_column=cfg.time_column,
        column=cfg.column,
        unit=cfg.unit,
        interval=cfg.interval,
        timezone=cfg.timezone,
        time_format=cfg.time_format,
    )
    if series.currency != currency:
        raise PriceDataError(
            f"{cfg.file}: prices in {series.currency}, the market settles in {currency}"
        )
    feed = PriceFeed(
        np.asarray(series.values, dtype=np.float64), series.start, series.interval, currency
    )
    if series.interval != interval:
        if _times(series.interval, interval) is None:
            raise PriceDataError(
                f"{cfg.file}: {series.interval} intervals, the market's product has "
                f"{interval} (a coarser file is held over a finer product's intervals)"
            )
        feed = held_feed(feed, interval)
    return feed


def feed_for(currency: str, interval: timedelta) -> tuple[PriceFeed, str]:
    """The replayed prices for a market's currency and product interval, and what they are.

    - EUR, hourly: the German day-ahead prices of 2019 (the EU day-ahead market); at a
      quarter-hour (SDAC since 2025-10-01) the same prices held over each hour's quarters;
    - USD, five-minute: the US real-time prices (CAISO-like real time);
    - USD, hourly: the same real-time prices averaged per hour — a proxy for a day-ahead
      price, since no US day-ahead prices ship (say so wherever the figures are shown).

    Anything else (AEMO's AUD prices: none ship) raises :class:`LookupError`.
    """
    if currency == "EUR" and interval == timedelta(hours=1):
        return de_dayahead_feed(), "DE day-ahead 2019 (ENTSO-E)"
    if currency == "EUR" and _times(timedelta(hours=1), interval) is not None:
        return (
            held_feed(de_dayahead_feed(), interval),
            f"DE day-ahead 2019 (ENTSO-E), each hour held over its {interval} intervals",
        )
    if currency == "USD":
        rt = us_realtime_feed()
        if interval == rt.interval:
            return rt, "US real-time 2019 (DER-VET)"
        try:
            return averaged(rt, interval), f"US real-time 2019 averaged per {interval} (proxy)"
        except ValueError:
            pass
    raise LookupError(f"no shipped {currency} prices with {interval} intervals")


class FeatureFeed:
    """Feature series replayed by time of year like :class:`PriceFeed` (the same mapping
    from an instant to the series), with each feature's publication offset: the contract
    of a scenario's ``features:`` (:mod:`market.features`)."""

    def __init__(
        self,
        names: tuple[str, ...],
        units: tuple[str, ...],
        offsets: tuple[timedelta, ...],
        values: npt.NDArray[np.float64],
        first_start: datetime,
        interval: timedelta,
    ) -> None:
        self.names, self.units, self.offsets = names, units, offsets
        self.values = values  # (K, N)
        self.first_start = first_start
        self.interval = interval
        self._step = int(interval.total_seconds())

    def gaps(self) -> dict[str, int]:
        return {n: int(np.isnan(self.values[k]).sum()) for k, n in enumerate(self.names)}

    def window(
        self, market: MarketDefinition, product: Product, start: datetime, end: datetime
    ) -> FeatureSet:
        """The replayed features of the intervals starting in ``[start, end)``, each value
        published at its interval's gate plus the feature's offset (hide the unpublished
        with :meth:`market.features.FeatureSet.known_at`)."""
        first = start.astimezone(UTC)
        aligned = first - timedelta(seconds=(first.timestamp() % self._step))
        starts = pd.date_range(aligned, end.astimezone(UTC), freq=self.interval, inclusive="left")
        offset = (starts.as_unit("s").asi8 - int(self.first_start.timestamp())) % YEAR_S
        idx = (offset // self._step) % self.values.shape[1]
        gates = gate_times(market, product, starts)
        published = np.vstack([gates + int(o.total_seconds()) for o in self.offsets])
        return FeatureSet(self.names, starts, self.values[:, idx], published, self.units)


@cache
def de_dayahead_features() -> FeatureFeed:
    """ENTSO-E's 2019 DE day-ahead load, solar and wind forecasts, hourly (MW), beside the
    shipped DE prices: load known two hours before the gate (due 10:00 the day before),
    wind and solar one hour before (the shipped scenarios' convention, docs/scenarios.md)."""
    with (
        files("vpp.bidding").joinpath("data/de_da_2019_features_hourly.npz").open("rb") as fh,
        np.load(fh) as data,
    ):
        values = np.vstack([data[k].astype(np.float64) for k in ("load_mw", "solar_mw", "wind_mw")])
        first = datetime.fromtimestamp(int(data["first_start_utc"][0]), UTC)
        interval = timedelta(seconds=int(data["interval_s"][0]))
    return FeatureFeed(
        ("load", "solar", "wind"),
        ("MW", "MW", "MW"),
        (timedelta(hours=-2), timedelta(hours=-1), timedelta(hours=-1)),
        values,
        first,
        interval,
    )


def feature_columns(cfg: FeatureFileSettings, names: list[str]) -> dict[str, PriceSeries]:
    """The named feature columns of a feature file (a scenario's ``features:`` or
    ``bidding.features``), each with the price loader's rules; an error names the column."""
    out = {}
    for name in names:
        col = cfg.columns[name]
        try:
            out[name] = load_feature_csv(
                cfg.file,
                time_column=cfg.time_column,
                column=col.column,
                unit=col.unit,
                interval=cfg.interval,
                timezone=cfg.timezone,
                time_format=cfg.time_format,
            )
        except PriceDataError as exc:
            raise PriceDataError(f"columns.{name}: {exc}") from None
    return out


def feature_feed_from_file(cfg: FeatureFileSettings, interval: timedelta) -> FeatureFeed:
    """A feature CSV as the feed (``bidding.features``): every column on the market's
    product interval, on one grid; empty cells are gaps (reported by :meth:`gaps`)."""
    series = feature_columns(cfg, list(cfg.columns))
    first = next(iter(series.values()))
    for name, s in series.items():
        if _times(s.interval, interval) is None:
            raise PriceDataError(
                f"{cfg.file}: feature {name} has {s.interval} intervals, the market's product "
                f"has {interval} (a coarser file is held over a finer product's intervals)"
            )
        if not s.starts.equals(first.starts):
            raise PriceDataError(f"{cfg.file}: feature {name} is not on the other features' grid")
    feed = FeatureFeed(
        tuple(series),
        tuple(s.currency for s in series.values()),
        tuple(c.known for c in cfg.columns.values()),
        np.vstack([np.asarray(s.values, dtype=np.float64) for s in series.values()]),
        first.start,
        first.interval,
    )
    return feed if first.interval == interval else held_features(feed, interval)


def features_feed(
    cfg: FeatureFileSettings | None, currency: str, interval: timedelta
) -> FeatureFeed | None:
    """The features the forecaster reads: ``bidding.features`` when set, else the shipped
    DE ones where the shipped DE prices are replayed (EUR, hourly), else none."""
    if cfg is not None:
        return feature_feed_from_file(cfg, interval)
    if currency == "EUR" and _times(timedelta(hours=1), interval) is not None:
        return held_features(de_dayahead_features(), interval)
    return None


class FeedPrices(Mapping[tuple[Product, datetime], float]):
    """The feed as the ``(product, interval start) -> price`` map a simulated market clears on.

    Only ``product`` is priced; intervals must sit on the feed's grid.
    """

    def __init__(self, feed: PriceFeed, product: Product) -> None:
        self.feed = feed
        self.product = product

    def __getitem__(self, key: tuple[Product, datetime]) -> float:
        product, start = key
        if product != self.product or int(start.timestamp()) % self.feed._step:
            raise KeyError(key)
        return float(self.feed.prices(pd.DatetimeIndex([start.astimezone(UTC)]))[0])

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            return False
        return True

    def __iter__(self) -> Iterator[tuple[Product, datetime]]:
        return iter(())  # unbounded: the feed prices every grid interval

    def __len__(self) -> int:
        return 0


def market_feed(
    prices: PriceFileSettings | None, currency: str, interval: timedelta
) -> tuple[PriceFeed, str]:
    """The prices a simulated market clears on: the configured file (``bidding.prices``)
    when there is one, else the shipped prices for the currency and interval. Raises
    :class:`LookupError` (nothing ships for it, no file given) or
    :class:`market.prices.PriceDataError` (the file is wrong, with where)."""
    if prices is not None:
        return feed_from_file(prices, currency, interval), f"{prices.file} (bidding.prices)"
    return feed_for(currency, interval)
