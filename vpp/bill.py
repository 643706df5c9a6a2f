"""`vpp bill`: what a site's battery (and PV) would do to its electricity bill over a range.

A what-if for analysts and site owners: a YAML file names the site's load (and PV) series,
its tariff (the DER-VET format, :mod:`market.tariffs`), the battery and the grid limits;
the whole range (up to a year of 15-minute data) is planned as one model with perfect
foresight (:mod:`optimizer.bill_model`) and nothing is dispatched. The answer is the bill
month by month without and with the battery: energy charge, demand charge, and their
changes. Every key is validated with its path in the error, like a scenario file.

Example (the DER-VET bill-reduction case, ``scenarios/bills/dervet-bill-reduction.yaml``)::

    name: dervet-bill-reduction
    load: {file: data/....csv, time_column: Datetime (he), column: Site Load (kW),
           interval: end, timezone: Etc/GMT+8, time_format: "%m/%d/%Y %H:%M"}
    pv: {... same file ..., column: PV Gen (kW/rated kW)/..., scale: 1000}
    tariff: {dervet: data/dervet_billreduction_tariff.csv, timezone: Etc/GMT+8}
    export_price: import          # net metering; or none (no credit), or a price per kWh
    battery: {capacity_kwh: 9450, p_charge_max_kw: 1575, p_discharge_max_kw: 1575,
              eff_charge: 0.91, eff_discharge: 1.0, soc_initial: 0.5}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import Field, field_validator, model_validator

from market.tariffs import Tariff as TariffTable
from market.tariffs import TariffError, load_dervet_tariff
from optimizer.bill_model import (
    BillBattery,
    BillInputs,
    BillPlan,
    DemandCharge,
    monthly_bill,
    plan_bill,
)
from vpp.scenario import ScenarioError, SeriesSource, _aware, _Model, load_series, read_model

F64 = npt.NDArray[np.float64]
MAX_INTERVALS = 366 * 96  # a leap year of 15-minute intervals


def known_zone(value: str) -> str:
    """An IANA zone name, or ValueError naming it."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


class DervetTariffSource(_Model):
    dervet: Path = Field(description="DER-VET tariff CSV, relative to this file's folder")
    timezone: str = Field("UTC", description="IANA zone of the tariff's clock (hours, months)")

    _zone = field_validator("timezone")(known_zone)


class BillBatterySpec(_Model):
    capacity_kwh: float = Field(gt=0)
    p_charge_max_kw: float = Field(gt=0)
    p_discharge_max_kw: float = Field(gt=0)
    eff_charge: float = Field(0.95, gt=0, le=1)
    eff_discharge: float = Field(0.95, gt=0, le=1)
    soc_min: float = Field(0.0, ge=0, lt=1)
    soc_max: float = Field(1.0, gt=0, le=1)
    soc_initial: float = Field(0.5, ge=0, le=1)
    soc_end: float | None = Field(None, ge=0, le=1, description="at least this at the end")

    @model_validator(mode="after")
    def _window(self) -> BillBatterySpec:
        end = self.soc_initial if self.soc_end is None else self.soc_end
        if (
            not self.soc_min <= self.soc_initial <= self.soc_max
            or not self.soc_min <= end <= self.soc_max
        ):
            raise ValueError(
                f"soc_initial {self.soc_initial} and soc_end {end} must lie in "
                f"[soc_min {self.soc_min}, soc_max {self.soc_max}]"
            )
        return self


class BillOptions(_Model):
    """What a what-if plans with, whatever the load and tariff come from (file or API)."""

    export_price: Literal["import", "none"] | Annotated[float, Field(ge=0, le=100)] = Field(
        "import", description="import (net metering), none (no credit) or currency/kWh"
    )
    battery: BillBatterySpec
    import_max_kw: float | None = Field(None, gt=0, le=1e7)
    export_max_kw: float | None = Field(None, ge=0, le=1e7)
    curtail_pv: bool = False
    degradation_per_kwh: float = Field(0.0, ge=0, le=100)
    pv_in_baseline: bool = Field(
        False,
        description="the PV is there already: the bill without the battery counts it "
        "(default: the bill without is the load alone, as DER-VET reports it)",
    )


class BillSpec(BillOptions):
    name: str
    load: SeriesSource
    pv: SeriesSource | None = None
    tariff: DervetTariffSource
    start: datetime | None = None
    end: datetime | None = None

    _aware_range = field_validator("start", "end")(_aware)

    @model_validator(mode="after")
    def _range(self) -> BillSpec:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


@dataclass
class BillResult:
    name: str
    start: str
    end: str
    intervals: int
    months: list[dict[str, Any]] = field(default_factory=list)
    plan: BillPlan | None = None

    def totals(self) -> dict[str, float]:
        keys = ("energy_before", "energy_after", "demand_before", "demand_after")
        out = {k: sum(m[k] for m in self.months) for k in keys}
        out["energy_change"] = out["energy_after"] - out["energy_before"]
        out["avoided_demand_charge"] = out["demand_before"] - out["demand_after"]
        out["bill_change"] = out["energy_change"] - out["avoided_demand_charge"]
        return out

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "intervals": self.intervals,
            "months": self.months,
            "totals": self.totals(),
            "solve": {
                "build_s": plan.build_s if plan else None,
                "solve_s": plan.solve_s if plan else None,
                "highs_s": plan.highs_s if plan else None,
            },
        }


def load_bill_spec(path: Path) -> BillSpec:
    """Read and validate a bill what-if file, resolving relative data paths."""
    spec = read_model(path, BillSpec, "bill file")
    base = path.resolve().parent
    update: dict[str, Any] = {
        "load": spec.load.model_copy(update={"file": base / spec.load.file}),
        "tariff": spec.tariff.model_copy(update={"dervet": base / spec.tariff.dervet}),
    }
    if spec.pv is not None:
        update["pv"] = spec.pv.model_copy(update={"file": base / spec.pv.file})
    return spec.model_copy(update=update)


