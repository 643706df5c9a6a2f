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
from market.prices import PriceSeries

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


@cache
def us_realtime_feed() -> PriceFeed:
    """The shipped year of five-minute US real-time prices (USD/MWh)."""
    with (
        files("vpp.bidding").joinpath("data/us_rt_2019_5min.npz").open("rb") as fh,
        np.load(fh) as data,
    ):
        values = data["price_usd_mwh"].astype(np.float64)
        first = datetime.fromtimestamp(int(data["first_start_utc"][0]), UTC)
        interval = timedelta(seconds=int(data["interval_s"][0]))
    return PriceFeed(values, first, interval, "USD")


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
