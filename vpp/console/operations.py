"""Console pages for operations: the fleet, one site, dispatch with manual targets, and
peak-shaving plans."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from vpp.console.routes import (
    User,
    current_user,
    current_user_sync,
    engine_now,
    off_loop,
    operator_form,
    render,
)
from vpp.dispatch.manual import TargetCreate, cancel_manual_target, schedule_manual_target
from vpp.services import RefusedError
from vpp.store import ledger, peak_schedules
from vpp.store.ledger import CommandStatus
from vpp.store.site_events import site_history_page
from vpp.store.tables import dispatch_intervals, group_aggregates
from vpp.twins.states import NAMES
from vpp.twins.view import site_view

router = APIRouter(prefix="/console", include_in_schema=False)


# -- fleet and dispatch ---------------------------------------------------------------------

_SORTS = {"site_id", "soc", "p_kw", "health", "connectivity", "operation"}


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(
    request: Request,
    group: str | None = None,
    state: str | None = None,
    sort: str = "site_id",
    desc: bool = False,
) -> Response:
    user = current_user_sync(request)
    snap, store = user.services.fleet()
    # The groups' figures are the whole fleet's (combined when instances share it); the
    # site list is the sites this instance holds the twins of.
    groups = sorted(user.services.groups().items())
    sites: list[Any] = []
    if snap is not None and store is not None and group in snap.groups:
        now_s = engine_now(request).timestamp()
        views = [site_view(store, s, now_s) for s in snap.children("group", group)]
        sites = [v for v in views if v is not None]
        if state:
            sites = [v for v in sites if state in (v.connectivity, v.operation, v.command)]
        key = sort if sort in _SORTS else "site_id"
        sites.sort(key=lambda v: (getattr(v, key) is None, getattr(v, key) or 0), reverse=desc)
    return render(
        request,
        "fleet.html",
        user,
        history=_fleet_history(user, engine_now(request), group),
        groups=groups,
        group=group,
        state=state or "",
        sort=sort,
        desc=desc,
        sites=sites[:500],
        states=sorted({n for names in NAMES.values() for n in names}),
        total=len(sites),
        snapshot_at=snap.as_of if snap is not None else None,
        coverage=(view.coverage if (view := user.services.combined()) is not None else None),
    )


FLEET_HOURS = 6  # the fleet page's plot: each group's recorded aggregates this far back


def _fleet_history(user: User, now: datetime, group: str | None) -> dict[str, Any]:
    """Per group, its recorded aggregates (vpp.store.history, one a minute) over the last
    ``FLEET_HOURS``: net power, discharge and charge P50/P90 (charge negative, as power is
    signed), and the dischargeable energy with its bounds. Chart columns, epoch seconds."""
    g = group_aggregates
    q = (
        sa.select(
            g.c.ts,
            g.c.group_id,
            g.c.p_net_kw,
            g.c.p_discharge_p50_kw,
            g.c.p_discharge_p90_kw,
            g.c.p_charge_p50_kw,
            g.c.p_charge_p90_kw,
            g.c.e_discharge_kwh,
            g.c.e_discharge_kwh_lower,
            g.c.e_discharge_kwh_upper,
        )
        .where(g.c.ts >= now - timedelta(hours=FLEET_HOURS), g.c.ts <= now)
        .order_by(g.c.ts)
    )
    if group is not None:
        q = q.where(g.c.group_id == group)
    out: dict[str, dict[str, list[float]]] = {}
    with user.services.db.connect() as conn:
        for r in conn.execute(q):
            cols = out.setdefault(
                r.group_id,
                {k: [] for k in ("t", "p_net", "d50", "d90", "c50", "c90", "e", "e_lo", "e_hi")},
            )
            cols["t"].append(r.ts.timestamp())
            cols["p_net"].append(r.p_net_kw)
            cols["d50"].append(r.p_discharge_p50_kw)
            cols["d90"].append(r.p_discharge_p90_kw)
            cols["c50"].append(-r.p_charge_p50_kw)
            cols["c90"].append(-r.p_charge_p90_kw)
            cols["e"].append(r.e_discharge_kwh)
            cols["e_lo"].append(r.e_discharge_kwh_lower)
            cols["e_hi"].append(r.e_discharge_kwh_upper)
    return {"hours": FLEET_HOURS, "groups": out, "now": now.timestamp()}


def _dispatch_chart(rows: list[Any], now: datetime) -> dict[str, Any]:
    """Per group, each interval's target, delivered (measured mean, null until measured)
    and shortfall, in time order (epoch seconds of each interval's start and end)."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for r in sorted(rows, key=lambda r: r.interval_start):
        if r.source == "peak_shaving":
            continue  # a site's own plan: on its site page, not in its group's delivery
        cols = out.setdefault(
            r.group_id, {k: [] for k in ("t0", "t1", "target", "delivered", "short")}
        )
        cols["t0"].append(r.interval_start.timestamp())
        cols["t1"].append(r.interval_end.timestamp())
        cols["target"].append(r.target_kw)
        cols["delivered"].append(r.delivered_kw)
        cols["short"].append(r.shortfall_kw if r.status in ("delivered", "short") else None)
    return {"groups": out, "now": now.timestamp()}


def _in_operator_order(rows: list[Any], now: datetime) -> dict[str, list[Any]]:
    """The intervals an operator looks at first: what runs now, then what just ended
    (newest first), then what is ahead (soonest first)."""
    active = [r for r in rows if r.interval_start <= now < r.interval_end]
    past = [r for r in rows if r.interval_end <= now]
    ahead = sorted((r for r in rows if r.interval_start > now), key=lambda r: r.interval_start)
    return {"now": active, "past": past, "ahead": ahead}


@router.get("/dispatch", response_class=HTMLResponse)
def dispatch_page(request: Request) -> Response:
    user = current_user_sync(request)
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
    now = engine_now(request)
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
    return render(
        request,
        "dispatch.html",
        user,
        status_code,
        rows=rows,
        ordered=_in_operator_order(list(rows), now),
        chart=_dispatch_chart(list(rows), now),
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
    user = await current_user(request)
    draft: dict[str, str] = {}
    try:
        form = await operator_form(request, user, "Manual targets need the operator role.")
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
            return await off_loop(
                _dispatch_page,
                request,
                user,
                422,
                flash=["Not scheduled: see the fields."],
                errors=errors,
                draft=draft,
            )
        row = await schedule_manual_target(user.services, user.principal, body)
    except RefusedError as exc:
        return await off_loop(
            _dispatch_page, request, user, exc.status, flash=[f"Not scheduled: {exc}"], draft=draft
        )
    return await off_loop(
        _dispatch_page,
        request,
        user,
        flash=[f"Scheduled {row['dispatch_id']}: {row['target_kw']:g} kW for {row['group_id']}"],
    )


@router.post("/dispatch/targets/{dispatch_id}/cancel", response_class=HTMLResponse)
async def cancel_target(request: Request, dispatch_id: str) -> Response:
    user = await current_user(request)
    try:
        await operator_form(request, user, "Cancelling needs the operator role.")
        await cancel_manual_target(user.services, user.principal, dispatch_id)
    except RefusedError as exc:
        return await off_loop(
            _dispatch_page, request, user, exc.status, flash=[f"Not cancelled: {exc}"]
        )
    return await off_loop(_dispatch_page, request, user, flash=[f"Cancelled {dispatch_id}"])


# -- one site ------------------------------------------------------------------------------


@router.get("/sites/{site_id}", response_class=HTMLResponse)
def site_page(request: Request, site_id: str) -> Response:
    """One site: its twin, its recent readings and state changes plotted, its commands."""
    user = current_user_sync(request)
    _, store = user.services.fleet()
    i = store.index.get(site_id) if store is not None else None
    if store is None or i is None:
        return render(request, "error.html", user, 404, message=f"site {site_id} not found")
    view = site_view(store, site_id, engine_now(request).timestamp())
    events, _ = site_history_page(user.services.db, site_id, limit=50)
    commands, _ = ledger.last_states(user.services.db, site_id=site_id, limit=20)
    trace = store.recent_telemetry(i)
    return render(
        request,
        "site.html",
        user,
        shaving=_site_shaving(user, store, site_id, i),
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


def _site_shaving(user: User, store: Any, site_id: str, row: int) -> dict[str, Any] | None:
    """A tariffed site's peak shaving for its page: the tariff, the month's peak so far,
    whether it is planned (or paused, or skipped and why) and its newest plan."""
    tariff = store.tariffs.get(site_id)
    if tariff is None:
        return None
    shaver = user.services.peak_shaver
    plans, _ = peak_schedules.list_schedules(user.services.db, site_id=site_id, limit=1)
    return {
        "tariff": tariff,
        "tou": [_period_words(p) for p in tariff.tou],
        "state": shaver.site_state(site_id) if shaver is not None else None,
        "month_peak_kw": shaver.month_peak_kw(row) if shaver is not None else None,
        "plan": plans[0] if plans else None,
    }


def _runs(values: list[int]) -> str:
    """``[0, 1, 2, 5, 21, 22, 23]`` as "0–2, 5, 21–23"."""
    out: list[str] = []
    ordered = sorted(set(values))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}–{ordered[j]}")
        i = j + 1
    return ", ".join(out)


def _period_words(p: Any) -> str:
    """A time-of-use period as a line: price, hours, and the days and months it keeps to."""
    days = {(0, 1, 2, 3, 4): "weekdays", (5, 6): "weekends"}.get(tuple(sorted(p.weekdays)))
    text = f"{p.price_per_kwh:g}/kWh hours {_runs(p.hours)}"
    if len(set(p.weekdays)) < 7:
        names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        text += " on " + (days or ", ".join(names[d] for d in sorted(p.weekdays)))
    if len(set(p.months)) < 12:
        text += f" in months {_runs(p.months)}"
    return text


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request) -> Response:
    user = current_user_sync(request)
    rows, count = peak_schedules.list_schedules(user.services.db, skip=0, limit=100)
    return render(request, "schedules.html", user, rows=rows, count=count)


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse)
def schedule_page(request: Request, schedule_id: str) -> Response:
    user = current_user_sync(request)
    row = peak_schedules.get(user.services.db, schedule_id)
    if row is None:
        return render(request, "error.html", user, 404, message=f"schedule {schedule_id} not found")
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
    return render(request, "schedule.html", user, row=row, plot=plot)
