"""Market definitions: data, not code branches.

A market is described by a YAML file in ``market/definitions/`` (interval length, horizon
and gate closure per product, price limits, bid-curve rules, how intervals are labelled on
the wire); :func:`load_market` validates it into a :class:`MarketDefinition`. Code asks the
definition (``gate_closure(...)``, ``curve.max_segments``...) and never branches on which
market it is.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Product(StrEnum):
    ENERGY_DA = "energy_da"
    ENERGY_RT = "energy_rt"
    REG_UP = "reg_up"
    REG_DOWN = "reg_down"
    SPINNING = "spinning"

    @property
    def is_energy(self) -> bool:
        return self in (Product.ENERGY_DA, Product.ENERGY_RT)


RESERVES = (Product.REG_UP, Product.REG_DOWN, Product.SPINNING)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateClosure(_Model):
    """When bids for an interval close: a daily time before the trading day, or a lead."""

    kind: Literal["daily", "lead"]
    local_time: time | None = Field(None, description="daily: market-local time of closure")
    days_before: int = Field(1, ge=0, description="daily: days before the trading day")
    lead_minutes: int | None = Field(None, ge=0, description="lead: minutes before the start")

    @model_validator(mode="after")
    def _complete(self) -> GateClosure:
        if self.kind == "daily" and self.local_time is None:
            raise ValueError("a daily gate closure needs local_time")
        if self.kind == "lead" and self.lead_minutes is None:
            raise ValueError("a lead gate closure needs lead_minutes")
        return self


class IntervalEra(_Model):
    """A past design of a product: its interval length for delivery days before ``until``."""

    until: date = Field(description="the first delivery day of the next design")
    interval_minutes: int = Field(gt=0, le=1440, description="interval length (minutes)")
    imbalance_pricing: Literal["single", "dual"] | None = Field(
        None, description="the imbalance rule of that design (None: the market's)"
    )


class ProductSpec(_Model):
    interval_minutes: int = Field(
        gt=0, le=1440, description="interval length (minutes), as the product clears today"
    )
    interval_minutes_options: list[int] = Field(
        default_factory=list, description="other interval lengths the market also runs"
    )
    earlier: list[IntervalEra] = Field(
        default_factory=list,
        description="the product's earlier designs, oldest first: delivery days before "
        "each `until` cleared at its interval length (SDAC: hourly before 2025-10-01)",
    )
    horizon_hours: int = Field(gt=0, le=168, description="intervals bid at once (hours)")
    gate_closure: GateClosure
    price_floor_per_mwh: float | None = None
    price_cap_per_mwh: float | None = None

    @model_validator(mode="after")
    def _eras(self) -> ProductSpec:
        days = [e.until for e in self.earlier]
        if days != sorted(set(days)):
            raise ValueError("earlier: designs must be oldest first, one per `until` day")
        return self

    @property
    def lengths(self) -> list[int]:
        """Every interval length the product runs or ran (minutes), today's first."""
        out = [self.interval_minutes, *self.interval_minutes_options]
        out += [e.interval_minutes for e in self.earlier if e.interval_minutes not in out]
        return out

    def interval_minutes_on(self, day: date) -> int:
        """The interval length in force on a delivery day."""
        for era in self.earlier:
            if day < era.until:
                return era.interval_minutes
        return self.interval_minutes


class CurveRules(_Model):
    """What a valid price-quantity curve looks like in this market."""

    max_segments: int = Field(gt=0, le=1000, description="segments per side of a bid")
    min_quantity_mw: float = Field(ge=0, description="smallest segment quantity (MW)")
    quantity_step_mw: float = Field(gt=0, description="quantities are multiples of this (MW)")
    fixed_bands_per_trading_day: bool = Field(
        False, description="band prices are fixed per trading day; intervals set quantities"
    )
    bidirectional: bool = Field(
        False, description="one bid carries a discharge (GEN) and a charge (LOAD) side"
    )


