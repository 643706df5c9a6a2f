"""The console's home page: what needs the operator now.

The next gates (soonest first, with what is still a draft, what is approved and the MW each
side offers), then alerts: bids whose outcome at the market is unknown or that missed their
gate in the last day, intervals delivered short (as the meter counts them) in the last two
hours, sites stale or offline now, and instances whose partial fleet view is stale.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from vpp.console.routes import User, current_user_sync, engine_now, render
from vpp.store.bids import BidFilter, BidRow
from vpp.store.tables import dispatch_intervals

GATES_SHOWN = 5


def _gates(user: User, now: datetime) -> list[dict[str, Any]]:
    rows, _ = user.services.bids.list_bids(BidFilter(start_from=now), 0, 500)
    by_gate: dict[tuple[str, datetime], list[BidRow]] = defaultdict(list)
    for r in rows:
        if r.gate_closure > now:
            by_gate[(r.market, r.gate_closure)].append(r)
    out = []
    for (market, gate), members in sorted(by_gate.items(), key=lambda kv: kv[0][1])[:GATES_SHOWN]:
        drafts = [b for b in members if b.status == "draft"]
        out.append(
            {
                "market": market,
                "gate": gate,
                "bids": len(members),
                "drafts": len(drafts),
                "approved": sum(b.status == "approved" for b in members),
                "submitted": sum(b.status in ("submitted", "accepted") for b in members),
                "discharge_mw": sum(s["quantity_mw"] for b in members for s in b.discharge),
                "charge_mw": sum(s["quantity_mw"] for b in members for s in b.charge),
                "first_draft": drafts[0].bid_id if drafts else None,
            }
        )
    return out


def _alert(level: str, text: str, href: str) -> dict[str, str]:
    return {"level": level, "text": text, "href": href}


def _alerts(user: User, now: datetime) -> list[dict[str, str]]:
    svc = user.services
    out: list[dict[str, str]] = []
    for status, since, words in (
        ("unknown", now - timedelta(days=7), "unknown at the market: record its answer"),
        ("missed", now - timedelta(days=1), "missed its gate"),
    ):
        rows, n = svc.bids.list_bids(BidFilter(status=status, start_from=since), 0, 5)
        for r in rows:
            out.append(
                {
                    "level": "bad",
                    "text": f"bid {r.bid_id} {words}",
                    "href": f"/console/bids/{r.bid_id}",
                }
            )
        if n > len(rows):
            out.append(
                {"level": "bad", "text": f"{n - len(rows)} more {status}", "href": "/console/bids"}
            )
    t = dispatch_intervals
    with svc.db.connect() as conn:
        short = conn.execute(
            sa.select(t.c.group_id, t.c.interval_start, t.c.target_kw, t.c.shortfall_kw)
            .where(t.c.status == "short", t.c.interval_end > now - timedelta(hours=2))
            .order_by(t.c.interval_start.desc())
            .limit(5)
        ).all()
    for d in short:
        text = (
            f"{d.group_id} {d.interval_start:%H:%M}: delivered {d.shortfall_kw:.1f} kW off its "
            f"{d.target_kw:.1f} kW target"
        )
        out.append(_alert("bad", text, "/console/dispatch"))
    snap, _ = svc.fleet()
    if snap is not None:
        conn_counts = snap.fleet.counts.get("connectivity", {})
        lost = conn_counts.get("stale", 0) + conn_counts.get("offline", 0)
        if lost:
            text = (
                f"{conn_counts.get('stale', 0)} sites stale, "
                f"{conn_counts.get('offline', 0)} offline"
            )
            out.append(_alert("warn", text, "/console/fleet"))
    view = svc.combined()
    if view is not None and not view.coverage.complete:
        c = view.coverage
        stale = f"; stale: {', '.join(c.stale_instances)}" if c.stale_instances else ""
        text = f"fleet view: {c.partitions_reported}/{c.partitions_total} partitions{stale}"
        out.append(_alert("bad", text, "/console/fleet"))
    return out


router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def home(request: Request) -> Response:
    """What needs the operator now: the next gates with what awaits review, and alerts."""
    user = current_user_sync(request)
    now = engine_now(request)
    return render(request, "now.html", user, gates=_gates(user, now), alerts=_alerts(user, now))
