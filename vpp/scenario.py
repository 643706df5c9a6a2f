"""Scenario files: what an analyst runs with ``vpp optimize`` and ``vpp backtest``.

A scenario is a YAML file validated by :class:`Scenario`. Every field carries its unit;
an error names the key path and what would be valid (``fleet.0.capacity_kwh: must be
greater than 0, got -5``). A relative ``file`` is resolved against the scenario file's
folder, so a scenario and its data travel together. The format is documented in
``docs/scenarios.md``. Every key is honoured by the command it is meant for, or refused
by the one it is not (``vpp optimize`` computes the perfect-foresight bound and refuses a
forecast strategy, naming the key).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from market.definitions import MARKETS, RESERVES, MarketDefinition, Product, load_market
from market.features import FeatureError, FeatureSet, feature_set
from market.prices import (
    CAPACITY_UNITS,
    ENERGY_UNITS,
    UNITS,
    PriceDataError,
    PriceSeries,
    held,
    load_power_csv,
    load_price_csv,
)
from vpp.bidding.feed import feature_columns
from vpp.config import (
    DispatchSettings,
    FeatureColumnSettings,
    FeatureFileSettings,
    PeakShavingSettings,
)
from vpp.twins.registry import Tariff


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
    unit: str = Field(description=f"one of {', '.join(ENERGY_UNITS)}")
    interval: Literal["start", "end"] = Field(description="the label names the start or end")
    timezone: str = Field("UTC", description="IANA zone of naive labels (Etc/GMT+8 = UTC-8)")
    time_format: str | None = Field(None, description="strptime format, if not ISO 8601")
    start: datetime | None = Field(None, description="first interval start (inclusive)")
    end: datetime | None = Field(None, description="end of the last interval (exclusive)")
    replay_interval: timedelta | None = Field(
        None,
        description="replay the file on this finer interval (e.g. PT15M: hourly history as "
        "the quarter-hours SDAC clears since 2025-10-01), each price held over the "
        "intervals its own spans (market.prices.held); features are held the same way",
    )

    _aware_start = field_validator("start", "end")(_aware)

    @field_validator("replay_interval")
    @classmethod
    def _positive(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and not timedelta(0) < v <= timedelta(days=1):
            raise ValueError("must be longer than zero and at most a day (e.g. PT15M)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> PriceSource:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(
                f"end {self.end.isoformat()} must be after start {self.start.isoformat()}"
            )
        return self

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        if v not in ENERGY_UNITS:
            raise ValueError(
                f"unknown energy price unit {v!r}; use one of {', '.join(ENERGY_UNITS)}"
            )
        return v


class ReservePriceSource(_Model):
    file: Path
    time_column: str
    columns: dict[Product, str] = Field(description="reserve product -> column")
    unit: str = Field(description=f"capacity price unit, one of {', '.join(CAPACITY_UNITS)}")
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

    @field_validator("unit")
    @classmethod
    def _capacity_unit(cls, v: str) -> str:
        if v not in CAPACITY_UNITS:
            raise ValueError(
                f"unknown capacity price unit {v!r}; use one of {', '.join(CAPACITY_UNITS)}"
            )
        return v


class SeriesSource(_Model):
    """A site class's power profile (load or PV output) in a CSV column."""

    file: Path = Field(description="CSV file, relative to the scenario file's folder")
    time_column: str
    column: str
    unit: Literal["kW", "MW"] = "kW"
    interval: Literal["start", "end"] = Field(description="the label names the start or end")
    timezone: str = Field("UTC", description="IANA zone of naive labels")
    time_format: str | None = None
    scale: float = Field(1.0, ge=0, description="multiply every value (per site)")


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
    load: SeriesSource | None = Field(None, description="site load (backtest; kW per site)")
    pv: SeriesSource | None = Field(None, description="PV output (backtest; kW per site)")
    tariff: Tariff | None = Field(
        None, description="retail tariff: these sites peak-shave against it (backtest)"
    )

    @model_validator(mode="after")
    def _window(self) -> FleetEntry:
        if self.soc_min >= self.soc_max:
            raise ValueError(f"soc_min {self.soc_min} must be below soc_max {self.soc_max}")
        if not self.soc_min <= self.soc_initial <= self.soc_max:
            raise ValueError(
                f"soc_initial {self.soc_initial} must lie in [soc_min, soc_max] = "
                f"[{self.soc_min}, {self.soc_max}]"
            )
        if self.tariff is not None and self.load is None:
            raise ValueError("a tariff needs the sites' load (load:) to shave peaks from")
        return self


