"""Market adapters and the transaction log that makes every exchange safe to repeat.

:class:`LoggedMarket` wraps any :class:`MarketAdapter`. Before an exchange it writes the
request to the :class:`TxLog` under a caller-chosen, stable ``tx_id``; after it, the
response. Asked again for the same ``tx_id`` it returns the recorded response instead of
talking to the market, so a retry or a restart never submits twice. A request without a
response (the engine died mid-call) is resolved by asking the market for the outcome of
that ``tx_id`` (:meth:`MarketAdapter.lookup`) — adapters are required to be idempotent per
``tx_id`` — and never by blindly resending under a new id.

:class:`SimulatedMarket` clears bids against historical prices (see
:mod:`market.clearing`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Protocol

from market.bids import Bid, PriceBands, Side, problems
from market.clearing import Award, clear_bid
from market.definitions import MarketDefinition, Product


@dataclass(frozen=True, slots=True)
class SubmitResult:
    accepted: list[str]  # bid ids
    refused: dict[str, str]  # bid id -> reason

    def to_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": self.refused}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SubmitResult:
        return cls(list(data["accepted"]), dict(data["refused"]))


class TxLog(Protocol):
    """Where market exchanges are recorded (the engine's store implements it)."""

    def record_request(
        self, tx_id: str, market: str, operation: str, request: dict[str, Any]
    ) -> None: ...

    def record_response(
        self, tx_id: str, market: str, operation: str, response: dict[str, Any]
    ) -> None: ...

    def recorded(self, tx_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(request, response) recorded for ``tx_id`` (None where absent)."""
        ...


class MemoryTxLog:
    """A :class:`TxLog` in memory (tests, backtests)."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.responses: dict[str, dict[str, Any]] = {}

    def record_request(
        self, tx_id: str, market: str, operation: str, request: dict[str, Any]
    ) -> None:
        self.requests.setdefault(tx_id, request)

    def record_response(
        self, tx_id: str, market: str, operation: str, response: dict[str, Any]
    ) -> None:
        self.responses.setdefault(tx_id, response)

    def recorded(self, tx_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return self.requests.get(tx_id), self.responses.get(tx_id)


class MarketAdapter(Protocol):
    market: MarketDefinition

    def submit(self, tx_id: str, bids: Sequence[Bid]) -> SubmitResult:
        """Submit bids; idempotent per ``tx_id``."""
        ...

    def lookup(self, tx_id: str) -> SubmitResult | None:
        """The outcome of an earlier ``submit`` with this ``tx_id``, None if never received."""
        ...

    def awards(self, start: datetime, end: datetime) -> list[Award]:
        """Awards for accepted bids on intervals starting in ``[start, end)``."""
        ...


def _bid_json(bid: Bid) -> dict[str, Any]:
    return bid.model_dump(mode="json")


class LoggedMarket:
    """An adapter whose submissions go through the transaction log (see module docstring)."""

    def __init__(self, adapter: MarketAdapter, log: TxLog) -> None:
        self.adapter = adapter
        self.log = log
        self.market = adapter.market

    def submit(self, tx_id: str, bids: Sequence[Bid]) -> SubmitResult:
        market_id = self.market.market_id
        request, response = self.log.recorded(tx_id)
        if response is not None:
            return SubmitResult.from_json(response)  # replay
        if request is None:
            self.log.record_request(
                tx_id, market_id, "submit", {"bids": [_bid_json(b) for b in bids]}
            )
            result = self.adapter.submit(tx_id, bids)
        else:
            # Sent before a crash, outcome unknown: ask the market, never resend blindly.
            found = self.adapter.lookup(tx_id)
            result = found if found is not None else self.adapter.submit(tx_id, bids)
        self.log.record_response(tx_id, market_id, "submit", result.to_json())
        return result

    def awards(self, tx_id: str, start: datetime, end: datetime) -> list[Award]:
        market_id = self.market.market_id
        _, response = self.log.recorded(tx_id)
        if response is not None:
            return [_award_from_json(a) for a in response["awards"]]
        self.log.record_request(
            tx_id, market_id, "awards", {"start": start.isoformat(), "end": end.isoformat()}
        )
        awards = self.adapter.awards(start, end)
        self.log.record_response(
            tx_id, market_id, "awards", {"awards": [_award_json(a) for a in awards]}
        )
        return awards


def _award_json(a: Award) -> dict[str, Any]:
    out = asdict(a)
    out["product"] = a.product.value
    out["interval_start"] = a.interval_start.isoformat()
    out["interval_end"] = a.interval_end.isoformat()
    return out


def _award_from_json(d: Mapping[str, Any]) -> Award:
    return Award(
        award_id=d["award_id"],
        bid_id=d["bid_id"],
        bid_version=int(d["bid_version"]),
        market=d["market"],
        group=d["group"],
        product=Product(d["product"]),
        interval_start=datetime.fromisoformat(d["interval_start"]),
        interval_end=datetime.fromisoformat(d["interval_end"]),
        discharge_mw=float(d["discharge_mw"]),
        charge_mw=float(d["charge_mw"]),
        price_per_mwh=float(d["price_per_mwh"]),
    )


class SimulatedMarket:
    """Validates submitted bids against the market rules and clears them on given prices.

    With a ``clock`` it also enforces gate closure: a bid submitted at or after its
    interval's gate is refused, as a real market refuses it.
    """

    def __init__(
        self,
        market: MarketDefinition,
        prices: Mapping[tuple[Product, datetime], float],
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.market = market
        self.prices = prices
        self.clock = clock
        self._outcomes: dict[str, SubmitResult] = {}
        self._accepted: dict[tuple[str, Product, datetime], Bid] = {}
        self._by_interval: dict[datetime, set[tuple[str, Product, datetime]]] = {}
        self._times: list[datetime] = []  # the intervals with accepted bids, sorted
        # fixed-band markets: each (group, product, trading day)'s bands, fixed by the first
        # accepted bid that declared them
        self._bands: dict[tuple[str, Product, date], PriceBands] = {}
        self.submissions = 0  # how many times a tx reached the market (for tests)

    def submit(self, tx_id: str, bids: Sequence[Bid]) -> SubmitResult:
        if tx_id in self._outcomes:
            return self._outcomes[tx_id]
        self.submissions += 1
        accepted: list[str] = []
        refused: dict[str, str] = {}
        now = self.clock() if self.clock is not None else None
        for bid in bids:
            found = self._band_rules(bid) or problems(self.market, bid, day_bands=self._day(bid))
            if now is not None and not found:
                gate = self.market.gate_closure(bid.product, bid.interval_start)
                if now >= gate:
                    found = [f"{bid.where()}: the gate closed at {gate.isoformat()}"]
            if found:
                refused[bid.bid_id] = "; ".join(found)
                continue
            # A later submission for the same group/product/interval replaces the earlier.
            self._accept(bid)
            accepted.append(bid.bid_id)
        result = SubmitResult(accepted, refused)
        self._outcomes[tx_id] = result
        return result

    def lookup(self, tx_id: str) -> SubmitResult | None:
        return self._outcomes.get(tx_id)

    def restore(
        self, exchanges: Sequence[tuple[str, Mapping[str, Any] | None, Mapping[str, Any] | None]]
    ) -> int:
        """Rebuild the order book from a transaction log's submissions (a restart keeps the
        bids the market accepted, so their awards still come); returns bids restored."""
        restored = 0
        for tx_id, request, response in exchanges:
            if request is None or response is None:
                continue
            result = SubmitResult.from_json(response)
            self._outcomes[tx_id] = result
            accepted = set(result.accepted)
            for data in request.get("bids", []):
                bid = Bid.model_validate(data)
                if bid.bid_id in accepted:
                    self._accept(bid)
                    restored += 1
        return restored

    def _band_key(self, bid: Bid) -> tuple[str, Product, date]:
        return (bid.group, bid.product, self.market.trading_day(bid.interval_start))

    def _day(self, bid: Bid) -> dict[Side, list[float]] | None:
        fixed = self._bands.get(self._band_key(bid))
        return fixed.as_day_bands() if fixed is not None else None

    def _band_rules(self, bid: Bid) -> list[str]:
        """A fixed-band market's day rules: the day's first bid declares the bands, every
        later bid of that day uses them (and may repeat, never change, the declaration)."""
        if not self.market.curve.fixed_bands_per_trading_day:
            return []
        key = self._band_key(bid)
        fixed = self._bands.get(key)
        if fixed is None and bid.price_bands is None:
            return [
                f"{bid.where()}: the first bid of trading day {key[2]} for {bid.group} "
                f"{bid.product.value} must declare the day's price bands"
            ]
        if fixed is not None and bid.price_bands is not None and bid.price_bands != fixed:
            return [
                f"{bid.where()}: trading day {key[2]}'s price bands are fixed at "
                f"{fixed.model_dump()}; a rebid changes quantities only"
            ]
        return []

    def _accept(self, bid: Bid) -> None:
        if self.market.curve.fixed_bands_per_trading_day and bid.price_bands is not None:
            self._bands.setdefault(self._band_key(bid), bid.price_bands)
        key = (bid.group, bid.product, bid.interval_start)
        self._accepted[key] = bid
        if bid.interval_start not in self._by_interval:
            self._by_interval[bid.interval_start] = set()
            bisect.insort(self._times, bid.interval_start)
        self._by_interval[bid.interval_start].add(key)

    def awards(self, start: datetime, end: datetime) -> list[Award]:
        """Every accepted bid of an interval starting in ``[start, end)`` cleared on its
        price, by interval, group and product (looked up by interval: no scan of the book)."""
        times = self._times
        intervals = times[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)]
        out = []
        for t in intervals:
            for key in sorted(self._by_interval[t], key=lambda k: (k[0], k[1].value)):
                product = key[1]
                if (product, t) in self.prices:
                    out.append(clear_bid(self._accepted[key], self.prices[(product, t)]))
        return out
