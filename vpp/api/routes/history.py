"""Interval history for analysis, streamed as CSV or Parquet (:mod:`vpp.store.history`).

``GET /api/v1/history/{kind}?from=..&to=..&format=csv|parquet``: the rows of one kind in the
half-open range ``[from, to)``, read and written a batch at a time, so a year of minute
aggregates streams in constant memory. The range is capped (``MAX_RANGE``) so one request
cannot hold a database connection for hours; longer exports use ``vpp export``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from vpp.api.deps import Viewer
from vpp.api.responses import AUTH
from vpp.store.history import Format, Kind, stream

router = APIRouter(prefix="/history", tags=["history"])

MAX_RANGE = timedelta(days=366)
MEDIA = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


@router.get(
    "/{kind}",
    responses={
        **AUTH,
        200: {
            "description": "the rows, streamed",
            "content": {MEDIA["csv"]: {}, MEDIA["parquet"]: {}},
        },
    },
    summary="Export one kind of interval history in [from, to) as CSV or Parquet",
)
def history(
    caller: Viewer,
    kind: Annotated[Kind, Path(description="dispatch, awards, bids or telemetry-aggregates")],
    start: Annotated[AwareDatetime, Query(alias="from", description="inclusive, aware")],
    end: Annotated[AwareDatetime, Query(alias="to", description="exclusive, aware")],
    fmt: Annotated[Format, Query(alias="format")] = "csv",
) -> StreamingResponse:
    if end < start:  # from == to is the empty range [t, t)
        raise HTTPException(
            422,
            detail=[{"loc": ["query", "to"], "msg": "to must not be before from", "type": "range"}],
        )
    if end - start > MAX_RANGE:
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["query", "to"],
                    "msg": f"at most {MAX_RANGE.days} days per request (vpp export for more)",
                    "type": "range",
                }
            ],
        )
    name = f"{kind}_{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}.{fmt}"
    return StreamingResponse(
        stream(caller.services.db, kind, fmt, start, end),
        media_type=MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