ProductName = Literal["energy", "reg_up", "reg_down", "spinning"]


StrategyName = Literal[
    "perfect", "persistence_day", "persistence_week", "seasonal", "lear", "learned", "scenarios"
]
BaseForecast = Literal["persistence_day", "persistence_week", "seasonal", "lear", "learned"]


# A scenario's feature series have the engine's contract (bidding.features): one model.
FeatureColumn = FeatureColumnSettings
FeatureSource = FeatureFileSettings


class Learned(_Model):
    """The ``learned`` forecaster's walk-forward training (quantile gradient boosting)."""

    train_days: int = Field(
        728, ge=28, le=3650, description="days of history before each decision trained on"
    )
    retrain_every: timedelta = Field(timedelta(days=28), description="retrain period")

    @model_validator(mode="after")
    def _positive(self) -> Learned:
        if self.retrain_every < timedelta(days=1):
            raise ValueError("retrain_every must be at least a day (P1D)")
        return self


class Lear(_Model):
    """The ``lear`` forecaster: LASSO per delivery slot, one model per calibration window
    (the forecasts of the windows are averaged)."""

    windows_days: list[Annotated[int, Field(ge=28, le=3650)]] = Field(
        [364, 1456], min_length=1, description="calibration windows (days before the decision)"
    )


class Strategy(_Model):
    products: list[ProductName] = Field(["energy"], min_length=1)
    forecast: StrategyName | list[StrategyName] = Field(
        "perfect", description="the strategy (or strategies to compare) — see docs/scenarios.md"
    )
    horizon: timedelta | None = Field(
        None, description="each decision optimizes this far ahead (None: see docs)"
    )
    reoptimize_every: timedelta | None = Field(
        None, description="decision cadence (None: the whole period as one model in optimize)"
    )
    window_clock: Literal["period", "trading_day", "standard_time"] = Field(
        "period",
        description="where a real-time cadence starts: the period's first interval, each "
        "market-local trading day (23/25 h on clock changes), or midnight in the market "
        "zone's standard time all year (DER-VET's windows); see docs/scenarios.md",
    )
    terminal: Literal["free", "initial", "value"] | Annotated[float, Field(ge=0, le=1)] = Field(
        "free", description="state at the end of each optimization window"
    )
    degradation_per_mwh: float = Field(0.0, ge=0, description="currency per MWh throughput")
    vom_per_mwh: float = Field(
        0.0, ge=0, description="variable O&M, currency per MWh discharged (on top of degradation)"
    )
    mip_rel_gap: float = Field(
        1e-6,
        ge=0,
        le=1e-2,
        description="HiGHS relative MIP gap (binaries only where prices are negative)",
    )
    simultaneous: Literal["forbid", "time_share"] = Field(
        "forbid",
        description="forbid: no charge and discharge in one interval (binaries where "
        "prices are negative; exact, what DER-VET and the sites' net setpoints do); "
        "time_share: the interval's average may be any mix (one LP; optimizer.blocks "
        "proves it reachable by alternating within the interval)",
    )
    reserve_deployment: dict[Product, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="expected deployed fraction of each reserve offer"
    )
    sustain_h: float = Field(1.0, gt=0, description="reserves must be sustainable (h)")
    bid_quantile: float = Field(0.9, description="size bids to P50 (0.5) or P90 (0.9) health")
    scenarios: int = Field(10, ge=1, le=200, description="price buckets of the curve strategy")
    base_forecast: BaseForecast = Field(
        "lear", description="the forecaster the scenarios (curve) strategy bids on"
    )
    anchor: bool = Field(
        True, description="curves dispatch at least their own forecast's schedule (scenarios)"
    )
    features: list[str] = Field(
        [], description="feature names (from features.columns) the forecasters use"
    )
    backup_reserve_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of each group's energy kept back (backup)"
    )
    history_days: int = Field(28, ge=1, le=365, description="forecast-error history (days)")
    learned: Learned = Learned()
    lear: Lear = Lear()

    @field_validator("products")
    @classmethod
    def _energy_first(cls, v: list[ProductName]) -> list[ProductName]:
        if "energy" not in v:
            raise ValueError("products must include energy")
        return v

    @field_validator("horizon", "reoptimize_every")
    @classmethod
    def _positive(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v <= timedelta(0):
            raise ValueError("must be a positive duration")
        return v

    @field_validator("bid_quantile")
    @classmethod
    def _quantile(cls, v: float) -> float:
        if v not in (0.5, 0.9):
            raise ValueError("must be 0.5 or 0.9 (the fleet reports P50 and P90)")
        return v

    @field_validator("forecast")
    @classmethod
    def _once(cls, v: StrategyName | list[StrategyName]) -> StrategyName | list[StrategyName]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"list each strategy once, at least one: {v}")
        return v

    @property
    def names(self) -> list[StrategyName]:
        return list(self.forecast) if isinstance(self.forecast, list) else [self.forecast]

    @property
    def reserves(self) -> list[Product]:
        return [Product(p) for p in self.products if p != "energy"]


