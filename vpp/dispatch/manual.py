"""Operator targets: a manual target for a group or one site, checked (horizon, the
interval not over, the node's capability, no overlap with another target) and scheduled
on the dispatch service, or cancelled; each audited. The API and the console both call
these; refusals are :class:`vpp.services.RefusedError`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from vpp.bidding.physics import target_problems
from vpp.dispatch.service import TARGET_HORIZON
from vpp.dispatch.targets import GroupTarget, dispatch_id
from vpp.records import utc_iso
from vpp.services import RefusedError, Services
from vpp.store import audit, dispatch_log
from vpp.store.keys import Principal


class TargetCreate(BaseModel):
    """A manual target for a group (an operator override or a test dispatch)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "group": "north",
                "interval_start": "2026-11-21T14:05:00Z",
                "duration_s": 300,
                "target_kw": 250.0,
            }
        },
    )

    group: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="a group, or one site's id for a per-site target (a group wins a tie)",
    )
    interval_start: AwareDatetime = Field(description="UTC start; the interval is labelled by it")
    duration_s: int = Field(ge=1, le=86_400, description="interval length in seconds")
    target_kw: float = Field(ge=-1e7, le=1e7, allow_inf_nan=False, description="+ discharge")
    reserve_up_kw: float = Field(0.0, ge=0, le=1e7, allow_inf_nan=False)
    reserve_down_kw: float = Field(0.0, ge=0, le=1e7, allow_inf_nan=False)

    @property
    def interval_end(self) -> datetime:
        return self.interval_start + timedelta(seconds=self.duration_s)


async def schedule_manual_target(
    svc: Services, principal: Principal, body: TargetCreate
) -> dict[str, Any]:
    """Check and schedule an operator's target; the API and the console both come here.

    Refusals are :class:`RefusedError` with the status and detail the API documents (503 without
    dispatch, 409 for an interval that is over or overlaps another target, 422 for an
    unknown node or a target beyond its capability)."""
    if svc.dispatch is None:
        raise RefusedError(503, "dispatch is not running")
    now = svc.clock()
    if body.interval_start >= now + TARGET_HORIZON:
        raise RefusedError(409, f"interval_start is beyond the {TARGET_HORIZON.days}-day horizon")
    if body.interval_end <= now:
        raise RefusedError(409, "the interval (interval_start + duration_s) is already over")
    target = GroupTarget(
        dispatch_id=dispatch_id(body.group, body.interval_start),
        group=body.group,
        interval_start=body.interval_start,
        interval_end=body.interval_end,
        target_kw=body.target_kw,
        reserve_up_kw=body.reserve_up_kw,
        reserve_down_kw=body.reserve_down_kw,
        source="manual",
    )
    unknown = _unknown_node(svc, body.group)
    if unknown:
        raise RefusedError(
            422, [{"loc": ["body", "group"], "type": "unknown_node", "msg": unknown}]
        )
    found = _capability(svc, body)
    if found:
        raise RefusedError(
            422,
            [{"loc": ["body", "target_kw"], "type": "beyond_capability", "msg": m} for m in found],
        )
    dispatch = svc.dispatch

    async def apply() -> tuple[bool, bool]:
        """On the control loop: the checks against the targets under way and the change,
        with nothing of the loop in between. (added, paused the site's own plan)"""
        overlap = next(
            (
                d.target
                for d in dispatch.deliveries.values()
                if d.target.group == body.group
                and d.target.dispatch_id != target.dispatch_id
                and d.target.interval_start < target.interval_end
                and target.interval_start < d.target.interval_end
            ),
            None,
        )
        if overlap is not None:
            raise RefusedError(
                409,
                f"{body.group!r} already has a {overlap.source} target "
                f"{overlap.dispatch_id} of {overlap.target_kw:g} kW for "
                f"{overlap.interval_start.isoformat()} .. {overlap.interval_end.isoformat()}, "
                "which overlaps this one; cancel it first (DELETE /api/v1/dispatch/targets/"
                f"{overlap.dispatch_id})",
            )
        existing = dispatch.deliveries.get(target.dispatch_id)
        if existing is not None and existing.target != target:
            if existing.target.source == "peak_shaving":
                # an operator's site target outranks the site's own plan for this interval
                await dispatch.override_targets([target])
                return False, True
            raise RefusedError(
                409,
                f"{body.group!r} already has a {existing.target.source} target of "
                f"{existing.target.target_kw:g} kW for this interval "
                f"({existing.target.interval_start.isoformat()} .. "
                f"{existing.target.interval_end.isoformat()})",
            )
        return bool(await dispatch.add_targets_async([target])), False

    added, paused = await svc.on_control(apply())

    def record() -> dict[str, Any]:
        if added or paused:
            with svc.db.begin() as conn:
                audit.record(
                    conn,
                    principal,
                    "create",
                    "dispatch_target",
                    target.dispatch_id,
                    None,
                    body.model_dump(mode="json"),
                )
        rows, _ = dispatch_log.list_intervals(
            svc.db,
            group=body.group,
            start_from=body.interval_start,
            start_to=body.interval_end,
            limit=500,
        )
        return next(r for r in rows if r["dispatch_id"] == target.dispatch_id)

    return await run_in_threadpool(record)


def _unknown_node(svc: Services, node: str) -> str | None:
    """Why ``node`` cannot take a target (neither a group nor an active site), or None."""
    _, store = svc.fleet()
    if store is None or node in store.group_index:
        return None
    i = store.index.get(node)
    if i is None or not store.active[i]:
        return f"{node!r} is neither a group nor an active site of the fleet"
    return None


def _capability(svc: Services, body: TargetCreate) -> list[str]:
    """A target beyond what its (known) node can do (422)."""
    _, store = svc.fleet()
    if store is None:
        return []
    if body.group in store.group_index:
        node = svc.groups().get(body.group)
        if node is None:
            return []
        return target_problems(
            body.target_kw,
            node.free.p_discharge_rated_p90_kw,
            node.free.p_charge_rated_p90_kw,
            f"the free rated power of group {body.group!r} to",
        )
    i = store.index[body.group]
    return target_problems(
        body.target_kw,
        float(store.p_discharge_max_kw[i]),
        float(store.p_charge_max_kw[i]),
        f"the rated power of site {body.group!r} to",
    )


async def cancel_manual_target(svc: Services, principal: Principal, dispatch_id: str) -> None:
    """Cancel an operator's target (404 unknown, 409 not manual); audited."""
    if svc.dispatch is None:
        raise RefusedError(503, "dispatch is not running")
    dispatch = svc.dispatch

    async def apply() -> dict[str, Any]:
        """On the control loop: the target as it stands, then its cancellation."""
        d = dispatch.deliveries.get(dispatch_id)
        if d is None:
            raise RefusedError(404, f"no scheduled or active target {dispatch_id}")
        if d.target.source != "manual":
            raise RefusedError(
                409,
                f"{dispatch_id} is a {d.target.source} target: only an operator's manual "
                "target can be cancelled (an award is owed to the market; pause a site's "
                "peak shaving instead of cancelling its plan)",
            )
        before = {
            k: utc_iso(v) if isinstance(v, datetime) else v
            for k, v in d.row(d.status(svc.clock()), svc.clock().timestamp()).items()
        }
        await dispatch.cancel_target(dispatch_id)
        return before

    before = await svc.on_control(apply())

    def record() -> None:
        with svc.db.begin() as conn:
            audit.record(conn, principal, "cancel", "dispatch_target", dispatch_id, before, None)

    await run_in_threadpool(record)
