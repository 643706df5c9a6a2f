"""Bids: price-quantity curves per group, interval and product, validated against a market.

A bid carries two step curves in MW at the market boundary:

- ``discharge``: supply offers in ascending price order. Segment ``k`` offers its
  ``quantity_mw`` when the clearing price is at least its price, so the offered quantity is
  non-decreasing as the price rises. Reserve products use this side for capacity offers.
- ``charge``: demand bids in descending price order. Segment ``k`` buys its quantity when
  the clearing price is at most its price: the charging quantity is non-decreasing as the
  price falls.

Every edit makes a new version; the lifecycle is in :mod:`market.lifecycle`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from market.definitions import RESERVES, MarketDefinition, Product
from market.lifecycle import BidStatus


class Side(StrEnum):
    DISCHARGE = "discharge"
    CHARGE = "charge"


class Segment(BaseModel):
    """One step of a curve: ``quantity_mw`` (incremental) at ``price_per_mwh``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_per_mwh: float = Field(allow_inf_nan=False, description="currency/MWh")
    quantity_mw: float = Field(gt=0, allow_inf_nan=False, description="incremental MW")


class BidCurve(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    discharge: list[Segment] = Field(default_factory=list, description="offers, price ascending")
    charge: list[Segment] = Field(default_factory=list, description="bids, price descending")

    def cleared(self, price_per_mwh: float) -> tuple[float, float]:
        """(discharge MW, charge MW) this curve delivers at a clearing price."""
        dis = sum(s.quantity_mw for s in self.discharge if price_per_mwh >= s.price_per_mwh)
        chg = sum(s.quantity_mw for s in self.charge if price_per_mwh <= s.price_per_mwh)
        return dis, chg

    @property
    def max_discharge_mw(self) -> float:
        return sum(s.quantity_mw for s in self.discharge)

    @property
    def max_charge_mw(self) -> float:
        return sum(s.quantity_mw for s in self.charge)


class PriceBands(BaseModel):
    """A trading day's band prices per side (markets whose band prices are fixed per
    trading day, AEMO-like): declared with the day's first bid of a group and product, and
    the only prices any bid of that day may use; rebids change quantities only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    discharge: list[float] = Field(default_factory=list, description="offer bands, ascending")
    charge: list[float] = Field(default_factory=list, description="charge bands, ascending")

    def of(self, side: Side) -> list[float]:
        return self.discharge if side == Side.DISCHARGE else self.charge

    def as_day_bands(self) -> dict[Side, list[float]]:
        return {Side.DISCHARGE: list(self.discharge), Side.CHARGE: list(self.charge)}


class Bid(BaseModel):
    """One version of a bid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bid_id: str = Field(min_length=1, max_length=100)
    market: str
    group: str
    product: Product
    interval_start: datetime
    interval_end: datetime
    version: int = Field(1, ge=1)
    status: BidStatus = BidStatus.DRAFT
    curve: BidCurve
    solve_id: str | None = None
    price_bands: PriceBands | None = Field(
        None, description="the trading day's band prices (fixed-band markets)"
    )

    @field_validator("interval_start", "interval_end")
    @classmethod
    def _aware_utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("naive datetime; use an aware UTC time")
        return v.astimezone(UTC)

    def where(self) -> str:
        start = self.interval_start.strftime("%Y-%m-%dT%H:%MZ")
        return f"bid {self.bid_id} v{self.version}, interval {start}"


class BidValidationError(ValueError):
    """The bid breaks the market's rules; ``problems`` lists every one, each located."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _is_multiple(x: float, step: float) -> bool:
    k = round(x / step)
    return math.isclose(k * step, x, rel_tol=1e-9, abs_tol=1e-9)


DayBands = Sequence[float] | Mapping[Side, Sequence[float]]


def problems(market: MarketDefinition, bid: Bid, *, day_bands: DayBands | None = None) -> list[str]:
    """Every rule of ``market`` the bid breaks (empty when valid).

    ``day_bands`` (markets with band prices fixed per trading day): the day's band prices,
    one list for both sides or one per side (a GEN and a LOAD bid each have their own).
    """
    where = bid.where()
    out: list[str] = []
    if bid.market != market.market_id:
        out.append(f"{where}: market {bid.market!r} is not {market.market_id!r}")
        return out
    try:
        market.product(bid.product)
    except KeyError as exc:
        return [f"{where}: {exc.args[0]}"]
    length = market.interval(bid.product)
    if bid.interval_end - bid.interval_start != length:
        out.append(f"{where}: the interval must last {length} for {bid.product.value}")
    day_start = market.trading_day_start_utc(market.trading_day(bid.interval_start))
    if (bid.interval_start - day_start) % length:
        out.append(f"{where}: the interval does not start on the {length} grid")
    rules = market.curve
    floor, cap = market.price_limits(bid.product)
    curve = bid.curve
    if bid.price_bands is not None:
        out.extend(band_problems(market, bid.price_bands, where, floor, cap))
        if day_bands is None:
            day_bands = bid.price_bands.as_day_bands()
    if bid.product in RESERVES and curve.charge:
        out.append(f"{where}: a {bid.product.value} bid offers capacity on the discharge side only")
    if not curve.discharge and not curve.charge:
        out.append(f"{where}: the bid has no segments")
    for side, segments, ascending in (
        (Side.DISCHARGE, curve.discharge, True),
        (Side.CHARGE, curve.charge, False),
    ):
        if len(segments) > rules.max_segments:
            out.append(
                f"{where}, {side.value}: {len(segments)} segments, the market allows "
                f"{rules.max_segments}"
            )
        for k, seg in enumerate(segments, start=1):
            at = f"{where}, {side.value} segment {k}"
            if not floor <= seg.price_per_mwh <= cap:
                out.append(
                    f"{at}: price {seg.price_per_mwh} outside [{floor}, {cap}] "
                    f"{market.currency}/MWh"
                )
            if seg.quantity_mw < rules.min_quantity_mw:
                out.append(f"{at}: quantity {seg.quantity_mw} MW below {rules.min_quantity_mw} MW")
            if not _is_multiple(seg.quantity_mw, rules.quantity_step_mw):
                out.append(
                    f"{at}: quantity {seg.quantity_mw} MW is not a multiple of "
                    f"{rules.quantity_step_mw} MW"
                )
            bands = day_bands.get(side, ()) if isinstance(day_bands, Mapping) else day_bands
            if bands is not None and not any(
                math.isclose(seg.price_per_mwh, b, abs_tol=1e-9) for b in bands
            ):
                out.append(
                    f"{at}: price {seg.price_per_mwh} is not one of the trading day's "
                    f"{side.value} price bands {list(bands)}"
                )
            if k > 1:
                prev = segments[k - 2].price_per_mwh
                if ascending and seg.price_per_mwh < prev:
                    out.append(
                        f"{at}: price {seg.price_per_mwh} < segment {k - 1} price {prev} "
                        "(offers must be non-decreasing)"
                    )
                if not ascending and seg.price_per_mwh > prev:
                    out.append(
                        f"{at}: price {seg.price_per_mwh} > segment {k - 1} price {prev} "
                        "(charge bids must be non-increasing)"
                    )
    if curve.discharge and curve.charge:
        lowest_offer = min(s.price_per_mwh for s in curve.discharge)
        highest_bid = max(s.price_per_mwh for s in curve.charge)
        if highest_bid >= lowest_offer:
            out.append(
                f"{where}: charge bid at {highest_bid} >= discharge offer at {lowest_offer} "
                "(the bid would buy and sell at the same clearing price)"
            )
    return out


def band_problems(
    market: MarketDefinition, bands: PriceBands, where: str, floor: float, cap: float
) -> list[str]:
    """What is wrong with a declaration of a trading day's band prices."""
    if not market.curve.fixed_bands_per_trading_day:
        return [f"{where}: {market.market_id} has no price bands fixed per trading day"]
    out = []
    for side in Side:
        prices = bands.of(side)
        at = f"{where}, {side.value} price bands"
        if len(prices) > market.curve.max_segments:
            out.append(f"{at}: {len(prices)} bands, the market allows {market.curve.max_segments}")
        if any(b <= a for a, b in itertools.pairwise(prices)):
            out.append(f"{at}: {prices} must be strictly ascending")
        outside = [p for p in prices if not (math.isfinite(p) and floor <= p <= cap)]
        if outside:
            out.append(f"{at}: {outside} outside [{floor}, {cap}] {market.currency}/MWh")
    return out


def validate(market: MarketDefinition, bid: Bid, *, day_bands: DayBands | None = None) -> None:
    """Raise :class:`BidValidationError` naming every broken rule."""
    found = problems(market, bid, day_bands=day_bands)
    if found:
        raise BidValidationError(found)
