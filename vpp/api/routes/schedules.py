"""Peak-shaving schedules: plan a site's battery against its tariff, dispatch the plan.

``POST`` solves the site's peak-shaving model (:mod:`optimizer.peak_model`) over the given
net-load forecast from the twin's current SoC, stores the plan with its expected bill, and
hands one site target per interval to dispatch (commands, acks, retries, delivery). A new
plan for intervals an older plan covered replaces those targets (a re-plan); it never
overrides an award or a manual target (409).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from market.tariffs import BillingPeriod, TariffError
from market.tariffs import Tariff as TariffTable
from optimizer.bill_model import DemandCharge
from optimizer.report import InfeasibleInputError
from vpp.api.deps import Operator, Viewer
from vpp.api.models import Page
from vpp.api.responses import AUTH, NOT_FOUND, UNAVAILABLE
from vpp.api.routes.bids import encode
from vpp.bill import MAX_INTERVALS as BILL_MAX_INTERVALS
from vpp.bill import BillOptions, dervet_terms, known_zone, what_if
from vpp.dispatch.service import TARGET_HORIZON
from vpp.peak_shaving import battery_of, plan_site, schedule_row, tou_prices
from vpp.store import audit, peak_schedules
from vpp.twins.registry import SiteIdStr, Tariff

router = APIRouter(prefix="/schedules", tags=["schedules"])

MAX_INTERVALS = 7 * 96  # a week of 15-minute intervals
MAX_WHAT_IF = BILL_MAX_INTERVALS  # a year of 15-minute intervals
_Kw = Annotated[float, Field(ge=-1e7, le=1e7, allow_inf_nan=False)]
_KwPv = Annotated[float, Field(ge=0, le=1e7, allow_inf_nan=False)]


def _on_boundary(start: datetime, interval_s: int) -> None:
    """ValueError unless ``start`` begins an interval of ``interval_s`` seconds (UTC grid)."""
    if int(start.timestamp()) % interval_s or start.microsecond:
        raise ValueError(
            f"interval_start {start.isoformat()} is not on a {interval_s}-second boundary"
        )


class ScheduleCreate(BaseModel):
    """A site's net-load forecast (load − PV, kW per interval) to plan peak shaving for."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "site_id": "site-0042",
                "interval_start": "2026-11-22T00:00:00Z",
                "interval_s": 3600,
                "net_load_kw": [4.0, 3.5, 3.2, 3.1, 3.4, 5.2, 7.9, 6.1],
                "peak_so_far_kw": 6.5,
            }
        },
    )

    site_id: SiteIdStr
    interval_start: AwareDatetime = Field(description="UTC start of the first interval")
    interval_s: int = Field(900, ge=60, le=3600, description="interval length (s)")
    net_load_kw: list[_Kw] = Field(
        min_length=1, max_length=MAX_INTERVALS, description="forecast load − PV per interval"
    )
    soc: float | None = Field(
        None, ge=0, le=1, description="starting SoC; default: the twin's latest reading"
    )
    peak_so_far_kw: float = Field(
        0.0, ge=0, le=1e7, allow_inf_nan=False, description="this billing month's peak import"
    )
    export_price_per_kwh: float = Field(0.0, ge=0, le=100, allow_inf_nan=False)
    degradation_per_kwh: float = Field(0.0, ge=0, le=100, allow_inf_nan=False)
    tariff: Tariff | None = Field(None, description="default: the site's registry tariff")

    @model_validator(mode="after")
    def _aligned(self) -> ScheduleCreate:
        _on_boundary(self.interval_start, self.interval_s)
        return self


class ScheduleSummary(BaseModel):
    schedule_id: str
    site_id: str
    created_at: datetime
    created_by: str
    interval_start: datetime
    interval_s: int
    intervals: int
    currency: str
    demand_charge_per_kw: float
    peak_so_far_kw: float
    peak_without_kw: float = Field(description="billed peak without the battery")
    peak_kw: float = Field(description="billed peak with the plan")
    cost_without: float = Field(description="demand increase + energy, without the battery")
    cost: float = Field(description="the same with the plan, degradation included")
    solve_s: float


class SchedulePublic(ScheduleSummary):
    net_load_kw: list[float]
    p_kw: list[float] = Field(description="battery power per interval, + discharge")
    grid_kw: list[float] = Field(description="grid power per interval, + import")
    import_price_per_kwh: list[float]
    soc: list[float] | None = Field(
        None, description="planned state of charge at each interval's end (null: not kept)"
    )


