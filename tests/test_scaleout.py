"""Many engine instances (`vpp serve` processes on a real broker and PostgreSQL) share one
simulated fleet. The combined aggregate equals the simulator's ground truth, a group target
is covered once by the instances together, and after a SIGKILL of an instance the survivors
report the whole fleet again and cover the target without re-issuing a command."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import PG_BASE_URL, free_port
from tests.test_dispatch_crash import env_for, migrated_with_key, vpp
from vpp.config import SimulatorSettings
from vpp.sim.fleet import make_sites
from vpp.store.tables import (
    bid_reviews,
    bids,
    command_ledger,
    dispatch_intervals,
    dispatch_shares,
    leader_terms,
    market_txlog,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SITES = 36
INSTANCES = 3


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, sa.Engine]]:
    """A PostgreSQL schema of the test's own (dropped afterwards) and an engine on it."""
    schema = f"vpp_scale_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_BASE_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    db = sa.create_engine(PG_BASE_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield schema, db
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _stop(procs: list[subprocess.Popen[str]]) -> dict[int, str]:
    """SIGINT every process still running, wait for it; returns each one's stderr."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    logs = {}
    for proc in procs:
        try:
            logs[proc.pid] = proc.communicate(timeout=20)[1]  # reads and closes its pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            logs[proc.pid] = proc.communicate()[1]
    return logs


def _fleet(port: int, key: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/fleet", headers={"X-API-Key": key}, timeout=3
        )
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


def _whole(port: int, key: str, instances: int, sites: int = SITES) -> bool:
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
        and body["fleet"]["counts"]["connectivity"]["online"] == sites
        and {g["node_id"]: g["sites"] for g in body["groups"]} == _truth(sites)
    )


def _truth(sites: int) -> dict[str, int]:
    """The simulator's own fleet (its settings' seed and groups): sites per group."""
    cfg = SimulatorSettings(sites=sites)
    return dict(Counter(s.group for s in make_sites(sites, list(cfg.groups), seed=cfg.seed)))


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
    kafka_bootstrap: str, tmp_path: Path, pg_schema: tuple[str, sa.Engine]
) -> None:
    schema, db = pg_schema
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
        _stop([*procs, sim])
    _check_ledger(db, dispatch_id)


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


# -- one bidder: SIGKILL of the leader, and a deposed leader that comes back ---------------


def _term(db: sa.Engine) -> tuple[int, str] | None:
    with db.connect() as conn:
        row = conn.execute(
            sa.select(leader_terms.c.generation, leader_terms.c.holder).where(
                leader_terms.c.role == "bidder"
            )
        ).first()
    return (row.generation, row.holder) if row else None


def _submissions(db: sa.Engine) -> list[tuple[str, int | None]]:
    """(bid id, leader term) of every submission request in the market transaction log."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(market_txlog.c.tx_id, market_txlog.c.generation)
            .where(market_txlog.c.operation == "submit", market_txlog.c.phase == "request")
            .order_by(market_txlog.c.seq)
        ).all()
    # tx ids are f"submit-{bid_id}-v{version}" (vpp.bidding.bidder.submit_due)
    return [(r.tx_id.removeprefix("submit-").rsplit("-v", 1)[0], r.generation) for r in rows]


def _newest_draft(db: sa.Engine, taken: set[str]) -> str | None:
    """The draft bid whose gate is furthest away (it stays open longest)."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(bids.c.bid_id)
            .where(bids.c.status == "draft")
            .order_by(bids.c.gate_closure.desc(), bids.c.bid_id)
        ).all()
    return next((r.bid_id for r in rows if r.bid_id not in taken), None)


def _approve(port: int, key: str, bid_id: str) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/bids/{bid_id}/approve",
        headers={"X-API-Key": key},
        json={"version": 1, "comment": "approved by the fail-over test"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _fenced(db: sa.Engine, bid_id: str) -> bool:
    """The bid went back to approved because its submission was refused (fenced)."""
    with db.connect() as conn:
        comments = conn.execute(
            sa.select(bid_reviews.c.comment).where(
                bid_reviews.c.bid_id == bid_id, bid_reviews.c.action == "revert"
            )
        ).scalars()
        return any("not sent" in (c or "") for c in comments)


def _lock_backend(db: sa.Engine, schema: str) -> int:
    """The PostgreSQL backend holding the bidder's advisory lock (vpp.leader's key)."""
    key = zlib.crc32(f"vpp:{schema}:bidder".encode()) - 2**31
    with db.connect() as conn:
        pid = conn.execute(
            sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid::bigint = :hi AND objid::bigint = :lo "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
        ).scalar_one()
    return int(pid)


def _leads(port: int) -> float | None:
    """The instance's own view of its leadership (its vpp_leader gauge)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    except httpx.TransportError:
        return None
    for line in text.splitlines():
        if line.startswith('vpp_leader{role="bidder"}'):
            return float(line.split()[-1])
    return None


