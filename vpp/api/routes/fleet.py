"""The fleet hierarchy: fleet → groups → sites, each with bounds and counts by state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from vpp.api.deps import Viewer
from vpp.api.models import FleetPublic, GroupPublic, NodePublic, Page
from vpp.api.responses import AUTH, NOT_FOUND, UNAVAILABLE
from vpp.api.routes.bids import encode
from vpp.fleet.hierarchy import FleetSnapshot
from vpp.fleet.partials import whole_fleet
from vpp.services import Services

router = APIRouter(prefix="/fleet", tags=["fleet"])


def snapshot(svc: Services) -> FleetSnapshot:
    snap, _ = svc.fleet()
    if snap is None:
        raise HTTPException(503, detail="the fleet aggregate is not available yet")
    return snap


@router.get(
    "",
    response_model=FleetPublic,
    responses={**AUTH, **UNAVAILABLE},
    summary="The fleet and its groups",
)
async def get_fleet(caller: Viewer) -> Response:
    local = snapshot(caller.services)
    view = caller.services.combined()
    # With several instances, every one answers from the combined view of all partials.
    snap = whole_fleet(view, local)
    hit: tuple[Any, bytes] | None = caller.services.cache.get("fleet")
    if hit is None or hit[0] is not snap:  # serialized once per snapshot or view
        body = encode(
            {
                "fleet": snap.fleet.to_dict(),
                "groups": [snap.groups[g].to_dict() for g in sorted(snap.groups)],
                "coverage": view.to_dict()["coverage"] if view is not None else None,
            }
        )
        hit = caller.services.cache["fleet"] = (snap, body)
    return Response(hit[1], media_type="application/json")


@router.get(
    "/groups",
    response_model=Page[NodePublic],
    responses={**AUTH, **UNAVAILABLE},
    summary="The groups (children of the fleet), one page",
)
async def list_groups(
    caller: Viewer,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    snap = snapshot(caller.services)
    names = sorted(snap.groups)
    data = [snap.groups[g].to_dict() for g in names[skip : skip + limit]]
    return Response(encode({"data": data, "count": len(names)}), media_type="application/json")


@router.get(
    "/groups/{group}",
    response_model=GroupPublic,
    responses={**AUTH, **UNAVAILABLE, **NOT_FOUND},
    summary="A group, its parent and one page of its sites",
)
def get_group(
    caller: Viewer,
    group: Annotated[str, Path(min_length=1, max_length=100)],
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    snap = snapshot(caller.services)
    node = snap.groups.get(group)
    if node is None:
        raise HTTPException(404, detail=f"group {group} not found")
    body = {
        "group": node.to_dict(),
        "parent": "fleet",
        "sites": _site_page(snap, group, skip, limit),
    }
    return Response(encode(body), media_type="application/json")


@router.get(
    "/groups/{group}/sites",
    response_model=Page[NodePublic],
    responses={**AUTH, **UNAVAILABLE, **NOT_FOUND},
    summary="The site aggregates of a group, one page",
)
def group_sites(
    caller: Viewer,
    group: Annotated[str, Path(min_length=1, max_length=100)],
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    snap = snapshot(caller.services)
    if group not in snap.groups:
        raise HTTPException(404, detail=f"group {group} not found")
    return Response(encode(_site_page(snap, group, skip, limit)), media_type="application/json")


def _site_page(snap: FleetSnapshot, group: str, skip: int, limit: int) -> dict[str, Any]:
    """One page of a group's site aggregates and the group's site count."""
    sites = snap.children("group", group)
    page = [snap.site(s) for s in sites[skip : skip + limit]]
    return {"data": [p.to_dict() for p in page if p is not None], "count": len(sites)}
