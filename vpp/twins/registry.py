"""The site registry: what each site *is* (group, ratings, limits), with its history.

The live source is the compacted ``vpp.sites`` topic (key ``site_id``, value a
:class:`SiteConfig` as JSON, a tombstone decommissions); the embedded default can also
load a YAML or CSV file. Every change is kept as a :class:`RegistryChange`, so
:meth:`Registry.as_of` answers "what did the registry say at time t" — an aggregate for a
past time is explained with the registry as it was then (capacity fade, a site that has
since moved group).
"""

from __future__ import annotations

import bisect
import csv
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SiteIdStr = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$", examples=["site-0042"])
]
GroupIdStr = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$", examples=["north"])
]


class TouPeriod(BaseModel):
    """A time-of-use energy price applying on the given local months, weekdays and hours
    (seasonal tariffs: list a summer and a winter period for the same hours)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hours: list[Annotated[int, Field(ge=0, le=23)]] = Field(description="local hours (0-23)")
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        [0, 1, 2, 3, 4, 5, 6], description="0 = Monday"
    )
    months: list[Annotated[int, Field(ge=1, le=12)]] = Field(
        list(range(1, 13)), description="local months (1-12)"
    )
    price_per_kwh: float = Field(
        ge=0, le=100, allow_inf_nan=False, description="energy import price (currency/kWh)"
    )


class Tariff(BaseModel):
    """A site's retail tariff: time-of-use energy prices and a monthly demand charge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    timezone: str = Field("UTC", description="IANA zone the tariff's hours are in")
    demand_charge_per_kw: float = Field(
        0.0, ge=0, le=10_000, allow_inf_nan=False, description="per kW of monthly peak import"
    )
    tou: list[TouPeriod] = Field(default_factory=list, max_length=48)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _periods_do_not_overlap(self) -> Tariff:
        """Each local (month, weekday, hour) has at most one period: then every reading
        of the list gives the same price (periods that apply add up, as DER-VET's billing
        periods do, and a first match is the only match). Overlaps are refused naming the
        first hour two periods share (a catch-all period under a peak one used to mean
        "first match wins" here and "add both" in a DER-VET file)."""
        seen: dict[tuple[int, int, int], int] = {}
        for k, period in enumerate(self.tou):
            for m in period.months:
                for d in period.weekdays:
                    for h in period.hours:
                        other = seen.setdefault((m, d, h), k)
                        if other != k:
                            raise ValueError(
                                f"tou[{other}] and tou[{k}] both price month {m}, weekday {d} "
                                f"(0 = Monday), hour {h}: give each hour one period (prices "
                                "of overlapping periods would add up)"
                            )
        return self


class SiteConfig(BaseModel):
    """One site's registry record (``vpp.sites`` value, schema v1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    site_id: SiteIdStr
    group: GroupIdStr = Field(description="market node / zone / feeder the site belongs to")
    capacity_kwh: float = Field(gt=0, le=1e7, description="usable energy capacity (kWh)")
    p_charge_max_kw: float = Field(gt=0, le=1e7, description="max charging power (kW)")
    p_discharge_max_kw: float = Field(gt=0, le=1e7, description="max discharging power (kW)")
    eff_charge: float = Field(0.95, gt=0, le=1, description="charging efficiency (grid→cell)")
    eff_discharge: float = Field(0.95, gt=0, le=1, description="discharging efficiency (cell→grid)")
    soc_min: float = Field(0.1, ge=0, lt=1, description="lowest SoC dispatch may use (0-1)")
    soc_max: float = Field(0.95, gt=0, le=1, description="highest SoC dispatch may use (0-1)")
    telemetry_interval_s: float = Field(
        5.0, gt=0, le=3600, description="the gateway's reporting period (s)"
    )
    tariff: Tariff | None = Field(None, description="retail tariff, for peak shaving")
    site_load_max_kw: float | None = Field(
        None,
        gt=0,
        le=1e7,
        description="the site's highest plausible load (kW): readings above it (with the "
        "ingest's power tolerance) are refused; required with a tariff; without it, 20x the "
        "battery's rating",
    )
    pv_max_kw: float | None = Field(
        None,
        gt=0,
        le=1e7,
        description="the PV system's rating (kW): higher readings are refused; without it, "
        "20x the battery's rating",
    )

    @model_validator(mode="after")
    def _soc_window(self) -> SiteConfig:
        if self.soc_min >= self.soc_max:
            raise ValueError(f"soc_min {self.soc_min} must be below soc_max {self.soc_max}")
        if self.tariff is not None and self.site_load_max_kw is None:
            raise ValueError(
                "a site with a tariff needs site_load_max_kw: its load readings set the month's "
                "peak the demand charge is planned against, and an implausible one is refused"
            )
        return self

    @property
    def p_rating_kw(self) -> float:
        return max(self.p_charge_max_kw, self.p_discharge_max_kw)


class RegistryError(ValueError):
    """A registry record or file that cannot be used; the message says where and why."""


def parse_site(raw: bytes | str | dict[str, Any], where: str) -> SiteConfig:
    """Validate one record; :class:`RegistryError` names ``where`` and each bad field."""
    try:
        if isinstance(raw, dict):
            return SiteConfig.model_validate(raw)
        return SiteConfig.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()
        )
        raise RegistryError(f"{where}: {problems}") from None


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """One registry event: a site's new configuration, or None when it was decommissioned."""

    ts: datetime
    site_id: str
    config: SiteConfig | None


class Registry:
    """Current site configurations plus the append-only history of changes."""

    def __init__(self) -> None:
        self.current: dict[str, SiteConfig] = {}
        self.history: list[RegistryChange] = []

    def apply(self, change: RegistryChange) -> bool:
        """Record a change; False when it changes nothing (a re-delivered record)."""
        before = self.current.get(change.site_id)
        if change.config == before:
            return False
        if change.config is None:
            del self.current[change.site_id]
        else:
            self.current[change.site_id] = change.config
        if self.history and change.ts < self.history[-1].ts:
            bisect.insort(self.history, change, key=lambda c: c.ts)
        else:
            self.history.append(change)
        return True

    def as_of(self, ts: datetime) -> dict[str, SiteConfig]:
        """The registry as it was at ``ts`` (every change at or before it applied)."""
        state: dict[str, SiteConfig] = {}
        for change in self.history:
            if change.ts > ts:
                break
            if change.config is None:
                state.pop(change.site_id, None)
            else:
                state[change.site_id] = change.config
        return state


def load_registry_file(path: Path) -> list[SiteConfig]:
    """Sites from a YAML (a list of records, or ``{sites: [...]}``) or CSV file."""
    text = path.read_text(encoding="utf-8")
    rows: list[dict[str, Any]]
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RegistryError(f"{path}: cannot parse YAML: {exc}") from None
        if isinstance(data, dict):
            data = data.get("sites")
        if not isinstance(data, list):
            raise RegistryError(f"{path}: expected a list of sites (or a `sites:` list)")
        rows = data
    elif path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        rows = [{k: v for k, v in row.items() if v not in (None, "")} for row in reader]
    else:
        raise RegistryError(f"{path}: unknown registry format (use .yaml, .yml or .csv)")
    sites: list[SiteConfig] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        where = f"{path} row {number + 1 if path.suffix == '.csv' else number}"
        if not isinstance(row, dict):
            raise RegistryError(f"{where}: expected a mapping of fields")
        site = parse_site(row, where)
        if site.site_id in seen:
            raise RegistryError(f"{where}: duplicate site_id {site.site_id!r}")
        seen.add(site.site_id)
        sites.append(site)
    return sites
