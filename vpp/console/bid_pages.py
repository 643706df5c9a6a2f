"""Console pages for bid review: the queue by gate, one bid, its edits, review and submission."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from market.bids import BidCurve, Segment
from market.lifecycle import BidAction
from vpp.bidding.review import BeyondCapabilityError, apply_edit, resolve, review, submit_one
from vpp.console.routes import (
    User,
    current_user,
    current_user_sync,
    engine_now,
    off_loop,
    operator_form,
    posted_form,
    render,
)
from vpp.services import RefusedError
from vpp.store.bids import BidError, BidFilter, BidRow, InvalidBidError, NotFoundError
from vpp.store.fencing import FencedError

router = APIRouter(prefix="/console", include_in_schema=False)
_REVIEWABLE = ("draft", "approved")


# -- bids ---------------------------------------------------------------------------------


def _due_bids(user: User, now: datetime) -> list[dict[str, Any]]:
    """Bids whose gate closes next, grouped by (market, gate): the review queue."""
    rows, _ = user.services.bids.list_bids(BidFilter(start_from=now - timedelta(hours=1)), 0, 500)
    groups: dict[tuple[str, datetime], list[BidRow]] = defaultdict(list)
    for r in rows:
        groups[(r.market, r.gate_closure)].append(r)
    out = []
    for (market, gate), members in sorted(groups.items(), key=lambda kv: kv[0][1]):
        out.append(
            {
                "market": market,
                "gate": gate,
                "open": gate > now,
                "bids": sorted(members, key=lambda r: (r.interval_start, r.group)),
            }
        )
    return out


@router.get("/bids", response_class=HTMLResponse)
def bids_page(request: Request) -> Response:
    user = current_user_sync(request)
    now = engine_now(request)
    return render(request, "bids.html", user, gates=_due_bids(user, now), flash=None)


@router.get("/bids/table", response_class=HTMLResponse)
def bids_table(request: Request) -> Response:
    user = current_user_sync(request)
    return render(request, "_bids_table.html", user, gates=_due_bids(user, engine_now(request)))


@router.post("/bids/approve", response_class=HTMLResponse)
async def approve_many(request: Request) -> Response:
    """Approve several unedited drafts at once; each is still checked against its version."""
    user = await current_user(request)
    try:
        form = await posted_form(request, user)
    except RefusedError as exc:
        return render(request, "bids.html", user, exc.status, gates=[], flash=[str(exc)])
    return await off_loop(_approve_many, request, user, form)


def _approve_many(request: Request, user: User, form: dict[str, list[str]]) -> Response:
    results = []
    if not user.operator:
        results.append("Approving needs the operator role.")
    else:
        for item in form.get("bid", []):
            bid_id, _, version = item.rpartition(":")
            try:
                review(
                    user.services,
                    user.principal,
                    bid_id,
                    int(version),
                    BidAction.APPROVE,
                    "console: bulk",
                )
                results.append(f"{bid_id}: approved")
            except (BidError, ValueError) as exc:
                results.append(f"{bid_id}: not approved — {exc}")
    status = 403 if not user.operator else 200
    return render(
        request,
        "bids.html",
        user,
        status,
        gates=_due_bids(user, engine_now(request)),
        flash=results,
    )


def _curve_points(row: BidRow) -> dict[str, list[float]]:
    """The curve as steps for the plot: x = MW (charge negative), y = price."""
    xs: list[float] = []
    ys: list[float] = []
    total = 0.0
    for s in sorted(row.charge, key=lambda s: -s["price_per_mwh"]):
        xs.append(-total)
        ys.append(s["price_per_mwh"])
        total += s["quantity_mw"]
        xs.append(-total)
        ys.append(s["price_per_mwh"])
    charge = list(zip(xs, ys, strict=True))[::-1]
    xs, ys, total = [], [], 0.0
    for s in sorted(row.discharge, key=lambda s: s["price_per_mwh"]):
        xs.append(total)
        ys.append(s["price_per_mwh"])
        total += s["quantity_mw"]
        xs.append(total)
        ys.append(s["price_per_mwh"])
    points = [*charge, *zip(xs, ys, strict=True)]
    return {"mw": [p[0] for p in points], "price": [p[1] for p in points]}


def _outlook(report: dict[str, Any] | None, row: BidRow) -> dict[str, Any] | None:
    """This interval's forecast price band and expected revenue from the solve report (the
    report covers the cycle's intervals; ``interval_starts`` says which is which)."""
    if not report:
        return None
    starts = report.get("interval_starts") or []
    intervals = report.get("intervals") or []
    key = row.interval_start.isoformat()
    if key in starts and starts.index(key) < len(intervals):
        return dict(intervals[starts.index(key)])
    return None


