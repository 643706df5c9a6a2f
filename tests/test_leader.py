"""One bidder at a time (vpp.leader) on a real PostgreSQL and on SQLite: the advisory lock
elects one instance, a new term fences the deposed one at the transaction log, bids it had
marked go back to approved, and a new leader reconciles before it acts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from market.adapter import LoggedMarket, SimulatedMarket
from market.lifecycle import BidAction
from tests.api_support import MARKET, Clock, engine_for, make_bids
from tests.conftest import PG_BASE_URL
from vpp.leader import Leadership
from vpp.store.bids import BidStore
from vpp.store.fencing import FencedError
from vpp.store.keys import Principal
from vpp.store.tables import bids, market_txlog
from vpp.store.txlog import DbTxLog

ALICE = Principal("k", "alice", "operator")
BOB = Principal("k2", "bob", "operator")


@pytest.fixture(params=["postgres", "sqlite"])
def db(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    engines = engine_for(request.param, tmp_path, request)
    yield next(engines)
    next(engines, None)


def _kill_session(lead: Leadership) -> None:
    """What a network partition does once the server notices: the session, and its
    advisory lock, are gone."""
    assert lead._lock_conn is not None
    pid = lead._lock_conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    lead._lock_conn.commit()
    admin = sa.create_engine(PG_BASE_URL)
    with admin.begin() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    # Termination is a signal: the backend (and its lock) goes a moment later, longer on a
    # busy machine. Wait for it, as a standby's next check would.
    for _ in range(200):
        with admin.connect() as conn:
            alive = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            ).scalar_one()
        if not alive:
            break
        time.sleep(0.02)
    admin.dispose()


def _approved(db: sa.Engine, clock: Clock) -> tuple[BidStore, str]:
    store = BidStore(db, clock=clock)
    store.create(make_bids(2), solve_id="s1", report={"model": "test"})
    bid_id = make_bids(2)[0].bid_id
    store.review(bid_id, 1, BidAction.APPROVE, BOB, None)
    return store, bid_id


def test_one_leader_a_new_term_fences_the_deposed_and_nothing_reaches_the_market(
    db: sa.Engine,
) -> None:
    clock = Clock()
    a = Leadership(db, holder="a", clock=clock)
    b = Leadership(db, holder="b", clock=clock)
    assert a.tick()
    postgres = db.dialect.name == "postgresql"
    if postgres:
        assert not b.tick() and a.check()  # the lock elects one
        _kill_session(a)
    assert b.tick() and b.generation == (a.generation or 0) + 1
    # `a` has not noticed yet: its submission is refused at the log, before the market
    sim = SimulatedMarket(MARKET, {})
    store, bid_id = _approved(db, clock)
    fenced = LoggedMarket(sim, DbTxLog(db, clock, fence=a.fence))
    with pytest.raises(FencedError, match="term"):
        store.submit([bid_id], ALICE, fenced, "tx-a")
    assert sim.submissions == 0
    with db.connect() as conn:
        assert conn.execute(sa.select(market_txlog)).first() is None
        status = conn.execute(sa.select(bids.c.status).where(bids.c.bid_id == bid_id))
        assert status.scalar_one() == "approved"  # back for the new leader to send
    # ... and it steps down at its next check
    assert not a.check() and not a.is_leader()
    # the leader submits, its term recorded with the request
    store.submit([bid_id], BOB, LoggedMarket(sim, DbTxLog(db, clock, fence=b.fence)), "tx-b")
    with db.connect() as conn:
        logged = conn.execute(
            sa.select(market_txlog.c.phase, market_txlog.c.generation).order_by(market_txlog.c.seq)
        ).all()
    assert [(r.phase, r.generation) for r in logged] == [
        ("request", b.generation),
        ("response", b.generation),
    ]
    if postgres:  # the deposed instance cannot take the lock back while b holds it
        assert not a.tick()
    b.step_down("test over")


def test_a_fenced_leader_steps_down_at_once_and_a_stale_refusal_deposes_no_newer_term(
    db: sa.Engine,
) -> None:
    """Told by the transaction log (``on_fenced``), a deposed leader stops before its next
    check; a refusal of an old term does not depose the term the instance leads now."""
    clock = Clock()
    a = Leadership(db, holder="a", clock=clock)
    b = Leadership(db, holder="b", clock=clock)
    assert a.tick()
    if db.dialect.name == "postgresql":
        _kill_session(a)
    assert b.tick()
    store, bid_id = _approved(db, clock)
    log = DbTxLog(db, clock, fence=a.fence, on_fenced=a.fenced)
    with pytest.raises(FencedError):
        store.submit([bid_id], ALICE, LoggedMarket(SimulatedMarket(MARKET, {}), log), "tx-a")
    assert not a.is_leader() and a.deposed == 1  # no check needed
    b.step_down("test over")
    assert a.tick()  # a leads again, a newer term: an old refusal changes nothing
    a.fenced(FencedError("late news of term 1", term=1))
    assert a.is_leader() and a.generation == 3
    a.step_down("test over")


def test_an_orderly_stop_is_not_a_deposition(
    db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping the instance hands the role over quietly: INFO, not ERROR, and not counted
    as deposed (a clean `vpp run --duration` stop used to log "no longer leads" as an
    error). Another instance then takes the next term."""
    import asyncio
    import logging

    clock = Clock()
    a, b = Leadership(db, holder="a", clock=clock), Leadership(db, holder="b", clock=clock)
    assert a.tick()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vpp.leader"):
        asyncio.run(a.stop())
    assert not a.is_leader() and a.deposed == 0
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "stops leading bidder (term 1)" in caplog.records[0].getMessage()
    assert a._lock_conn is None  # its lock released, on PostgreSQL its session closed
    assert b.tick() and b.generation == 2
    b.step_down("test over")


