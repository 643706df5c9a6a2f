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

from market.definitions import Product
from market.prices import PriceDataError, PriceSeries, load_price_csv
from vpp.config import PriceFileSettings

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
    if series.interval != interval:
        raise PriceDataError(
            f"{cfg.file}: {series.interval} intervals, the market's product has {interval}"
        )
    return PriceFeed(np.asarray(series.values, dtype=np.float64), series.start, interval, currency)


def feed_for(currency: str, interval: timedelta) -> tuple[PriceFeed, str]:
    """The replayed prices for a market's currency and product interval, and what they are.

    - EUR, hourly: the German day-ahead prices of 2019 (the EU day-ahead market);
    - USD, five-minute: the US real-time prices (CAISO-like real time);
    - USD, hourly: the same real-time prices averaged per hour — a proxy for a day-ahead
      price, since no US day-ahead prices ship (say so wherever the figures are shown).

    Anything else (AEMO's AUD prices: none ship) raises :class:`LookupError`.
    """
    if currency == "EUR" and interval == timedelta(hours=1):
        return de_dayahead_feed(), "DE day-ahead 2019 (ENTSO-E)"
    if currency == "USD":
        rt = us_realtime_feed()
        if interval == rt.interval:
            return rt, "US real-time 2019 (DER-VET)"
        try:
            return averaged(rt, interval), f"US real-time 2019 averaged per {interval} (proxy)"
        except ValueError:
            pass
    raise LookupError(f"no shipped {currency} prices with {interval} intervals")


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