class MarketDefinition(_Model):
    market_id: str = Field(pattern=r"^[a-z0-9-]+$")
    name: str
    currency: str = Field(min_length=3, max_length=3)
    timezone: str = Field(description="IANA zone of the market's clock and wire labels")
    trading_day_start: time = Field(description="market-local time a trading day begins")
    label: Literal["start", "end"] = Field(description="wire labels name the start or end")
    price_floor_per_mwh: float
    price_cap_per_mwh: float
    products: dict[Product, ProductSpec]
    curve: CurveRules
    imbalance_spread_per_mwh: float = Field(
        ge=0,
        description="typical imbalance-to-clearing spread (currency/MWh): under dual "
        "pricing, the backtest's default settlement of a shortfall at price + spread, an "
        "excess at price − spread",
    )
    imbalance_pricing: Literal["single", "dual"] = Field(
        "dual",
        description="single: every deviation of a settlement period settles at one price "
        "whatever its direction (no imbalance prices ship, so the backtest takes the "
        "clearing price: a deviation neither costs nor earns beyond it); dual: shortfall "
        "and excess at the two sides of the spread",
    )

    @model_validator(mode="after")
    def _consistent(self) -> MarketDefinition:
        ZoneInfo(self.timezone)  # raises for an unknown zone
        if self.price_floor_per_mwh >= self.price_cap_per_mwh:
            raise ValueError("price_floor_per_mwh must be below price_cap_per_mwh")
        if not self.products:
            raise ValueError("a market needs at least one product")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def product(self, product: Product | str) -> ProductSpec:
        try:
            return self.products[Product(product)]
        except (KeyError, ValueError):
            offered = ", ".join(p.value for p in self.products)
            raise KeyError(
                f"market {self.market_id} has no product {product!r} (it has: {offered})"
            ) from None

    def price_limits(self, product: Product | str) -> tuple[float, float]:
        spec = self.product(product)
        floor = (
            self.price_floor_per_mwh
            if spec.price_floor_per_mwh is None
            else spec.price_floor_per_mwh
        )
        cap = self.price_cap_per_mwh if spec.price_cap_per_mwh is None else spec.price_cap_per_mwh
        return floor, cap

    def interval(self, product: Product | str) -> timedelta:
        return timedelta(minutes=self.product(product).interval_minutes)

    def trading_day(self, interval_start: datetime) -> date:
        """The trading day an interval (given by its UTC start) belongs to."""
        local = _aware(interval_start).astimezone(self.tz)
        start = datetime.combine(local.date(), self.trading_day_start, self.tz)
        return local.date() if local >= start else local.date() - timedelta(days=1)

    def trading_day_start_utc(self, day: date) -> datetime:
        return datetime.combine(day, self.trading_day_start, self.tz).astimezone(UTC)

    def gate_closure(self, product: Product | str, interval_start: datetime) -> datetime:
        """The instant (UTC) after which bids for this interval can no longer change."""
        gate = self.product(product).gate_closure
        start = _aware(interval_start)
        if gate.kind == "lead":
            assert gate.lead_minutes is not None
            return start - timedelta(minutes=gate.lead_minutes)
        assert gate.local_time is not None
        day = self.trading_day(start) - timedelta(days=gate.days_before)
        return datetime.combine(day, gate.local_time, self.tz).astimezone(UTC)

    def with_interval(self, product: Product | str, minutes: int) -> MarketDefinition:
        """This market with ``product`` run at another of its interval lengths (one it
        runs, or ran in an earlier design)."""
        spec = self.product(product)
        if minutes == spec.interval_minutes:
            return self
        if minutes not in spec.lengths:
            raise ValueError(
                f"market {self.market_id} runs {product} at {spec.lengths} minutes, not {minutes}"
            )
        products = dict(self.products)
        products[Product(product)] = spec.model_copy(update={"interval_minutes": minutes})
        update: dict[str, object] = {"products": products}
        if minutes not in spec.interval_minutes_options:  # an earlier design: its rules
            era = next(e for e in reversed(spec.earlier) if e.interval_minutes == minutes)
            if era.imbalance_pricing is not None:
                update["imbalance_pricing"] = era.imbalance_pricing
        return self.model_copy(update=update)

    def as_of(self, product: Product | str, day: date) -> MarketDefinition:
        """This market as ``product`` cleared on a delivery day (its design then)."""
        return self.with_interval(product, self.product(product).interval_minutes_on(day))


def _aware(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts.isoformat()}: market times must be aware")
    return ts.astimezone(UTC)


# A market is one file: every definitions/*.yaml is a shipped market (no list to extend).
MARKETS = tuple(
    sorted(
        f.name.removesuffix(".yaml")
        for f in files("market").joinpath("definitions").iterdir()
        if f.name.endswith(".yaml")
    )
)


class MarketDefinitionError(ValueError):
    pass


@cache
def load_market(market_id: str) -> MarketDefinition:
    """A shipped market definition by id (``caiso``, ``aemo``, ``eu-day-ahead``)."""
    if market_id not in MARKETS:
        raise MarketDefinitionError(
            f"unknown market {market_id!r}; shipped markets: {', '.join(MARKETS)}"
        )
    text = files("market").joinpath(f"definitions/{market_id}.yaml").read_text("utf-8")
    try:
        return MarketDefinition.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        raise MarketDefinitionError(f"market definition {market_id}: {exc}") from None
