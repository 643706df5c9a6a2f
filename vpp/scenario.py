"""Scenario files: what an analyst runs with ``vpp optimize`` (and later ``vpp backtest``).

A scenario is a YAML file validated by :class:`Scenario`. Every field carries its unit;
an error names the key path and what would be valid (``fleet.0.capacity_kwh: must be
greater than 0, got -5``). A relative ``file`` is resolved against the scenario file's
folder, so a scenario and its data travel together. The format is documented in
``docs/scenarios.md``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from market.definitions import MARKETS, RESERVES, MarketDefinition, Product, load_market
from market.prices import UNITS, PriceDataError, PriceSeries, load_price_csv


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file, key path and reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _aware(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError("give the time zone (e.g. 2019-01-01T00:00:00Z)")
    return v


class PriceSource(_Model):
    file: Path = Field(description="CSV file, relative to the scenario file's folder")
    time_column: str = Field(description="column holding the interval label")
    column: str = Field(description="column holding the price")
    unit: str = Field(description=f"one of {', '.join(UNITS)}")
    interval: Literal["start", "end"] = Field(description="the label names the start or end")
    timezone: str = Field("UTC", description="IANA zone of naive labels (Etc/GMT+8 = UTC-8)")
    time_format: str | None = Field(None, description="strptime format, if not ISO 8601")
    start: datetime | None = Field(None, description="first interval start (inclusive)")
    end: datetime | None = Field(None, description="end of the last interval (exclusive)")

    _aware_start = field_validator("start", "end")(_aware)

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        if v not in UNITS:
            raise ValueError(f"unknown unit {v!r}; use one of {', '.join(UNITS)}")
        return v


class ReservePriceSource(_Model):
    file: Path
    time_column: str
    columns: dict[Product, str] = Field(description="reserve product -> column")
    unit: str = Field(description="capacity price unit, e.g. USD/MW/h")
    interval: Literal["start", "end"] = "start"
    timezone: str = "UTC"
    time_format: str | None = None

    @field_validator("columns")
    @classmethod
    def _reserves_only(cls, v: dict[Product, str]) -> dict[Product, str]:
        bad = [p.value for p in v if p not in RESERVES]
        if bad:
            raise ValueError(f"{bad} are not reserve products (reg_up, reg_down, spinning)")
        return v


class FleetEntry(_Model):
    name: str
    count: int = Field(1, ge=1, description="identical sites of this kind")
    group: str = Field(description="market node / zone the sites bid in")
    capacity_kwh: float = Field(gt=0, description="usable energy capacity per site (kWh)")
    p_charge_max_kw: float = Field(gt=0, description="max charging power per site (kW)")
    p_discharge_max_kw: float = Field(gt=0, description="max discharging power per site (kW)")
    eff_charge: float = Field(0.95, gt=0, le=1, description="charging efficiency")
    eff_discharge: float = Field(0.95, gt=0, le=1, description="discharging efficiency")
    soc_min: float = Field(0.0, ge=0, lt=1, description="lowest SoC (0-1)")
    soc_max: float = Field(1.0, gt=0, le=1, description="highest SoC (0-1)")
    soc_initial: float = Field(0.5, ge=0, le=1, description="SoC at the start (0-1)")

    @model_validator(mode="after")
    def _window(self) -> FleetEntry:
        if self.soc_min >= self.soc_max:
            raise ValueError(f"soc_min {self.soc_min} must be below soc_max {self.soc_max}")
        if not self.soc_min <= self.soc_initial <= self.soc_max:
            raise ValueError(
                f"soc_initial {self.soc_initial} must lie in [soc_min, soc_max] = "
                f"[{self.soc_min}, {self.soc_max}]"
            )
        return self


ProductName = Literal["energy", "reg_up", "reg_down", "spinning"]


class Strategy(_Model):
    products: list[ProductName] = Field(["energy"], min_length=1)
    forecast: Literal["perfect", "persistence", "seasonal", "scenarios"] = "perfect"
    horizon: timedelta = Field(timedelta(hours=24), description="optimization horizon")
    reoptimize_every: timedelta = Field(timedelta(hours=24), description="re-solve period")
    degradation_per_mwh: float = Field(0.0, ge=0, description="currency per MWh throughput")
    reserve_deployment: dict[Product, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="expected deployed fraction of each reserve offer"
    )
    sustain_h: float = Field(1.0, gt=0, description="reserves must be sustainable (h)")
    bid_quantile: float = Field(0.9, gt=0, lt=1, description="size bids to this availability")
    scenarios: int = Field(20, ge=1, le=200, description="price scenarios (forecast: scenarios)")

    @model_validator(mode="after")
    def _energy_first(self) -> Strategy:
        if "energy" not in self.products:
            raise ValueError("products must include energy")
        if self.horizon <= timedelta(0) or self.reoptimize_every <= timedelta(0):
            raise ValueError("horizon and reoptimize_every must be positive durations")
        return self

    @property
    def reserves(self) -> list[Product]:
        return [Product(p) for p in self.products if p != "energy"]


class Scenario(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    market: str = Field(description=f"one of {', '.join(MARKETS)}")
    prices: PriceSource
    reserve_prices: ReservePriceSource | None = None
    fleet: list[FleetEntry] = Field(min_length=1)
    strategy: Strategy = Strategy()

    @field_validator("market")
    @classmethod
    def _known_market(cls, v: str) -> str:
        if v not in MARKETS:
            raise ValueError(f"unknown market {v!r}; shipped markets: {', '.join(MARKETS)}")
        return v

    @model_validator(mode="after")
    def _reserve_prices_present(self) -> Scenario:
        missing = [
            p.value
            for p in self.strategy.reserves
            if self.reserve_prices is None or p not in self.reserve_prices.columns
        ]
        if missing:
            raise ValueError(f"strategy.products {missing} need reserve_prices columns")
        return self

    @property
    def market_definition(self) -> MarketDefinition:
        return load_market(self.market)

    @property
    def groups(self) -> list[str]:
        return sorted({f.group for f in self.fleet})


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        lines.append(f"  {where}: {msg}{shown}")
    return f"scenario {path}:\n" + "\n".join(lines)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file, resolving relative data paths."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"scenario {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"scenario {path}: the top level must be a mapping")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_format_errors(path, exc)) from None
    base = path.resolve().parent
    prices = scenario.prices.model_copy(update={"file": base / scenario.prices.file})
    reserve = scenario.reserve_prices
    if reserve is not None:
        reserve = reserve.model_copy(update={"file": base / reserve.file})
    return scenario.model_copy(update={"prices": prices, "reserve_prices": reserve})


def load_prices(scenario: Scenario) -> tuple[PriceSeries, dict[Product, PriceSeries]]:
    """The energy price series and reserve price series the scenario names."""
    p = scenario.prices
    try:
        energy = load_price_csv(
            p.file,
            time_column=p.time_column,
            column=p.column,
            unit=p.unit,
            interval=p.interval,
            timezone=p.timezone,
            time_format=p.time_format,
            start=p.start,
            end=p.end,
        )
        reserves: dict[Product, PriceSeries] = {}
        r = scenario.reserve_prices
        if r is not None:
            for product, column in r.columns.items():
                series = load_price_csv(
                    r.file,
                    time_column=r.time_column,
                    column=column,
                    unit=r.unit,
                    interval=r.interval,
                    timezone=r.timezone,
                    time_format=r.time_format,
                    start=energy.start,
                    end=energy.end,
                )
                reserves[product] = series
    except PriceDataError as exc:
        raise ScenarioError(f"scenario {scenario.name}: {exc}") from None
    return energy, reserves


def energy_product(market: MarketDefinition, interval: timedelta) -> Product:
    """The market's energy product run at the price data's interval length."""
    minutes = interval.total_seconds() / 60
    for product, spec in market.products.items():
        lengths = [spec.interval_minutes, *spec.interval_minutes_options]
        if product.is_energy and minutes in lengths:
            return product
    offered = {
        p.value: [s.interval_minutes, *s.interval_minutes_options]
        for p, s in market.products.items()
        if p.is_energy
    }
    raise ScenarioError(
        f"market {market.market_id} has no energy product with {minutes:g}-minute intervals "
        f"(it runs {offered})"
    )
