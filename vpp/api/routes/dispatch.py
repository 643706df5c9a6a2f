"""Dispatch: per interval target vs delivered, shortfall, re-dispatches; manual targets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field

from vpp.api.deps import Operator, Viewer
from vpp.api.models import Page
from vpp.api.responses import AUTH, UNAVAILABLE
from vpp.api.routes.bids import encode
from vpp.dispatch.manual import TargetCreate, cancel_manual_target, schedule_manual_target
from vpp.store import dispatch_log

router = APIRouter(prefix="/dispatch", tags=["dispatch"])


class IntervalPublic(BaseModel):
    dispatch_id: str
    group_id: str
    interval_start: datetime
    interval_end: datetime
    source: str
    target_kw: float = Field(description="+ discharge, - charge")
    reserve_up_kw: float
    reserve_down_kw: float
    allocated_kw: float
    shortfall_kw: float
    delivered_kw: float | None = Field(description="mean measured net power so far")
    delivered_kwh: float | None
    redispatches: int
    status: str = Field(description="scheduled, active, delivered or short")
    updated_at: datetime


@router.get(
    "",
    response_model=Page[IntervalPublic],
    responses={**AUTH, **UNAVAILABLE},
    summary="Dispatch intervals, newest first (open ones with live delivery)",
)
def list_dispatch(
    caller: Viewer,
    group: Annotated[str | None, Query(max_length=100)] = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    svc = caller.services
    rows, count = dispatch_log.list_intervals(
        svc.db, group=group, start_from=start_from, start_to=start_to, skip=skip, limit=limit
    )
    if svc.dispatch is not None:
        live = {r["dispatch_id"]: r for r in svc.dispatch.live()}
        rows = [live.get(r["dispatch_id"], r) for r in rows]
    return Response(encode({"data": rows, "count": count}), media_type="application/json")


@router.post(
    "/targets",
    response_model=IntervalPublic,
    status_code=201,
    responses={
        **AUTH,
        **UNAVAILABLE,
        409: {"description": "the interval is over, or a different target exists"},
        422: {"description": "an unknown group or site, or a target beyond its capability"},
    },
    summary="Schedule a manual target for a group",
)
async def create_target(caller: Operator, body: TargetCreate) -> Any:
    return await schedule_manual_target(caller.services, caller.principal, body)


@router.delete(
    "/targets/{dispatch_id}",
    status_code=204,
    responses={
        **AUTH,
        **UNAVAILABLE,
        404: {"description": "no such scheduled or active target"},
        409: {"description": "not an operator's target (an award is owed to the market)"},
    },
    summary="Cancel a manual target (audited; commands under way are superseded)",
)
async def cancel_target(
    caller: Operator, dispatch_id: Annotated[str, PathParam(min_length=1, max_length=120)]
) -> Response:
    await cancel_manual_target(caller.services, caller.principal, dispatch_id)
    return Response(status_code=204)