class BillingPeriodIn(BaseModel):
    """One DER-VET billing period (:mod:`market.tariffs`): months and hour-ending ranges."""

    model_config = ConfigDict(extra="forbid")

    start_month: int = Field(ge=1, le=12)
    end_month: int = Field(ge=1, le=12)
    start_he: int = Field(ge=1, le=24, description="first hour-ending (1 = 00:00-01:00)")
    end_he: int = Field(ge=1, le=24)
    exclude_start_he: int | None = Field(None, ge=1, le=24)
    exclude_end_he: int | None = Field(None, ge=1, le=24)
    weekday: Literal[0, 1, 2] = Field(2, description="1 weekdays, 0 weekends, 2 every day")
    value: float = Field(ge=0, le=10_000, allow_inf_nan=False)
    charge: Literal["energy", "demand"]
    name: str = Field("", max_length=100)

    @model_validator(mode="after")
    def _ordered(self) -> BillingPeriodIn:
        if self.start_month > self.end_month or self.start_he > self.end_he:
            raise ValueError("start after end (months or hours)")
        return self


class WhatIfCreate(BillOptions):
    """A site's load (and PV) over a past or long range, its tariff and a battery: the bill
    without and with the battery, planned as one model; nothing is stored or dispatched."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "interval_start": "2026-01-01T00:00:00Z",
                "interval_s": 3600,
                "load_kw": [40.0, 38.0, 90.0, 85.0, 42.0, 41.0],
                "tariff": {
                    "currency": "USD",
                    "demand_charge_per_kw": 12.0,
                    "tou": [{"hours": [2, 3], "price_per_kwh": 0.3}],
                },
                "battery": {
                    "capacity_kwh": 100,
                    "p_charge_max_kw": 50,
                    "p_discharge_max_kw": 50,
                },
            }
        },
    )

    interval_start: AwareDatetime = Field(description="UTC start of the first interval")
    interval_s: int = Field(900, ge=60, le=3600, description="interval length (s)")
    load_kw: list[_Kw] = Field(min_length=1, max_length=MAX_WHAT_IF, description="site load")
    pv_kw: list[_KwPv] | None = Field(None, description="PV output, one value per interval")
    tariff: Tariff | None = Field(None, description="TOU prices and a monthly demand charge")
    dervet_periods: list[BillingPeriodIn] | None = Field(
        None, max_length=500, description="or a DER-VET tariff's billing periods"
    )
    tariff_timezone: str = Field("UTC", description="the clock dervet_periods are read in")
    include_intervals: bool = Field(False, description="also return the plan per interval")

    _zone = field_validator("tariff_timezone")(known_zone)

    @model_validator(mode="after")
    def _consistent(self) -> WhatIfCreate:
        if (self.tariff is None) == (self.dervet_periods is None):
            raise ValueError("give exactly one of tariff and dervet_periods")
        if self.tariff is not None and "tariff_timezone" in self.model_fields_set:
            raise ValueError(
                "tariff_timezone applies to dervet_periods; a tariff carries its own timezone"
            )
        if self.pv_kw is not None and len(self.pv_kw) != len(self.load_kw):
            raise ValueError(f"pv_kw has {len(self.pv_kw)} values, load_kw {len(self.load_kw)}")
        _on_boundary(self.interval_start, self.interval_s)
        return self


def _what_if(body: WhatIfCreate) -> dict[str, Any]:
    step = timedelta(seconds=body.interval_s)
    first = pd.Timestamp(body.interval_start).tz_convert("UTC")
    starts = pd.date_range(first, periods=len(body.load_kw), freq=step)
    demand: list[DemandCharge]
    if body.tariff is not None:
        local = starts.tz_convert(body.tariff.timezone).tz_localize(None)
        price = tou_prices(body.tariff, starts.to_pydatetime().tolist())
        demand = (
            [DemandCharge("demand", body.tariff.demand_charge_per_kw, np.ones(len(starts), bool))]
            if body.tariff.demand_charge_per_kw > 0
            else []
        )
    else:
        assert body.dervet_periods is not None
        local = starts.tz_convert(body.tariff_timezone).tz_localize(None)
        tariff = TariffTable(
            tuple(
                BillingPeriod(period=k + 1, **p.model_dump())
                for k, p in enumerate(body.dervet_periods)
            )
        )
        try:
            price, demand = dervet_terms(tariff, local)
        except TariffError as exc:
            raise InfeasibleInputError(f"dervet_periods: {exc}") from None
    result = what_if(
        body,
        name="what-if",
        starts=starts,
        local=local,
        interval=step,
        load_kw=np.asarray(body.load_kw, dtype=np.float64),
        pv_kw=None if body.pv_kw is None else np.asarray(body.pv_kw, dtype=np.float64),
        price_per_kwh=price,
        demand=demand,
    )
    out = result.to_dict()
    if body.include_intervals and result.plan is not None:
        out["intervals"] = {
            "p_kw": result.plan.p_kw.tolist(),
            "grid_kw": result.plan.grid_kw.tolist(),
            "e_kwh": result.plan.e_kwh.tolist(),
            "curtailed_kw": result.plan.curtailed_kw.tolist(),
            "import_price_per_kwh": price.tolist(),
        }
    return out


@router.post(
    "/what-if",
    status_code=200,
    responses={**AUTH, 422: {"description": "invalid body or infeasible plan"}},
    summary="Plan a site's bill without and with a battery over up to a year (no dispatch)",
)
async def what_if_schedule(caller: Operator, body: WhatIfCreate) -> Response:
    """One LP over the whole range (:mod:`optimizer.bill_model`): a year of hourly data
    takes a few seconds, so it runs in a worker thread; operators only (it is not free)."""
    try:
        out = await run_in_threadpool(_what_if, body)
    except InfeasibleInputError as exc:
        raise HTTPException(
            422, detail=[{"loc": ["body"], "msg": str(exc), "type": "infeasible"}]
        ) from None
    return Response(encode(out), media_type="application/json")


@router.get(
    "",
    response_model=Page[ScheduleSummary],
    responses=AUTH,
    summary="Peak-shaving schedules, newest first",
)
def list_schedules(
    caller: Viewer,
    site_id: Annotated[str | None, Query(max_length=100)] = None,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    rows, count = peak_schedules.list_schedules(
        caller.services.db, site_id=site_id, skip=skip, limit=limit
    )
    return Response(encode({"data": rows, "count": count}), media_type="application/json")


class PeakSitePublic(BaseModel):
    site_id: str
    state: str = Field(description="planned, paused or skipped")
    reason: str | None = Field(None, description="why paused or skipped")
    paused_by: str | None = None
    paused_since: datetime | None = None
    latest: dict[str, Any] | None = Field(None, description="the latest plan's summary")


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000, description="why (audited)")


def _shaver(caller: Any, site_id: str) -> Any:
    shaver = caller.services.peak_shaver
    _, store = caller.services.fleet()
    if shaver is None:
        raise HTTPException(503, detail="peak shaving is not running (peak_shaving.enabled)")
    if store is None or site_id not in store.tariffs:
        raise HTTPException(404, detail=f"site {site_id} has no tariff: it is not peak-shaved")
    return shaver


@router.get(
    "/sites",
    response_model=Page[PeakSitePublic],
    responses={**AUTH, **UNAVAILABLE},
    summary="Peak-shaved sites: planned, paused (by whom, why) or skipped (why)",
)
def list_peak_sites(
    caller: Viewer,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    shaver = caller.services.peak_shaver
    _, store = caller.services.fleet()
    if shaver is None or store is None:
        raise HTTPException(503, detail="peak shaving is not running (peak_shaving.enabled)")
    sites = sorted(store.tariffs)
    data = [shaver.site_state(s) for s in sites[skip : skip + limit]]
    return Response(encode({"data": data, "count": len(sites)}), media_type="application/json")


@router.post(
    "/sites/{site_id}/pause",
    response_model=PeakSitePublic,
    responses={**AUTH, **NOT_FOUND, **UNAVAILABLE},
    summary="Pause a site's peak shaving: its battery is offered to the market until resumed",
)
def pause_site(
    caller: Operator,
    site_id: Annotated[str, Path(min_length=1, max_length=100)],
    body: PauseRequest,
) -> Response:
    shaver = _shaver(caller, site_id)
    before = shaver.site_state(site_id)
    shaver.pause(site_id, caller.principal.actor, body.reason, caller.services.clock().timestamp())
    after = shaver.site_state(site_id)
    with caller.services.db.begin() as conn:
        audit.record(conn, caller.principal, "pause", "peak_shaving", site_id, before, after)
    return Response(encode(after), media_type="application/json")


@router.post(
    "/sites/{site_id}/resume",
    response_model=PeakSitePublic,
    responses={**AUTH, **NOT_FOUND, **UNAVAILABLE},
    summary="Resume a site's peak shaving (from the next re-plan)",
)
def resume_site(
    caller: Operator, site_id: Annotated[str, Path(min_length=1, max_length=100)]
) -> Response:
    shaver = _shaver(caller, site_id)
    before = shaver.site_state(site_id)
    shaver.resume(site_id)
    after = shaver.site_state(site_id)
    with caller.services.db.begin() as conn:
        audit.record(conn, caller.principal, "resume", "peak_shaving", site_id, before, after)
    return Response(encode(after), media_type="application/json")


@router.get(
    "/{schedule_id}",
    response_model=SchedulePublic,
    responses={**AUTH, **NOT_FOUND},
    summary="One schedule with its per-interval plan",
)
def get_schedule(
    caller: Viewer, schedule_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> Response:
    row = peak_schedules.get(caller.services.db, schedule_id)
    if row is None:
        raise HTTPException(404, detail=f"schedule {schedule_id} not found")
    return Response(encode(row), media_type="application/json")


@router.post(
    "",
    response_model=SchedulePublic,
    status_code=201,
    responses={
        **AUTH,
        **NOT_FOUND,
        **UNAVAILABLE,
        409: {"description": "over, beyond the horizon, no SoC yet, or another target"},
    },
    summary="Plan a site's peak shaving and dispatch it",
)
async def create_schedule(caller: Operator, body: ScheduleCreate) -> Response:
    svc = caller.services
    dispatch = svc.dispatch
    _, store = svc.fleet()
    if dispatch is None or store is None:
        raise HTTPException(503, detail="dispatch and site twins must be running")
    i = store.index.get(body.site_id)
    if i is None or not store.active[i]:
        raise HTTPException(404, detail=f"site {body.site_id} not found")
    tariff = body.tariff or store.tariffs.get(body.site_id)
    if tariff is None:
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["body", "tariff"],
                    "msg": f"site {body.site_id} has no tariff in the registry; pass one",
                    "type": "missing_tariff",
                }
            ],
        )
    soc = body.soc if body.soc is not None else float(store.soc[i])
    if np.isnan(soc):
        raise HTTPException(409, detail=f"site {body.site_id} has reported no SoC yet; pass soc")
    now = svc.clock()
    span = timedelta(seconds=body.interval_s * len(body.net_load_kw))
    # Compared from ``now`` so a far-future start cannot overflow the date arithmetic.
    if body.interval_start + timedelta(seconds=body.interval_s) <= now:
        raise HTTPException(409, detail="the first interval is already over")
    if body.interval_start > now + TARGET_HORIZON - span:
        raise HTTPException(
            409, detail=f"the plan ends beyond the {TARGET_HORIZON.days}-day horizon"
        )
    cap = float(store.capacity_kwh[i])
    battery = battery_of(store, i)

    def solve() -> Any:
        return plan_site(
            body.site_id,
            battery,
            tariff,
            interval_start=body.interval_start,
            interval_s=body.interval_s,
            net_load_kw=np.asarray(body.net_load_kw),
            soc=soc,
            capacity_kwh=cap,
            peak_so_far_kw=body.peak_so_far_kw,
            export_price_per_kwh=body.export_price_per_kwh,
            degradation_per_kwh=body.degradation_per_kwh,
        )

    try:
        site_plan = await run_in_threadpool(solve)
    except InfeasibleInputError as exc:
        raise HTTPException(
            422, detail=[{"loc": ["body"], "msg": str(exc), "type": "infeasible"}]
        ) from None
    targets = [t for t in site_plan.targets() if t.interval_end > now]
    row = schedule_row(
        site_plan,
        tariff,
        net_load_kw=np.asarray(body.net_load_kw),
        peak_so_far_kw=body.peak_so_far_kw,
        created_at=now,
        created_by=caller.principal.actor,
    )

    async def apply() -> None:
        """On the control loop: the conflict check, then the plan stored (with its audit
        record) before dispatch acts on it."""
        blocking = dispatch.conflicts(targets)
        if blocking:
            b = blocking[0]
            raise HTTPException(
                409,
                detail=f"{b.group} has a {b.source} target at {b.interval_start.isoformat()}",
            )
        await asyncio.to_thread(peak_schedules.insert, svc.db, row, caller.principal)
        await dispatch.replace_targets_async(targets)

    await svc.on_control(apply())
    return Response(encode(row), status_code=201, media_type="application/json")
