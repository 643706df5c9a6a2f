"""Awards the market made on accepted bids."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from vpp.api.deps import Viewer
from vpp.api.models import AwardPublic, Page
from vpp.api.responses import AUTH
from vpp.api.routes.bids import encode

router = APIRouter(prefix="/awards", tags=["awards"])


@router.get(
    "", response_model=Page[AwardPublic], responses=AUTH, summary="Awards, newest interval first"
)
def list_awards(
    caller: Viewer,
    group: Annotated[str | None, Query(max_length=100)] = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    rows, count = caller.services.bids.list_awards(
        group=group, start_from=start_from, start_to=start_to, skip=skip, limit=limit
    )
    # the API's one name for it is "group" (``{**r, "group": r.pop(...)}`` kept both: the
    # copy is made before the pop)
    data = [{("group" if k == "group_id" else k): v for k, v in r.items()} for r in rows]
    return Response(encode({"data": data, "count": count}), media_type="application/json")