def test_a_new_leader_reconciles_what_its_predecessor_left_submitted(db: sa.Engine) -> None:
    clock = Clock()
    store, bid_id = _approved(db, clock)
    row = store.row(bid_id)
    with db.begin() as conn:  # the predecessor marked it, then vanished before the request
        store._advance(conn, row, BidAction.SUBMIT, ALICE, "tx-lost", clock())
    market = LoggedMarket(SimulatedMarket(MARKET, {}), DbTxLog(db, clock))
    lead = Leadership(db, holder="new", clock=clock)
    lead.listeners.append(lambda _term: store.reconcile_submitted(market, clock()))
    assert lead.tick()
    assert store.row(bid_id).status == "approved"
    lead.step_down("test over")


def test_only_the_leader_bids(tmp_path: Path) -> None:
    import asyncio

    from tests.test_bidding import setup

    bidder, store, clock, _ = setup(tmp_path)
    lead = Leadership(store.engine, holder="x", clock=clock)
    bidder.leading = lead.is_leader
    asyncio.run(bidder.cycle())
    assert bidder.made == 0  # not elected: no bids
    assert lead.tick()
    asyncio.run(bidder.cycle())
    assert bidder.made > 0


def test_a_standby_instance_refuses_a_submission_through_its_api_and_keeps_the_bid(
    tmp_path: Path,
) -> None:
    from tests.api_support import build_api

    api = build_api(next(engine_for("sqlite", tmp_path, None)))  # type: ignore[arg-type]
    standby = Leadership(api.engine, holder="standby", clock=api.clock)  # never elected
    assert api.services.market is not None
    api.services.market = LoggedMarket(
        api.services.market.adapter, DbTxLog(api.engine, api.clock, fence=standby.fence)
    )
    bid_id = make_bids(1)[0].bid_id
    r = api.client.post(f"/api/v1/bids/{bid_id}/approve", json={"version": 1}, headers=api.h("bob"))
    assert r.status_code == 200
    r = api.client.post(
        f"/api/v1/bids/{bid_id}/submit", json={"version": 1}, headers=api.h("alice")
    )
    assert r.status_code == 409 and "does not lead the bidder" in r.json()["detail"]
    bid = api.client.get(f"/api/v1/bids/{bid_id}", headers=api.h("viewer")).json()["bid"]
    assert bid["status"] == "approved"


def test_sigkill_of_the_leader_process_hands_the_role_to_the_standby(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Real processes on PostgreSQL: killing the leader (SIGKILL, no clean-up) frees its
    lock with its session; the standby takes the next term. The time it takes is measured
    in benchmarks/leader_failover.py, not asserted here."""
    import json
    import signal
    import subprocess
    import sys

    engines = engine_for("postgres", tmp_path, request)
    engine = next(engines)
    with engine.connect() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()

    def spawn(holder: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.leader_proc", PG_BASE_URL, schema, holder, "0.2"],
            stdout=subprocess.PIPE,
            text=True,
        )

    first, second = spawn("first"), None
    try:
        assert first.stdout is not None
        led = json.loads(first.stdout.readline())
        assert led["leader"] is True and led["term"] == 1
        second = spawn("second")
        assert second.stdout is not None
        standby = json.loads(second.stdout.readline())
        assert standby["leader"] is False
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        took = json.loads(second.stdout.readline())  # blocks until it leads (pytest-timeout)
        assert took["leader"] is True and took["holder"] == "second"
        assert took["term"] == 2
    finally:
        for p in (first, second):
            if p is None:
                continue
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()
        next(engines, None)