def _marked_versions(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Versions newest first, each segment marked ``changed`` when the previous version
    had no segment of that side at that price with that quantity (the side-by-side diff)."""
    ordered = sorted(versions, key=lambda v: v["version"])
    out: list[dict[str, Any]] = []
    before: dict[str, set[tuple[float, float]]] = {"discharge": set(), "charge": set()}
    for i, v in enumerate(ordered):
        marked = dict(v)
        for side in ("discharge", "charge"):
            segs = v.get(side) or []
            marked[side] = [
                {
                    **seg,
                    "changed": i > 0
                    and (seg["price_per_mwh"], seg["quantity_mw"]) not in before[side],
                }
                for seg in segs
            ]
            before[side] = {(seg["price_per_mwh"], seg["quantity_mw"]) for seg in segs}
        out.append(marked)
    return out[::-1]


def _bid_context(user: User, bid_id: str) -> dict[str, Any]:
    detail = user.services.bids.get(bid_id)
    row = detail.bid
    report = detail.solve_report or {}
    node = user.services.groups().get(row.group)
    awards, _ = user.services.bids.list_awards(
        group=row.group, start_from=row.interval_start, start_to=row.interval_end, limit=50
    )
    return {
        "row": row,
        "versions": _marked_versions(detail.versions),
        "awards": [a for a in awards if a["bid_id"] == row.bid_id],
        "submittable": user.operator
        and row.status == "approved"
        and row.gate_closure > user.services.clock()
        and user.services.market is not None,
        "reviews": detail.reviews,
        "report": report,
        "outlook": _outlook(report, row),
        "plot": _curve_points(row),
        "fleet": None
        if node is None
        else {
            "p_discharge_p50_mw": node.free.p_discharge_p50_kw / 1000,
            "p_discharge_p90_mw": node.free.p_discharge_p90_kw / 1000,
            "p_charge_p50_mw": node.free.p_charge_p50_kw / 1000,
            "p_charge_p90_mw": node.free.p_charge_p90_kw / 1000,
        },
        "editable": user.operator and row.status in _REVIEWABLE,
    }


@router.get("/bids/{bid_id}", response_class=HTMLResponse)
def bid_page(request: Request, bid_id: str) -> Response:
    user = current_user_sync(request)
    try:
        ctx = _bid_context(user, bid_id)
    except NotFoundError as exc:
        return render(request, "error.html", user, 404, message=str(exc))
    return render(request, "bid.html", user, errors=[], segment_errors={}, draft=None, **ctx)


def _bid_page(
    request: Request,
    user: User,
    bid_id: str,
    status: int,
    errors: list[str],
    segment_errors: dict[str, str],
    draft: dict[str, list[tuple[str, str]]] | None = None,
) -> HTMLResponse:
    """The bid page again, with what was refused shown and what was typed kept (nothing
    was saved)."""
    return render(
        request,
        "bid.html",
        user,
        status,
        errors=errors,
        segment_errors=segment_errors,
        draft=draft,
        **_bid_context(user, bid_id),
    )


@router.post("/bids/{bid_id}/review", response_class=HTMLResponse)
async def review_bid(request: Request, bid_id: str) -> Response:
    user = await current_user(request)
    errors: list[str] = []
    status = 200
    try:
        form = await operator_form(request, user, "Reviewing needs the operator role.")
        action = (form.get("action") or [""])[0]
        if action not in ("approve", "reject"):
            raise RefusedError(422, f"unknown action {action!r}")
        version = int((form.get("version") or ["0"])[0])
        comment = (form.get("comment") or [""])[0].strip() or None
        await off_loop(
            review,
            user.services,
            user.principal,
            bid_id,
            version,
            BidAction.APPROVE if action == "approve" else BidAction.REJECT,
            comment,
        )
        return RedirectResponse(f"/console/bids/{bid_id}", status_code=303)
    except RefusedError as exc:
        errors, status = [str(exc)], exc.status
    except (BidError, ValueError) as exc:
        errors, status = [f"Not saved: {exc}"], 409
    return await off_loop(_bid_page, request, user, bid_id, status, errors, {})


@router.post("/bids/{bid_id}/resolve", response_class=HTMLResponse)
async def resolve_bid(request: Request, bid_id: str) -> Response:
    """Close a bid unknown at the market with the market's answer (audited)."""
    user = await current_user(request)
    errors: list[str] = []
    status = 200
    try:
        form = await operator_form(request, user, "Resolving needs the operator role.")
        outcome = (form.get("outcome") or [""])[0]
        if outcome not in ("accepted", "refused", "missed"):
            raise RefusedError(422, f"unknown outcome {outcome!r}")
        comment = (form.get("comment") or [""])[0].strip()
        if not comment:
            raise RefusedError(422, "say where the market's answer came from")
        version = int((form.get("version") or ["0"])[0])
        await off_loop(resolve, user.services, user.principal, bid_id, version, outcome, comment)
        return RedirectResponse(f"/console/bids/{bid_id}", status_code=303)
    except RefusedError as exc:
        errors, status = [str(exc)], exc.status
    except (BidError, ValueError) as exc:
        errors, status = [f"Not saved: {exc}"], 409
    return await off_loop(_bid_page, request, user, bid_id, status, errors, {})


@router.post("/bids/{bid_id}/submit", response_class=HTMLResponse)
async def submit_bid(request: Request, bid_id: str) -> Response:
    """Submit an approved bid now (the engine would at its gate; an operator may not wait)."""
    user = await current_user(request)
    errors: list[str] = []
    status = 200
    try:
        form = await operator_form(request, user, "Submitting needs the operator role.")
        result = await submit_one(
            user.services, user.principal, bid_id, int((form.get("version") or ["0"])[0])
        )
        if result["refused"]:
            errors, status = [f"The market refused it: {result['refused']}"], 409
        else:
            return RedirectResponse(f"/console/bids/{bid_id}", status_code=303)
    except RefusedError as exc:
        errors, status = [f"Not submitted: {exc}"], exc.status
    except FencedError as exc:
        errors, status = [f"Not submitted: {exc}; the leading instance submits it"], 409
    except (BidError, ValueError) as exc:
        errors, status = [f"Not submitted: {exc}"], 409
    return await off_loop(_bid_page, request, user, bid_id, status, errors, {})


def _segments(form: dict[str, list[str]], side: str) -> tuple[list[Segment], dict[int, str]]:
    prices, quantities = form.get(f"{side}_price", []), form.get(f"{side}_mw", [])
    out: list[Segment] = []
    errors: dict[int, str] = {}
    for i, (p, q) in enumerate(zip(prices, quantities, strict=False)):
        if not p.strip() and not q.strip():
            continue
        try:
            price, quantity = float(p), float(q)
        except ValueError:
            errors[i] = "price and MW must both be numbers"
            continue
        try:
            out.append(Segment(price_per_mwh=price, quantity_mw=quantity))
        except ValidationError as exc:
            first = exc.errors()[0]
            errors[i] = f"{first['loc'][-1]}: {first['msg']}"
    return out, errors


# "<where>, discharge segment 2: price 30 < segment 1 price 41 (...)" (market.bids.problems)
_SEGMENT_PROBLEM = re.compile(r"\b(discharge|charge) segment (\d+): (.*)$")


def _draft(form: dict[str, list[str]]) -> dict[str, list[tuple[str, str]]]:
    """What the operator typed, to show again when the edit is refused."""
    return {
        side: list(zip(form.get(f"{side}_price", []), form.get(f"{side}_mw", []), strict=False))
        for side in ("discharge", "charge")
    }


@router.post("/bids/{bid_id}/curve", response_class=HTMLResponse)
async def edit_curve(request: Request, bid_id: str) -> Response:
    user = await current_user(request)
    errors: list[str] = []
    segment_errors: dict[str, str] = {}
    draft: dict[str, list[tuple[str, str]]] | None = None
    status = 200
    try:
        form = await operator_form(request, user, "Editing needs the operator role.")
        draft = _draft(form)
        version = int((form.get("version") or ["0"])[0])
        discharge, dis_err = _segments(form, "discharge")
        charge, ch_err = _segments(form, "charge")
        segment_errors = {
            **{f"discharge-{i}": m for i, m in dis_err.items()},
            **{f"charge-{i}": m for i, m in ch_err.items()},
        }
        if segment_errors:
            raise RefusedError(422, "Some segments are not valid (see each below); nothing saved.")
        override = (form.get("override_reason") or [""])[0].strip() or None
        comment = (form.get("comment") or [""])[0].strip() or None
        await off_loop(
            apply_edit,
            user.services,
            user.principal,
            bid_id,
            version,
            BidCurve(discharge=discharge, charge=charge),
            comment,
            override,
        )
        return RedirectResponse(f"/console/bids/{bid_id}", status_code=303)
    except RefusedError as exc:
        errors, status = [str(exc)], exc.status
    except InvalidBidError as exc:
        status = 422
        errors = ["The market refuses this curve; nothing saved."]
        segment_errors = {}
        for problem in exc.problems:
            m = _SEGMENT_PROBLEM.search(problem)
            if m and draft is not None:  # shown next to the typed row it names
                typed = [i for i, (p, q) in enumerate(draft[m[1]]) if p.strip() or q.strip()]
                k = int(m[2]) - 1
                segment_errors[f"{m[1]}-{typed[k] if k < len(typed) else k}"] = m[3]
            else:
                errors.append(f"The market refuses it: {problem}")
    except BeyondCapabilityError as exc:
        errors, status = [f"Beyond the fleet: {m}" for m in exc.found], 422
    except PermissionError as exc:
        errors, status = [str(exc)], 403
    except (BidError, ValueError) as exc:
        errors, status = [f"Not saved: {exc}"], 409
    return await off_loop(_bid_page, request, user, bid_id, status, errors, segment_errors, draft)
