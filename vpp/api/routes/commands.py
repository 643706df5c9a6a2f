"""Commands: each one's latest state, filtered by state and site."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from vpp.api.deps import Viewer
from vpp.api.models import Page
from vpp.api.responses import AUTH
from vpp.api.routes.bids import encode
from vpp.store import ledger

router = APIRouter(prefix="/commands", tags=["commands"])

State = Literal["pending", "acked", "completed", "rejected", "timed_out", "superseded", "expired"]


class CommandPublic(BaseModel):
    command_id: str
    dispatch_id: str
    site_id: str
    event: str
    state: str
    attempt: int
    setpoint_kw: float
    valid_from: datetime
    valid_until: datetime
    reason: str | None
    ts: datetime


def page(rows: list[dict[str, object]], count: int) -> Response:
    data = [{k: v for k, v in r.items() if k != "seq"} for r in rows]
    return Response(encode({"data": data, "count": count}), media_type="application/json")


@router.get(
    "",
    response_model=Page[CommandPublic],
    responses=AUTH,
    summary="Commands (latest state of each), newest first",
)
def list_commands(
    caller: Viewer,
    status: State | None = None,
    site_id: Annotated[str | None, Query(max_length=100)] = None,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    rows, count = ledger.last_states(
        caller.services.db, site_id=site_id, state=status, skip=skip, limit=limit
    )
    return page(rows, count)


@router.get(
    "/{command_id}/history",
    response_model=Page[CommandPublic],
    responses=AUTH,
    summary="Every ledger entry of one command, newest first",
)
def command_history(
    caller: Viewer,
    command_id: Annotated[str, Path(min_length=1, max_length=64)],
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    rows, count = ledger.history(caller.services.db, command_id=command_id, skip=skip, limit=limit)
    return page(rows, count)
