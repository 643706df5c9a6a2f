"""Site twins: the per-site view, its state-transition history and its recent commands."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from vpp.api.deps import Viewer
from vpp.api.models import Page, SiteEventPublic, SitePublic, SiteTracePublic
from vpp.api.responses import AUTH, NOT_FOUND, UNAVAILABLE, Responses
from vpp.api.routes.bids import encode
from vpp.api.routes.commands import CommandPublic, page
from vpp.services import Services
from vpp.store import ledger
from vpp.store.site_events import site_history_page
from vpp.twins.states import Connectivity
from vpp.twins.store import FleetStore
from vpp.twins.view import site_view

router = APIRouter(prefix="/sites", tags=["sites"])
SiteId = Annotated[str, Path(min_length=1, max_length=100)]
MISSING: Responses = {**NOT_FOUND, **UNAVAILABLE}


def _store(svc: Services) -> FleetStore:
    _, store = svc.fleet()
    if store is None:
        raise HTTPException(503, detail="site twins are not available yet")
    return store


def _row_of(svc: Services, site_id: str) -> int:
    """The site's store row (404 when the fleet has no such site)."""
    i = _store(svc).index.get(site_id)
    if i is None:
        raise HTTPException(404, detail=f"site {site_id} not found")
    return i


@router.get(
    "",
    response_model=Page[SitePublic],
    responses={**AUTH, **MISSING},
    summary="Site twins, filtered, one page",
)
def list_sites(
    caller: Viewer,
    group: Annotated[str | None, Query(max_length=100)] = None,
    connectivity: Literal["unknown", "online", "stale", "offline"] | None = None,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    store = _store(caller.services)
    mask = store.column("active").copy()
    if group is not None:
        gid = store.group_index.get(group, -1)
        mask &= store.column("group") == gid
    if connectivity is not None:
        mask &= store.column("conn") == Connectivity[connectivity.upper()]
    rows = np.flatnonzero(mask)
    now = caller.services.clock().timestamp()  # the engine's clock (simulated under --speed)
    data = []
    for i in rows[skip : skip + limit].tolist():
        view = site_view(store, store.ids[i], now)
        if view is not None:
            data.append(view.to_dict())
    return Response(encode({"data": data, "count": int(rows.size)}), media_type="application/json")


@router.get(
    "/{site_id}",
    response_model=SitePublic,
    responses={**AUTH, **MISSING},
    summary="One site twin with its aggregate (and bounds)",
)
def get_site(caller: Viewer, site_id: SiteId) -> Response:
    store = _store(caller.services)
    view = site_view(store, site_id, caller.services.clock().timestamp())
    if view is None:
        raise HTTPException(404, detail=f"site {site_id} not found")
    body = view.to_dict()
    snap, _store_unused = caller.services.fleet()
    node = snap.site(site_id) if snap is not None else None
    body["aggregate"] = node.to_dict() if node is not None else None
    return Response(encode(body), media_type="application/json")


@router.get(
    "/{site_id}/events",
    response_model=Page[SiteEventPublic],
    responses={**AUTH, **MISSING},
    summary="The site's state transitions, newest first",
)
def site_events(
    caller: Viewer,
    site_id: SiteId,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    _row_of(caller.services, site_id)
    rows, count = site_history_page(caller.services.db, site_id, skip=skip, limit=limit)
    data = [{k: r[k] for k in ("site_id", "ts", "kind", "from_state", "to_state")} for r in rows]
    return Response(encode({"data": data, "count": count}), media_type="application/json")


@router.get(
    "/{site_id}/telemetry",
    response_model=SiteTracePublic,
    responses={**AUTH, **MISSING},
    summary="The site's recent readings, oldest first (sampled; see ingest.trace_*)",
)
def site_telemetry(caller: Viewer, site_id: SiteId) -> Response:
    store = _store(caller.services)
    i = _row_of(caller.services, site_id)
    body = store.recent_telemetry(i)
    return Response(encode({"site_id": site_id, **body}), media_type="application/json")


@router.get(
    "/{site_id}/commands",
    response_model=Page[CommandPublic],
    responses={**AUTH, **MISSING},
    summary="The site's recent commands, newest first",
)
def site_commands(
    caller: Viewer,
    site_id: SiteId,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    _row_of(caller.services, site_id)
    rows, count = ledger.last_states(caller.services.db, site_id=site_id, skip=skip, limit=limit)
    return page(rows, count)
