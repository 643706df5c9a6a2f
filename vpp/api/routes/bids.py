"""Bids: list, inspect (versions, reviews, the solve that made it), edit, review, submit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from market.bids import BidCurve, Segment
from market.lifecycle import BidAction
from vpp.api.deps import Operator, Viewer
from vpp.api.models import (
    BidDetailPublic,
    BidEdit,
    BidPublic,
    Page,
    Problem,
    Resolution,
    Review,
    SubmitPublic,
    SubmitRequest,
)
from vpp.api.responses import AUTH, CONFLICT, NOT_FOUND, Responses
from vpp.bidding.review import BeyondCapabilityError, apply_edit, resolve, review, submit_one
from vpp.records import tidy_float, utc_iso
from vpp.store.bids import BidFilter, BidRow

router = APIRouter(prefix="/bids", tags=["bids"])

Status = Literal[
    "draft",
    "approved",
    "rejected",
    "submitted",
    "accepted",
    "refused",
    "awarded",
    "missed",
    "unawarded",
    "unknown",
]
BidId = Annotated[str, Path(min_length=1, max_length=100, description="the bid's id")]
_encoder = msgspec.json.Encoder()

MUTATION: Responses = {**AUTH, **NOT_FOUND, **CONFLICT}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return utc_iso(obj)
    raise TypeError(type(obj))


def _tidy(value: Any) -> Any:
    """Numbers at their resolution: floats rounded to 6 decimals (kW to the mW, prices to a
    millionth) so binary noise (0.30000000000000004) and negative zero never reach a client."""
    kind = type(value)  # exact types: the input is msgspec builtins (hot on big pages)
    if kind is float:
        return tidy_float(value)
    if kind is dict:
        return {k: _tidy(v) for k, v in value.items()}
    if kind is list:
        return [_tidy(v) for v in value]
    return value


def encode(data: Any) -> bytes:
    return _encoder.encode(_tidy(msgspec.to_builtins(data, enc_hook=_json_default)))


def public(row: BidRow) -> dict[str, Any]:
    return row.to_json()


@router.get(
    "",
    response_model=Page[BidPublic],
    responses=AUTH,
    summary="Bids matching the filters, one page",
)
def list_bids(
    caller: Viewer,
    market: Annotated[str | None, Query(max_length=32)] = None,
    group: Annotated[str | None, Query(max_length=100)] = None,
    status: Status | None = None,
    start_from: Annotated[datetime | None, Query(description="interval start >= (aware)")] = None,
    start_to: Annotated[datetime | None, Query(description="interval start < (aware)")] = None,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    for name, value in (("start_from", start_from), ("start_to", start_to)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(
                422,
                detail=[
                    {
                        "loc": ["query", name],
                        "type": "naive_datetime",
                        "msg": "give the time zone, e.g. ...Z",
                    }
                ],
            )
    f = BidFilter(market, group, status, start_from, start_to)

    def page() -> bytes:
        rows, count = caller.services.bids.list_bids(f, skip, limit)
        return encode({"data": [public(r) for r in rows], "count": count})

    body = caller.services.bids.cached(("bids", f, skip, limit), page)
    return Response(body, media_type="application/json")


@router.get(
    "/{bid_id}",
    response_model=BidDetailPublic,
    responses={**AUTH, **NOT_FOUND},
    summary="One bid with all its versions, its reviews and its solve report",
)
def get_bid(caller: Viewer, bid_id: BidId) -> Response:
    detail = caller.services.bids.get(bid_id)
    body = {
        "bid": public(detail.bid),
        "versions": [
            {k: v for k, v in ver.items() if k not in ("bid_id",)} for ver in detail.versions
        ],
        "reviews": [
            {k: v for k, v in rev.items() if k not in ("bid_id", "review_id")}
            for rev in detail.reviews
        ],
        "solve_report": detail.solve_report,
    }
    return Response(encode(body), media_type="application/json")


def _curve(body: BidEdit) -> BidCurve:
    return BidCurve(
        discharge=[Segment(**s.model_dump()) for s in body.discharge],
        charge=[Segment(**s.model_dump()) for s in body.charge],
    )


@router.put(
    "/{bid_id}/curve",
    response_model=BidPublic,
    responses={
        **MUTATION,
        422: {"description": "the curve breaks the market's rules or the fleet's capability"},
    },
    summary="Edit the curve: a new version, back to draft, re-validated",
)
def edit_bid(caller: Operator, bid_id: BidId, body: BidEdit) -> Any:
    try:
        row = apply_edit(
            caller.services,
            caller.principal,
            bid_id,
            body.version,
            _curve(body),
            body.comment,
            body.override_reason,
        )
    except BeyondCapabilityError as exc:
        raise HTTPException(
            422,
            detail=[{"loc": ["body"], "type": "beyond_capability", "msg": m} for m in exc.found],
        ) from None
    except PermissionError as exc:
        raise HTTPException(403, detail=str(exc)) from None
    return public(row)


@router.post(
    "/{bid_id}/approve",
    response_model=BidPublic,
    responses=MUTATION,
    summary="Approve the current version (four-eyes: not by its author)",
)
def approve_bid(caller: Operator, bid_id: BidId, body: Review) -> Any:
    row = review(
        caller.services, caller.principal, bid_id, body.version, BidAction.APPROVE, body.comment
    )
    return public(row)


@router.post(
    "/{bid_id}/reject",
    response_model=BidPublic,
    responses=MUTATION,
    summary="Reject the current version",
)
def reject_bid(caller: Operator, bid_id: BidId, body: Review) -> Any:
    row = review(
        caller.services, caller.principal, bid_id, body.version, BidAction.REJECT, body.comment
    )
    return public(row)


@router.post(
    "/{bid_id}/resolve",
    response_model=BidPublic,
    responses=MUTATION,
    summary="Resolve a bid unknown at the market with the market's answer (audited)",
)
def resolve_bid(caller: Operator, bid_id: BidId, body: Resolution) -> Any:
    row = resolve(
        caller.services, caller.principal, bid_id, body.version, body.outcome, body.comment
    )
    return public(row)


@router.post(
    "/{bid_id}/submit",
    response_model=SubmitPublic,
    responses={**MUTATION, 503: {"model": Problem, "description": "no market adapter"}},
    summary="Submit an approved bid to the market",
)
async def submit_bid(caller: Operator, bid_id: BidId, body: SubmitRequest) -> Any:
    return await submit_one(caller.services, caller.principal, bid_id, body.version)