def test_sigkill_of_the_leader_and_a_deposed_leader_that_comes_back(
    kafka_bootstrap: str, tmp_path: Path, pg_schema: tuple[str, sa.Engine]
) -> None:
    """Two `vpp serve` instances bid on the simulated market (caiso real time, operators
    approve through either instance's API). The leader is SIGKILLed: the standby takes the
    next term and submits what is approved next. That one is killed too and the first comes
    back, taking the third term as it starts; the other comes back as a standby. The
    leader's lock session is then ended, as a network partition the database noticed: the
    standby takes a fourth term. The deposed leader, which has not noticed, submits a bid
    approved meanwhile: the transaction log refuses it (the bid goes back to approved,
    nothing reaches the market) and it steps down at once; the leader submits the bid.
    Each bid is submitted once, by the term current at the time."""
    schema, db = pg_schema
    ports = [free_port() for _ in range(2)]
    base = env_for(tmp_path, kafka_bootstrap, ports[0])
    base.update(
        {
            "VPP_DATABASE__URL": PG_BASE_URL,
            "VPP_DATABASE__SCHEMA_NAME": schema,
            "VPP_SIMULATOR__SITES": "24",
            "VPP_SIMULATOR__FAULTS__ACK_LOSS": "0",
            "VPP_INGEST__PARTIALS_EVERY_S": "1",
            "VPP_INGEST__PARTIALS_MAX_AGE_S": "10",
            "VPP_PEAK_SHAVING__ENABLED": "false",
            "VPP_LEADER__CHECK_EVERY_S": "0.5",
            "VPP_BIDDING__ENABLED": "true",
            "VPP_BIDDING__MARKET": "caiso",
            "VPP_BIDDING__PRODUCT": "energy_rt",
            "VPP_BIDDING__GATE_LEAD_S": "60",
            "VPP_BIDDING__REVIEW_WINDOW_S": "120",
            "VPP_BIDDING__HORIZON_INTERVALS": "3",
            # curves on a persistence forecast (this test's bids before the schedule became
            # the default); whether a cycle trades still depends on the replayed prices, so
            # the test waits up to a bidding cycle (5 min) for a draft to approve
            "VPP_BIDDING__STRATEGY": "scenarios",
            "VPP_BIDDING__FORECAST": "persistence_day",
            "VPP_BIDDING__SCENARIOS": "3",
            # approved bids go to the market at the next submission pass
            "VPP_BIDDING__SUBMIT_BEFORE_GATE_S": "3600",
        }
    )
    key = migrated_with_key(base)
    envs = [{**base, "VPP_API__PORT": str(p)} for p in ports]
    procs = [vpp(e, "serve") for e in envs]
    sim = vpp(base, "simulate")
    everyone = [*procs, sim]
    stopped: list[subprocess.Popen[str]] = []
    approved: list[str] = []

    def by_holder(holder: str) -> int:
        pids = [p.pid for p in procs]
        return pids.index(int(holder.rsplit(":", 1)[1]))

    def submitted(bid_id: str, term: int) -> bool:
        return (bid_id, term) in _submissions(db)

    try:
        for p in ports:
            _wait(
                f"instance on {p} sees the whole fleet",
                lambda p=p: _whole(p, key, 2, sites=24),
                180,
            )
        _wait("a leader", lambda: _term(db) is not None, 30)
        term1, holder = _term(db)  # type: ignore[misc]
        lead = by_holder(holder)
        other = 1 - lead
        # the leader bids once the fleet has reported (it retries until then)
        _wait("the leader's first bids", lambda: _newest_draft(db, set()) is not None, 330)
        first = _newest_draft(db, set())
        assert first is not None
        _approve(ports[other], key, first)  # through the standby's API: the database carries it
        approved.append(first)
        _wait("the leader submits the approved bid", lambda: submitted(first, term1), 40)

        # SIGKILL the leader: the standby takes the next term ...
        procs[lead].send_signal(signal.SIGKILL)
        procs[lead].wait(timeout=10)
        took_s = _wait(
            "the standby leads",
            lambda: (t := _term(db)) is not None and t[0] == term1 + 1,
            30,
        )
        assert by_holder(_term(db)[1]) == other  # type: ignore[index]
        print(f"the standby led {took_s:.1f} s after the SIGKILL")
        # ... and submits what is approved next
        _wait(
            "a draft to approve",
            lambda: _newest_draft(db, set(approved)) is not None,
            330,
        )
        second = _newest_draft(db, set(approved))
        assert second is not None
        _approve(ports[other], key, second)
        approved.append(second)
        _wait("the new leader submits", lambda: submitted(second, term1 + 1), 40)

        # The second leader is killed too, and the first comes back while no one leads: it
        # takes the next term as it starts. It checks its lock only hourly here
        # (leader.check_every_s), so only the transaction log can tell it it was deposed.
        procs[other].send_signal(signal.SIGKILL)
        procs[other].wait(timeout=10)
        procs[lead] = vpp({**envs[lead], "VPP_LEADER__CHECK_EVERY_S": "3600"}, "serve")
        everyone.append(procs[lead])
        _wait(
            "the restarted instance leads",
            lambda: (t := _term(db)) is not None and t[0] == term1 + 2,
            120,
        )
        assert by_holder(_term(db)[1]) == lead  # type: ignore[index]
        procs[other] = vpp(envs[other], "serve")
        everyone.append(procs[other])
        _wait("the other instance is back, a standby", lambda: _leads(ports[other]) == 0.0, 120)

        # End the leader's lock session, as a partition the server noticed: the standby
        # takes a fourth term while the deposed one still believes it leads.
        with db.begin() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(:p)"), {"p": _lock_backend(db, schema)}
            )
        _wait(
            "the standby takes a new term",
            lambda: (t := _term(db)) is not None and t[0] == term1 + 3,
            30,
        )
        assert by_holder(_term(db)[1]) == other  # type: ignore[index]
        # Hold the new leader (SIGSTOP) and approve a bid through the deposed one's API: its
        # next submission pass is refused at the transaction log, and it steps down at once.
        procs[other].send_signal(signal.SIGSTOP)
        stopped.append(procs[other])
        _wait(
            "a draft to approve",
            lambda: _newest_draft(db, set(approved)) is not None,
            330,
        )
        third = _newest_draft(db, set(approved))
        assert third is not None
        _approve(ports[lead], key, third)
        approved.append(third)
        _wait("the deposed leader's submission refused at the log", lambda: _fenced(db, third), 40)
        _wait("the deposed leader steps down", lambda: _leads(ports[lead]) == 0.0, 10)
        procs[other].send_signal(signal.SIGCONT)
        stopped.remove(procs[other])
        _wait("the leader submits", lambda: submitted(third, term1 + 3), 40)
        assert _leads(ports[other]) == 1.0
    finally:
        for proc in stopped:
            proc.send_signal(signal.SIGCONT)
        logs = _stop(everyone)
    subs = _submissions(db)
    # one submission per bid, each by the term that was current: none by the deposed
    assert [b for b, _ in subs] == approved, subs
    assert [g for _, g in subs] == [term1, term1 + 1, term1 + 3], subs
    deposed = logs[procs[lead].pid]
    assert "fenced at the transaction log" in deposed and "submissions stopped" in deposed