class Faults(_Model):
    """Faults the simulated fleet injects in a backtest (probabilities unless a unit)."""

    offline_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of sites silent at any time, on average"
    )
    offline_mean_s: float = Field(3600.0, gt=0, description="mean length of a silent period")
    telemetry_gap: float = Field(0.0, ge=0, le=1, description="a reading is lost")
    ack_loss: float = Field(0.0, ge=0, le=1, description="an ack never arrives")
    ack_delay_s: float = Field(0.5, ge=0, le=60, description="acks leave this long after")
    reject: float = Field(0.0, ge=0, le=1, description="a site declines a command")
    offline_mid_interval: float = Field(
        0.0, ge=0, le=1, description="after a command, a site drops out before it ends"
    )


class Imbalance(_Model):
    pricing: Literal["single", "dual"] | None = Field(
        None,
        description="single: a deviation settles at one price whatever its direction (the "
        "clearing price: no imbalance prices ship); dual: shortfall pays price + spread, "
        "excess earns price − spread (None: the market's rule)",
    )
    spread_per_mwh: float | None = Field(
        None,
        ge=0,
        description="dual pricing: shortfall pays price + spread, excess earns price − spread "
        "(None: the market's default; a spread given here means dual pricing)",
    )

    @model_validator(mode="after")
    def _spread_is_dual(self) -> Imbalance:
        if self.pricing == "single" and self.spread_per_mwh is not None:
            raise ValueError(
                "spread_per_mwh applies to dual pricing; single pricing settles every "
                "deviation at one price (remove one of the two)"
            )
        return self


class Backtest(_Model):
    """How ``vpp backtest`` replays the scenario (``vpp optimize`` ignores nothing here:
    it computes the fault-free perfect-foresight bound and says so)."""

    decision_lead: timedelta = Field(
        timedelta(minutes=30), description="decisions are taken this long before the gate"
    )
    telemetry_interval_s: float = Field(900.0, ge=60, le=3600, description="site reporting")
    seed: int = Field(0, ge=0, description="every random draw derives from it")
    faults: Faults = Faults()
    imbalance: Imbalance = Imbalance()
    # the engine's own settings models: a backtest dispatches and peak-shaves exactly as
    # the engine would with the same values
    dispatch: DispatchSettings = DispatchSettings()
    peak_shaving: PeakShavingSettings = PeakShavingSettings()
    report_days: int = Field(7, ge=1, le=62, description="days shown in the report's plots")

    @model_validator(mode="after")
    def _lead(self) -> Backtest:
        if self.decision_lead < timedelta(0):
            raise ValueError("decision_lead must not be negative")
        if self.decision_lead.total_seconds() % self.telemetry_interval_s:
            raise ValueError(
                "decision_lead must be a multiple of telemetry_interval_s (the decision "
                "reads the fleet's telemetry of that instant)"
            )
        ps = self.peak_shaving
        if ps.replan_every_s % ps.interval_s:
            raise ValueError(
                "peak_shaving.replan_every_s must be a multiple of its interval_s (a backtest "
                "re-plans on interval boundaries)"
            )
        return self


