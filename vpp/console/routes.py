"""Console pages (see :mod:`vpp.console` for how and why they are built this way)."""

from __future__ import annotations

import hmac
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from market.bids import BidCurve, Segment
from market.lifecycle import BidAction
from vpp.api.routes.bids import BeyondCapabilityError, apply_edit, submit_one
from vpp.api.routes.dispatch import TargetCreate, cancel_manual_target, schedule_manual_target
from vpp.api.routes.sites import recent_telemetry
from vpp.api.services import Services
from vpp.console.sessions import COOKIE, Session, SessionStore
from vpp.store import ledger, peak_schedules
from vpp.store.bids import BidError, BidFilter, BidRow, InvalidBidError, NotFoundError
from vpp.store.keys import Principal
from vpp.store.ledger import CommandStatus
from vpp.store.site_events import site_history_page
from vpp.store.tables import dispatch_intervals
from vpp.twins.states import NAMES
from vpp.twins.view import site_view

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)
_REVIEWABLE = ("draft", "approved")


@dataclass(frozen=True, slots=True)
class User:
    principal: Principal
    session: Session
    services: Services

    @property
    def operator(self) -> bool:
        return self.principal.can("operator")


class LoginRequiredError(Exception):
    """No valid session: the browser is sent to the sign-in page."""


def install(app: FastAPI, services: Services) -> None:
    """Serve the console from ``app``: its pages, its vendored assets, its sessions."""
    app.state.console_sessions = SessionStore()
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(router)

    @app.exception_handler(LoginRequiredError)
    async def _login(request: Request, exc: LoginRequiredError) -> Response:
        return RedirectResponse("/console/login", status_code=303)


async def _user(request: Request) -> User:
    store: SessionStore = request.app.state.console_sessions
    session = store.get(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequiredError
    services: Services = request.app.state.services
    principal = await services.keys.verify_async(session.key)  # revoked keys stop here
    if principal is None:
        store.drop(request.cookies.get(COOKIE))
        raise LoginRequiredError
    return User(principal, session, services)


def _page(
    request: Request, name: str, user: User | None, status: int = 200, **ctx: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"user": user, "now": _now(request), **ctx},
        status_code=status,
    )


def _now(request: Request) -> datetime:
    services: Services = request.app.state.services
    return services.clock()


async def _form(request: Request, user: User | None) -> dict[str, list[str]]:
    """The posted form as lists; a bad CSRF token or a NUL anywhere is refused."""
    form = await request.form()
    data: dict[str, list[str]] = defaultdict(list)
    for k, v in form.multi_items():
        if not isinstance(v, str) or "\x00" in v or "\x00" in k:
            raise RefusedError(422, "a form value holds a NUL character or a file")
        data[k].append(v)
    if user is not None and not hmac.compare_digest(
        (data.get("csrf") or [""])[0], user.session.csrf
    ):
        raise RefusedError(403, "the form's session token is missing or stale: reload the page")
    return data


async def _operator_form(request: Request, user: User, refusal: str) -> dict[str, list[str]]:
    """The posted form of an operator's action; a viewer gets ``refusal`` (403)."""
    form = await _form(request, user)
    if not user.operator:
        raise RefusedError(403, refusal)
    return form


class RefusedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- sign-in ------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def home() -> Response:
    return RedirectResponse("/console/bids", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return _page(request, "login.html", None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    try:
        form = await _form(request, None)
    except RefusedError as exc:
        return _page(request, "login.html", None, exc.status, error=exc.message)
    key = (form.get("api_key") or [""])[0].strip()
    services: Services = request.app.state.services
    principal = await services.keys.verify_async(key or None)
    if principal is None:
        return _page(request, "login.html", None, 401, error="That API key is not valid.")
    sid, _ = request.app.state.console_sessions.create(key)
    response = RedirectResponse("/console/bids", status_code=303)
    response.set_cookie(
        COOKIE, sid, httponly=True, samesite="strict", path="/console", secure=False
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    request.app.state.console_sessions.drop(request.cookies.get(COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


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
async def bids_page(request: Request) -> Response:
    user = await _user(request)
    now = _now(request)
    return _page(request, "bids.html", user, gates=_due_bids(user, now), flash=None)


@router.get("/bids/table", response_class=HTMLResponse)
async def bids_table(request: Request) -> Response:
    user = await _user(request)
    return _page(request, "_bids_table.html", user, gates=_due_bids(user, _now(request)))


@router.post("/bids/approve", response_class=HTMLResponse)
async def approve_many(request: Request) -> Response:
    """Approve several unedited drafts at once; each is still checked against its version."""
    user = await _user(request)
    try:
        form = await _form(request, user)
    except RefusedError as exc:
        return _page(request, "bids.html", user, exc.status, gates=[], flash=[exc.message])
    results = []
    if not user.operator:
        results.append("Approving needs the operator role.")
    else:
        for item in form.get("bid", []):
            bid_id, _, version = item.rpartition(":")
            try:
                user.services.bids.review(
                    bid_id, int(version), BidAction.APPROVE, user.principal, "console: bulk"
                )
                results.append(f"{bid_id}: approved")
            except (BidError, ValueError) as exc:
                results.append(f"{bid_id}: not approved — {exc}")
    status = 403 if not user.operator else 200
    return _page(
        request, "bids.html", user, status, gates=_due_bids(user, _now(request)), flash=results
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
    snap, _ = user.services.fleet()
    node = snap.groups.get(row.group) if snap is not None else None
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
async def bid_page(request: Request, bid_id: str) -> Response:
    user = await _user(request)
    try:
        ctx = _bid_context(user, bid_id)
    except NotFoundError as exc:
        return _page(request, "error.html", user, 404, message=str(exc))
    return _page(request, "bid.html", user, errors=[], segment_errors={}, draft=None, **ctx)


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
    return _page(
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
    user = await _user(request)
    errors: list[str] = []
    status = 200
    try:
        form = await _operator_form(request, user, "Reviewing needs the operator role.")
        action = (form.get("action") or [""])[0]
        if action not in ("approve", "reject"):
            raise RefusedError(422, f"unknown action {action!r}")
        version = int((form.get("version") or ["0"])[0])
        comment = (form.get("comment") or [""])[0].strip() or None
        user.services.bids.review(
            bid_id,
            version,
            BidAction.APPROVE if action == "approve" else BidAction.REJECT,
            user.principal,
            comment,
        )
        return RedirectResponse(f"/console/bids/{bid_id}", status_code=303)
    except RefusedError as exc:
        errors, status = [exc.message], exc.status
    except (BidError, ValueError) as exc:
        errors, status = [f"Not saved: {exc}"], 409
    return _bid_page(request, user, bid_id, status, errors, {})


@router.post("/bids/{bid_id}/submit", response_class=HTMLResponse)
async def submit_bid(request: Request, bid_id: str) -> Response:
    """Submit an approved bid now (the engine would at its gate; an operator may not wait)."""
    user = await _user(request)
    errors: list[str] = []
    status = 200
    try:
        form = await _operator_form(request, user, "Submitting needs the operator role.")
        result = await submit_one(
            user.services, user.principal, bid_id, int((form.get("version") or ["0"])[0])
        )
        if result["refused"]:
            errors, status = [f"The market refused it: {result['refused']}"], 409
        else:
            return RedirectResponse(f"/console/bids/{bid_id}", status_code=303)
    except RefusedError as exc:
        errors, status = [exc.message], exc.status
    except HTTPException as exc:
        errors, status = [f"Not submitted: {exc.detail}"], exc.status_code
    except (BidError, ValueError) as exc:
        errors, status = [f"Not submitted: {exc}"], 409
    return _bid_page(request, user, bid_id, status, errors, {})


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
    user = await _user(request)
    errors: list[str] = []
    segment_errors: dict[str, str] = {}
    draft: dict[str, list[tuple[str, str]]] | None = None
    status = 200
    try:
        form = await _operator_form(request, user, "Editing needs the operator role.")
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
        apply_edit(
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
        errors, status = [exc.message], exc.status
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
    return _bid_page(request, user, bid_id, status, errors, segment_errors, draft)


# -- fleet and dispatch ---------------------------------------------------------------------

_SORTS = {"site_id", "soc", "p_kw", "health", "connectivity", "operation"}


@router.get("/fleet", response_class=HTMLResponse)
async def fleet_page(
    request: Request,
    group: str | None = None,
    state: str | None = None,
    sort: str = "site_id",
    desc: bool = False,
) -> Response:
    user = await _user(request)
    snap, store = user.services.fleet()
    groups = sorted(snap.groups.items()) if snap is not None else []
    sites: list[Any] = []
    if snap is not None and store is not None and group in snap.groups:
        now_s = _now(request).timestamp()
        views = [site_view(store, s, now_s) for s in snap.children("group", group)]
        sites = [v for v in views if v is not None]
        if state:
            sites = [v for v in sites if state in (v.connectivity, v.operation, v.command)]
        key = sort if sort in _SORTS else "site_id"
        sites.sort(key=lambda v: (getattr(v, key) is None, getattr(v, key) or 0), reverse=desc)
    return _page(
        request,
        "fleet.html",
        user,
        groups=groups,
        group=group,
        state=state or "",
        sort=sort,
        desc=desc,
        sites=sites[:500],
        states=sorted({n for names in NAMES.values() for n in names}),
        total=len(sites),
        snapshot_at=snap.as_of if snap is not None else None,
    )


@router.get("/dispatch", response_class=HTMLResponse)
async def dispatch_page(request: Request) -> Response:
    user = await _user(request)
    return _dispatch_page(request, user)


def _dispatch_page(
    request: Request,
    user: User,
    status_code: int = 200,
    *,
    flash: list[str] | None = None,
    errors: dict[str, str] | None = None,
    draft: dict[str, str] | None = None,
) -> HTMLResponse:
    now = _now(request)
    t = dispatch_intervals
    with user.services.db.connect() as conn:
        rows = conn.execute(
            sa.select(t)
            .where(t.c.interval_end > now - timedelta(hours=2))
            .order_by(t.c.interval_start.desc(), t.c.group_id)
            .limit(200)
        ).all()
    statuses = [s.value for s in CommandStatus]
    status = request.query_params.get("status") or None
    if status not in statuses:
        status = None  # an unknown filter shows every command (the select offers the known)
    commands, count = ledger.last_states(user.services.db, state=status, skip=0, limit=100)
    _, store = user.services.fleet()
    step = timedelta(minutes=5)
    return _page(
        request,
        "dispatch.html",
        user,
        status_code,
        rows=rows,
        commands=commands,
        command_count=count,
        command_status=status or "",
        statuses=statuses,
        groups=sorted(store.group_index) if store is not None else [],
        flash=flash or [],
        errors=errors or {},
        draft=draft
        or {
            "group": "",
            "interval_start": (now - timedelta(seconds=now.timestamp() % 300) + step).strftime(
                "%Y-%m-%dT%H:%M"
            ),
            "duration_s": "300",
            "target_kw": "",
        },
    )


_TARGET_FIELDS = ("group", "interval_start", "duration_s", "target_kw")


@router.post("/dispatch/targets", response_class=HTMLResponse)
async def create_target(request: Request) -> Response:
    """A manual target from the form, checked exactly as ``POST /api/v1/dispatch/targets``
    checks it (the same code); the interval start is typed in UTC."""
    user = await _user(request)
    draft: dict[str, str] = {}
    try:
        form = await _operator_form(request, user, "Manual targets need the operator role.")
        draft = {k: (form.get(k) or [""])[0].strip() for k in _TARGET_FIELDS}
        start = draft["interval_start"]
        try:
            body = TargetCreate.model_validate(
                {
                    **draft,
                    "interval_start": f"{start}Z" if start and start[-1].isdigit() else start,
                }
            )
        except ValidationError as exc:
            errors = {str(e["loc"][0]): str(e["msg"]) for e in exc.errors()}
            return _dispatch_page(
                request,
                user,
                422,
                flash=["Not scheduled: see the fields."],
                errors=errors,
                draft=draft,
            )
        row = await schedule_manual_target(user.services, user.principal, body)
    except RefusedError as exc:
        return _dispatch_page(request, user, exc.status, flash=[exc.message], draft=draft)
    except HTTPException as exc:
        return _dispatch_page(
            request, user, exc.status_code, flash=[f"Not scheduled: {_detail(exc)}"], draft=draft
        )
    return _dispatch_page(
        request,
        user,
        flash=[f"Scheduled {row['dispatch_id']}: {row['target_kw']:g} kW for {row['group_id']}"],
    )


@router.post("/dispatch/targets/{dispatch_id}/cancel", response_class=HTMLResponse)
async def cancel_target(request: Request, dispatch_id: str) -> Response:
    user = await _user(request)
    try:
        await _operator_form(request, user, "Cancelling needs the operator role.")
        await cancel_manual_target(user.services, user.principal, dispatch_id)
    except RefusedError as exc:
        return _dispatch_page(request, user, exc.status, flash=[exc.message])
    except HTTPException as exc:
        return _dispatch_page(
            request, user, exc.status_code, flash=[f"Not cancelled: {_detail(exc)}"]
        )
    return _dispatch_page(request, user, flash=[f"Cancelled {dispatch_id}"])


def _detail(exc: HTTPException) -> str:
    """An API refusal's detail as one line (a string, or the 422 list of field errors)."""
    if isinstance(exc.detail, list):
        return "; ".join(str(d.get("msg", d)) for d in exc.detail)
    return str(exc.detail)


# -- one site ------------------------------------------------------------------------------


@router.get("/sites/{site_id}", response_class=HTMLResponse)
async def site_page(request: Request, site_id: str) -> Response:
    """One site: its twin, its recent readings and state changes plotted, its commands."""
    user = await _user(request)
    _, store = user.services.fleet()
    i = store.index.get(site_id) if store is not None else None
    if store is None or i is None:
        return _page(request, "error.html", user, 404, message=f"site {site_id} not found")
    view = site_view(store, site_id, _now(request).timestamp())
    events, _ = site_history_page(user.services.db, site_id, limit=50)
    commands, _ = ledger.last_states(user.services.db, site_id=site_id, limit=20)
    trace = recent_telemetry(store, i)
    return _page(
        request,
        "site.html",
        user,
        site=view,
        events=events,
        commands=commands,
        trace=trace,
        plot={
            **trace,
            "events": [
                {"t": e["ts"].timestamp(), "label": f"{e['kind']}: {e['to_state']}"} for e in events
            ],
        },
    )


@router.get("/schedules", response_class=HTMLResponse)
async def schedules_page(request: Request) -> Response:
    user = await _user(request)
    rows, count = peak_schedules.list_schedules(user.services.db, skip=0, limit=100)
    return _page(request, "schedules.html", user, rows=rows, count=count)


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse)
async def schedule_page(request: Request, schedule_id: str) -> Response:
    user = await _user(request)
    row = peak_schedules.get(user.services.db, schedule_id)
    if row is None:
        return _page(request, "error.html", user, 404, message=f"schedule {schedule_id} not found")
    step = timedelta(seconds=row["interval_s"])
    starts = [row["interval_start"] + k * step for k in range(row["intervals"])]
    plot = {
        "t": [s.timestamp() for s in starts],
        "net_load_kw": row["net_load_kw"],
        "grid_kw": row["grid_kw"],
        "p_kw": row["p_kw"],
        "peak_without_kw": row["peak_without_kw"],
        "peak_kw": row["peak_kw"],
        "peak_so_far_kw": row["peak_so_far_kw"],
        "soc": row.get("soc"),
    }
    return _page(request, "schedule.html", user, row=row, plot=plot)
