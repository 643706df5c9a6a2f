"""Many engine instances (`vpp serve` processes on a real broker and PostgreSQL) share one
simulated fleet. The combined aggregate equals the simulator's ground truth, a group target
is covered once by the instances together, and after a SIGKILL of an instance the survivors
report the whole fleet again and cover the target without re-issuing a command."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import PG_BASE_URL, free_port
from tests.test_dispatch_crash import env_for, migrated_with_key, vpp
from vpp.store.tables import command_ledger, dispatch_intervals, dispatch_shares

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SITES = 36
INSTANCES = 3


def _fleet(port: int, key: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/fleet", headers={"X-API-Key": key}, timeout=3
        )
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


def _whole(port: int, key: str, instances: int) -> bool:
    """The instance answers for the whole fleet: every partition reported by ``instances``
    instances, and every simulated site online (the simulator's ground truth)."""
    body = _fleet(port, key)
    if body is None or "coverage" not in body:
        return False
    cov = body["coverage"]
    return (
        len(cov["instances"]) == instances
        and cov["partitions_reported"] == cov["partitions_total"]
        and not cov["stale_instances"]
        and body["fleet"]["counts"]["connectivity"]["online"] == SITES
    )


def _wait(what: str, check: Any, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _live_setpoints(engine: sa.Engine, dispatch_id: str) -> dict[str, float]:
    """Each site's newest command of the dispatch (its setpoint), from the ledger."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(command_ledger.c.site_id, command_ledger.c.setpoint_kw)
            .where(command_ledger.c.dispatch_id == dispatch_id)
            .order_by(command_ledger.c.seq)
        ).all()
    out: dict[str, float] = {}
    for site, kw in rows:
        out[site] = kw
    return out


def test_three_instances_share_the_fleet_and_survive_a_sigkill(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    schema = f"vpp_scale_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_BASE_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    ports = [free_port() for _ in range(INSTANCES)]
    base = env_for(tmp_path, kafka_bootstrap, ports[0])
    base.update(
        {
            "VPP_DATABASE__URL": PG_BASE_URL,
            "VPP_DATABASE__SCHEMA_NAME": schema,
            "VPP_SIMULATOR__SITES": str(SITES),
            "VPP_SIMULATOR__FAULTS__ACK_LOSS": "0",
            "VPP_INGEST__PARTIALS_EVERY_S": "1",
            "VPP_INGEST__PARTIALS_MAX_AGE_S": "10",
            "VPP_PEAK_SHAVING__ENABLED": "false",
            "VPP_DISPATCH__ACK_TIMEOUT_S": "2.0",
        }
    )
    for topic in ("telemetry", "commands", "acks"):
        base[f"VPP_BUS__TOPICS__{topic.upper()}__PARTITIONS"] = "6"
    key = migrated_with_key(base)
    procs = [vpp({**base, "VPP_API__PORT": str(p)}, "serve") for p in ports]
    sim = vpp(base, "simulate")
    db = sa.create_engine(PG_BASE_URL, connect_args={"options": f"-csearch_path={schema}"})
    dispatch_id = ""
    try:
        for p in ports:
            try:
                _wait(f"instance on {p} sees the whole fleet", lambda p=p: _whole(p, key, 3), 180)
            except AssertionError:
                for q, proc in zip(ports, procs, strict=True):
                    body = _fleet(q, key) or {}
                    print(q, proc.poll(), body.get("coverage"), body.get("fleet", {}).get("counts"))
                raise

        # A group target, posted to one instance, covered by the three together.
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        r = httpx.post(
            f"http://127.0.0.1:{ports[0]}/api/v1/dispatch/targets",
            headers={"X-API-Key": key},
            timeout=10,
            json={
                "group": "north",
                "interval_start": start.isoformat(),
                "duration_s": 90,
                "target_kw": -20.0,
            },
        )
        assert r.status_code == 201, r.text
        dispatch_id = r.json()["dispatch_id"]
        _wait(
            "the instances together allocate the target",
            lambda: abs(sum(_live_setpoints(db, dispatch_id).values()) + 20.0) < 0.5,
            40,
        )

        def shares() -> list[Any]:
            with db.connect() as conn:
                return list(
                    conn.execute(
                        sa.select(dispatch_shares.c.instance, dispatch_shares.c.share_kw).where(
                            dispatch_shares.c.dispatch_id == dispatch_id
                        )
                    )
                )

        # Every instance wrote its part, and the parts add up to the target.
        _wait(
            "every instance's share recorded",
            lambda: (
                len(parts := shares()) == INSTANCES and abs(sum(kw for _, kw in parts) + 20.0) < 0.5
            ),
            30,
        )

        # SIGKILL the third instance: the others report the whole fleet again ...
        procs[2].send_signal(signal.SIGKILL)
        procs[2].wait(timeout=10)
        back_s = _wait("the survivors see the whole fleet", lambda: _whole(ports[0], key, 2), 60)
        # ... and cover the dead instance's share (its partial went stale).
        _wait(
            "the survivors cover the whole target",
            lambda: abs(sum(_live_setpoints(db, dispatch_id).values()) + 20.0) < 0.5,
            30,
        )
        print(f"complete aggregate again {back_s:.1f} s after the SIGKILL")
    finally:
        for proc in (*procs, sim):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        if not dispatch_id:
            db.dispose()
            admin.dispose()
        for proc in (*procs, sim):
            try:
                proc.communicate(timeout=20)  # reads and closes its pipes
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()

    try:
        _check_ledger(db, dispatch_id)
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _check_ledger(db: sa.Engine, dispatch_id: str) -> None:
    """No command id with two contents; every command's history starts with its issue."""
    with db.connect() as conn:
        rows = conn.execute(sa.select(command_ledger).order_by(command_ledger.c.seq)).all()
        interval = conn.execute(
            sa.select(dispatch_intervals).where(dispatch_intervals.c.dispatch_id == dispatch_id)
        ).one()
    content: dict[str, tuple[Any, ...]] = {}
    events: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        key_ = (r.site_id, r.dispatch_id, r.setpoint_kw, r.valid_until)
        assert content.setdefault(r.command_id, key_) == key_, r.command_id
        events[r.command_id].append(r.event)
    assert events and all(e[0] == "issued" for e in events.values())
    assert interval.target_kw == -20.0