def run_bill(spec: BillSpec) -> BillResult:
    """Plan the range as one model and bill it month by month, without and with the battery."""
    load = load_series(spec.load, "load")
    starts = load.starts
    keep = np.ones(len(starts), dtype=bool)
    if spec.start is not None:
        keep &= starts >= pd.Timestamp(spec.start)
    if spec.end is not None:
        keep &= starts < pd.Timestamp(spec.end)
    starts, load_kw = starts[keep], load.values[keep]
    if len(starts) == 0:
        raise ScenarioError("start/end: the load series has no interval in that range")
    if len(starts) > MAX_INTERVALS:
        raise ScenarioError(
            f"start/end: {len(starts)} intervals; a what-if plans at most {MAX_INTERVALS} "
            "(a year of 15-minute data) as one model"
        )
    pv_kw = None
    if spec.pv is not None:
        pv = load_series(spec.pv, "pv")
        if pv.interval != load.interval:
            raise ScenarioError(
                f"pv: interval {pv.interval} differs from the load's {load.interval}"
            )
        aligned = pd.Series(pv.values, index=pv.starts).reindex(starts)
        if aligned.isna().any():
            first = starts[np.flatnonzero(aligned.isna().to_numpy())[0]]
            raise ScenarioError(f"pv: no value for the interval starting {first.isoformat()}")
        pv_kw = aligned.to_numpy(dtype=np.float64)
    try:
        tariff = load_dervet_tariff(spec.tariff.dervet)
    except (TariffError, FileNotFoundError) as exc:
        raise ScenarioError(f"tariff.dervet: {exc}") from None
    local = starts.tz_convert(spec.tariff.timezone).tz_localize(None)
    try:
        price, demand = dervet_terms(tariff, local)
    except TariffError as exc:
        raise ScenarioError(f"tariff.dervet: {exc}") from None
    return what_if(
        spec,
        name=spec.name,
        starts=starts,
        local=local,
        interval=load.interval,
        load_kw=load_kw,
        pv_kw=pv_kw,
        price_per_kwh=price,
        demand=demand,
    )


def dervet_terms(
    tariff: TariffTable, local: pd.DatetimeIndex
) -> tuple[npt.NDArray[np.float64], list[DemandCharge]]:
    """A DER-VET tariff as the bill model's terms over intervals labelled by their local
    start: the energy price of each (overlapping periods add, as DER-VET bills them; an
    interval no period covers is refused, :class:`market.tariffs.TariffError`) and one
    demand charge per demand period. ``vpp bill`` and the what-if API both bill with it."""
    price = tariff.energy_price_checked(local)
    demand = [
        DemandCharge(p.name or f"demand {p.period}", p.value, p.covers(local))
        for p in tariff.demand
    ]
    return price, demand


def what_if(
    options: BillOptions,
    *,
    name: str,
    starts: pd.DatetimeIndex,
    local: pd.DatetimeIndex,
    interval: timedelta,
    load_kw: F64,
    pv_kw: F64 | None,
    price_per_kwh: F64,
    demand: list[DemandCharge],
) -> BillResult:
    """Plan and bill one site: ``starts`` (UTC) and ``local`` (the tariff's wall clock, naive)
    label the same intervals; billing months are the local months."""
    spec = options
    price = price_per_kwh
    export = (
        price
        if spec.export_price == "import"
        else np.zeros_like(price)
        if spec.export_price == "none"
        else np.minimum(price, float(spec.export_price))
    )
    month = (local.year * 100 + local.month).to_numpy()
    inputs = BillInputs(
        interval_h=interval.total_seconds() / 3600,
        load_kw=load_kw,
        import_price_per_kwh=price,
        export_price_per_kwh=export,
        month=month,
        demand=demand,
        pv_kw=pv_kw,
        curtail_pv=spec.curtail_pv,
        import_max_kw=spec.import_max_kw if spec.import_max_kw is not None else float("inf"),
        export_max_kw=spec.export_max_kw if spec.export_max_kw is not None else float("inf"),
        degradation_per_kwh=spec.degradation_per_kwh,
    )
    b = spec.battery
    soc_end = b.soc_initial if b.soc_end is None else b.soc_end
    battery = BillBattery(
        e_min_kwh=b.capacity_kwh * b.soc_min,
        e_max_kwh=b.capacity_kwh * b.soc_max,
        e0_kwh=b.capacity_kwh * b.soc_initial,
        e_end_kwh=b.capacity_kwh * soc_end,
        p_charge_max_kw=b.p_charge_max_kw,
        p_discharge_max_kw=b.p_discharge_max_kw,
        eff_charge=b.eff_charge,
        eff_discharge=b.eff_discharge,
    )
    plan = plan_bill(inputs, battery)
    # "without": the load alone (DER-VET's "original"), or less its PV if that exists already
    site_kw = load_kw - (pv_kw if pv_kw is not None and spec.pv_in_baseline else 0.0)
    before, after = monthly_bill(site_kw, inputs), monthly_bill(plan.grid_kw, inputs)
    months = [
        {
            "month": f"{m // 100:04d}-{m % 100:02d}",
            "energy_before": before[m]["energy"],
            "energy_after": after[m]["energy"],
            "demand_before": before[m]["demand"],
            "demand_after": after[m]["demand"],
        }
        for m in sorted(before)
    ]
    return BillResult(
        name=name,
        start=starts[0].isoformat(),
        end=(starts[-1] + interval).isoformat(),
        intervals=len(starts),
        months=months,
        plan=plan,
    )
