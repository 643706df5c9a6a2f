"""The bid service: what an operator can do to a bid, whoever asks (the API, the console;
the CLI through the API): edit a curve (the market's rules, then the fleet's physics over
what is still to come, then a new version), approve or reject (four-eyes), and submit now.
The store (:mod:`vpp.store.bids`) keeps bids and guards their lifecycle; this module decides
what an operator's request means and checks it against the fleet."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from fastapi.concurrency import run_in_threadpool

from market.bids import BidCurve, problems
from market.definitions import Product, load_market
from market.lifecycle import BidAction
from vpp.bidding.physics import curve_problems
from vpp.logs import ctx
from vpp.services import RefusedError, Services
from vpp.store import audit
from vpp.store.bids import BidError, BidFilter, BidRow, ConflictError, InvalidBidError
from vpp.store.fencing import FencedError
from vpp.store.keys import Principal

log = logging.getLogger("vpp.bids")


class BeyondCapabilityError(Exception):
    """A curve beyond the group's free capability, and no (admin) override given."""

    def __init__(self, found: list[str]) -> None:
        super().__init__("; ".join(found))
        self.found = found


def apply_edit(
    svc: Services,
    principal: Principal,
    bid_id: str,
    version: int,
    curve: BidCurve,
    comment: str | None,
    override_reason: str | None,
) -> BidRow:
    """An operator's curve edit, as the API and the console both apply it: the market's
    rules first (:class:`InvalidBidError`), then the fleet's free capability
    (:class:`BeyondCapabilityError` unless an admin overrides with a reason, audited), then
    a new version (:class:`ConflictError` on a stale version or a closed gate)."""
    row = svc.bids.row(bid_id)
    candidate = row.to_bid().model_copy(update={"curve": curve, "version": row.version + 1})
    market, bands = svc.bids.day_bands(row)
    rules = problems(market, candidate, day_bands=bands.as_day_bands() if bands else None)
    if rules:  # the market's rules first: a curve the market refuses needs no physics
        raise InvalidBidError(rules)
    found = capability_problems(svc, row, curve)
    if found and override_reason is None:
        raise BeyondCapabilityError(found)
    if override_reason is not None and not principal.can("admin"):
        raise PermissionError("override_reason: overriding a bound needs the admin role")
    row = svc.bids.edit(bid_id, version, curve, principal, comment)
    if found:
        with svc.db.begin() as conn:
            audit.record(
                conn,
                principal,
                "override",
                "bid",
                bid_id,
                {"problems": found},
                {"version": row.version, "reason": override_reason},
            )
    log_bid("edited", row, principal.actor)
    return row


def capability_problems(svc: Services, row: BidRow, curve: BidCurve) -> list[str]:
    """The group's curves still to be delivered around this interval, this one edited, and
    its standing awards, against its free capability now (:mod:`vpp.bidding.physics`);
    nothing to check without a fleet view."""
    snap, _ = svc.fleet()
    if snap is None:
        return []
    node = svc.groups().get(row.group)
    if node is None:
        return [f"group {row.group!r} has no sites in the fleet now"]
    market = load_market(row.market)
    product = Product(row.product)
    now = svc.clock()
    step = market.interval(product)
    day = timedelta(days=1)
    start = max(row.interval_start - day, now - step)
    rows, _ = svc.bids.list_bids(
        BidFilter(row.market, row.group, None, start, row.interval_start + day), 0, 500
    )
    dead = ("rejected", "refused", "missed", "unawarded")
    curves = {
        r.interval_start: r.to_bid().curve
        for r in rows
        if r.product == row.product and r.status not in dead
    }
    curves[row.interval_start] = curve
    awarded = {
        a["interval_start"]: float(a["p_mw"])
        for a in svc.bids.list_awards(
            group=row.group, start_from=start, start_to=row.interval_start + day, limit=1000
        )[0]
        if a["product"] == row.product
    }
    return curve_problems(
        node, market, product, row.interval_start, curves, now=now, awarded_mw=awarded
    )


async def submit_one(
    svc: Services, principal: Principal, bid_id: str, version: int
) -> dict[str, Any]:
    """Submit one approved bid at ``version`` (the API and the console both come here):
    :class:`RefusedError` (503) without a market, a version conflict if another version is
    current, and the market's own accept/refuse in the result. The exchange is logged
    before and after (the transaction log, under ``tx_id``)."""
    if svc.market is None:
        raise RefusedError(503, "no market adapter is configured")
    current = await run_in_threadpool(svc.bids.row, bid_id)
    if current.version != version:
        raise ConflictError(
            f"bid {bid_id}: version {version} is not current (current: v{current.version}, "
            f"{current.status})",
            current,
        )
    tx_id = f"submit-{bid_id}-v{version}-{uuid.uuid4().hex[:8]}"
    try:
        result = await run_in_threadpool(svc.bids.submit, [bid_id], principal, svc.market, tx_id)
    except (BidError, FencedError):
        raise
    except Exception as exc:
        log.exception("submitting %s failed", bid_id, extra=ctx(bid_id=bid_id))
        raise RefusedError(
            502,
            f"the market did not answer ({type(exc).__name__}: {exc}); the bid stays "
            f"submitted under {tx_id} and the engine closes it from the transaction log and "
            "the market (or an operator resolves it)",
        ) from None
    row = await run_in_threadpool(svc.bids.row, bid_id)
    log_bid("submitted", row, principal.actor)
    return {
        "tx_id": tx_id,
        "accepted": result.accepted,
        "refused": result.refused,
        "bid": row.to_json(),
    }


def review(
    svc: Services,
    principal: Principal,
    bid_id: str,
    version: int,
    action: BidAction,
    comment: str | None,
) -> BidRow:
    """Approve or reject ``version`` of a bid (four-eyes and the lifecycle are the store's
    guards); logged."""
    if action not in (BidAction.APPROVE, BidAction.REJECT):
        raise RefusedError(422, f"a review approves or rejects, not {action.value}")
    row = svc.bids.review(bid_id, version, action, principal, comment)
    log_bid("approved" if action == BidAction.APPROVE else "rejected", row, principal.actor)
    return row


OUTCOMES = {
    "accepted": BidAction.ACCEPT,
    "refused": BidAction.REFUSE,
    "missed": BidAction.MISS,
}


def resolve(
    svc: Services, principal: Principal, bid_id: str, version: int, outcome: str, comment: str
) -> BidRow:
    """An operator closes a bid ``unknown`` at the market with the market's own answer
    (its portal, its desk): audited, with where the answer came from."""
    row = svc.bids.resolve(bid_id, version, OUTCOMES[outcome], principal, comment)
    log_bid(f"resolved as {outcome}", row, principal.actor)
    return row


def log_bid(what: str, row: BidRow, actor: str) -> None:
    log.info(
        "bid %s v%d %s by %s -> %s",
        row.bid_id,
        row.version,
        what,
        actor,
        row.status,
        extra=ctx(bid_id=row.bid_id, group_id=row.group, interval_start=row.interval_start),
    )