class Scenario(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    market: str = Field(description=f"one of {', '.join(MARKETS)}")
    prices: PriceSource
    reserve_prices: ReservePriceSource | None = None
    features: FeatureSource | None = None
    fleet: list[FleetEntry] = Field(min_length=1)
    strategy: Strategy = Strategy()
    backtest: Backtest = Backtest()

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

    @model_validator(mode="after")
    def _features_named(self) -> Scenario:
        given = set(self.features.columns) if self.features is not None else set()
        unknown = [n for n in self.strategy.features if n not in given]
        if unknown:
            raise ValueError(
                f"strategy.features {unknown} are not in features.columns "
                f"({', '.join(sorted(given)) or 'no features: key'})"
            )
        return self

    @model_validator(mode="after")
    def _prices_in_the_markets_currency(self) -> Scenario:
        """A price file in another currency than the market's would be booked as the
        market's money (EUR prices on caiso were optimized and reported in USD)."""
        currency = load_market(self.market).currency
        for key, src in (("prices", self.prices), ("reserve_prices", self.reserve_prices)):
            if src is not None and UNITS[src.unit][0] != currency:
                raise ValueError(
                    f"{key}.unit {src.unit!r} is in {UNITS[src.unit][0]}, but market "
                    f"{self.market!r} settles in {currency}; give the prices in {currency}"
                )
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


M = TypeVar("M", bound=BaseModel)


def read_model(path: Path, model: type[M], what: str = "scenario") -> M:
    """Read a YAML file into ``model``; :class:`ScenarioError` names the file and every
    bad key path (shared by scenarios and bill what-ifs)."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{what} {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{what} {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{what} {path}: the top level must be a mapping")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_format_errors(path, exc).replace("scenario ", f"{what} ", 1)) from None


def load_series(src: SeriesSource, key: str) -> PriceSeries:
    """A load or PV series a :class:`SeriesSource` names, scaled; errors name ``key``."""
    try:
        s = load_power_csv(
            src.file,
            time_column=src.time_column,
            column=src.column,
            unit=src.unit,
            interval=src.interval,
            timezone=src.timezone,
            time_format=src.time_format,
        )
    except (PriceDataError, FileNotFoundError) as exc:
        raise ScenarioError(f"{key}: {exc}") from None
    return PriceSeries(s.name, s.currency, s.interval, s.starts, s.values * src.scale)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file, resolving relative data paths."""
    scenario = read_model(path, Scenario)
    base = path.resolve().parent
    prices = scenario.prices.model_copy(update={"file": base / scenario.prices.file})
    reserve = scenario.reserve_prices
    if reserve is not None:
        reserve = reserve.model_copy(update={"file": base / reserve.file})
    fleet = [
        f.model_copy(
            update={
                k: src.model_copy(update={"file": base / src.file})
                for k in ("load", "pv")
                if (src := getattr(f, k)) is not None
            }
        )
        for f in scenario.fleet
    ]
    features = scenario.features
    if features is not None:
        features = features.model_copy(update={"file": base / features.file})
    return scenario.model_copy(
        update={"prices": prices, "reserve_prices": reserve, "fleet": fleet, "features": features}
    )


def load_features(
    scenario: Scenario, market: MarketDefinition, product: Product
) -> FeatureSet | None:
    """The scenario's feature series (only those its strategy names) with their publication
    rule; ``None`` when it names none. Errors name the key."""
    src = scenario.features
    names = scenario.strategy.features
    if src is None or not names:
        return None
    try:
        series = feature_columns(src, names)
    except (PriceDataError, FileNotFoundError) as exc:
        raise ScenarioError(f"scenario {scenario.name}: features: {exc}") from None
    series = {n: replayed(scenario, s) for n, s in series.items()}
    try:
        return feature_set(series, market, product, {n: src.columns[n].known for n in names})
    except FeatureError as exc:
        raise ScenarioError(f"scenario {scenario.name}: features: {exc}") from None


def replayed(scenario: Scenario, series: PriceSeries) -> PriceSeries:
    """A series of the scenario (its prices, or a feature) on the interval the scenario
    replays (``prices.replay_interval``): held (market.prices.held) when that is finer
    than the series' own; features are also held onto finer prices of the file itself."""
    target = scenario.prices.replay_interval
    if target is None or target >= series.interval:
        return series
    try:
        return held(series, target)
    except PriceDataError as exc:
        raise ScenarioError(f"scenario {scenario.name}: prices.replay_interval: {exc}") from None


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
        energy = replayed(scenario, energy)
        reserves: dict[Product, PriceSeries] = {}
        r = scenario.reserve_prices
        if r is not None and p.replay_interval is not None:
            raise ScenarioError(
                f"scenario {scenario.name}: prices.replay_interval: reserve prices are "
                "replayed on their own interval only; remove one of the two"
            )
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


def energy_market(
    market: MarketDefinition, interval: timedelta
) -> tuple[MarketDefinition, Product]:
    """The market's energy product run at the price data's interval length, and the market
    with that product at that length (hourly history of a market that clears quarter-hours
    today is replayed in its hourly design; ``prices.replay_interval`` replays it as
    quarter-hours instead)."""
    minutes = interval.total_seconds() / 60
    for product, spec in market.products.items():
        if product.is_energy and minutes in spec.lengths:
            return market.with_interval(product, int(minutes)), product
    offered = {p.value: s.lengths for p, s in market.products.items() if p.is_energy}
    raise ScenarioError(
        f"market {market.market_id} has no energy product with {minutes:g}-minute intervals "
        f"(it runs {offered})"
    )
