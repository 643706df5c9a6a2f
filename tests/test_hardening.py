"""The edges: telemetry that cannot lie, crash recovery that closes every loop, an API that
cannot be starved, clear errors for bad configuration."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event as sa_event

from vpp.bus.base import BusRecord
from vpp.bus.deadletter import DeadLetterWriter, decode_dead_letter
from vpp.bus.embedded import EmbeddedBus
from vpp.config import DispatchSettings, IngestSettings, TopicsSettings
from vpp.dispatch.contract import Ack, ack_decoder
from vpp.dispatch.core import DispatchCore
from vpp.dispatch.targets import GroupTarget, dispatch_id
from vpp.framing import decode_each
from vpp.ingest.loop import Ingest
from vpp.telemetry.contract import encode_telemetry
from vpp.telemetry.decode import decode_batch
from vpp.twins.registry import SiteConfig, Tariff
from vpp.twins.store import FleetStore

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TOPICS = TopicsSettings()


def site(site_id: str, **kw: object) -> SiteConfig:
    base: dict[str, object] = {
        "site_id": site_id,
        "group": "g",
        "capacity_kwh": 10,
        "p_charge_max_kw": 5,
        "p_discharge_max_kw": 5,
    }
    return SiteConfig.model_validate({**base, **kw})


# -- telemetry cannot lie ----------------------------------------------------------------------


def _messages(n: int) -> list[bytes]:
    return [
        encode_telemetry(f"s{k % 3}", T0 + timedelta(seconds=k), k, 0.5, 1.0, site_load_kw=2.0)
        for k in range(n)
    ]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 8), data=st.data())
def test_the_batch_decoder_agrees_with_one_by_one_over_random_splits(
    n: int, data: st.DataObject
) -> None:
    """``n`` valid messages joined by commas, re-cut at ``n − 1`` random commas (between or
    inside messages) into ``n`` pieces: joined back with commas they form the original valid
    array, so a decoder that joins without framing would accept fragments. The batch path
    must accept exactly the pieces that decode alone."""
    blob = b",".join(_messages(n))
    commas = [i for i, c in enumerate(blob) if c == ord(",")]
    cuts = sorted(
        data.draw(st.lists(st.sampled_from(commas), min_size=n - 1, max_size=n - 1, unique=True))
    )
    pieces = [
        blob[a + 1 if a >= 0 else 0 : b]
        for a, b in zip([-1, *cuts], [*cuts, len(blob)], strict=True)
    ]
    cols, refusals = decode_batch(pieces)
    alone = [k for k, piece in enumerate(pieces) if not decode_batch([piece])[1]]
    assert cols.position.tolist() == alone
    assert sorted(r.position for r in refusals) == sorted(set(range(n)) - set(alone))


def test_two_objects_in_one_message_fail_the_fast_path() -> None:
    a, b, c = _messages(3)
    doubled = a + b"," + b  # two readings in one value: valid as array elements
    cols, refusals = decode_batch([doubled, c, c])
    assert cols.position.tolist() == [1, 2] and refusals[0].position == 0
    acks = [msgspec.json.encode(Ack(1, f"c{k}", "s", "accepted", T0)) for k in range(3)]
    with pytest.raises(msgspec.MsgspecError):
        decode_each(ack_decoder, [acks[0] + b"," + acks[1], acks[2], acks[2]])
    assert ack_decoder.decode(acks[2]).command_id == "c2"


async def _ingest_one(records: list[BusRecord], sites: list[SiteConfig]) -> tuple[Ingest, list]:
    bus = EmbeddedBus()
    await bus.start()
    await bus.ensure_topics(TOPICS.all())
    ing = Ingest(bus, IngestSettings(), TOPICS, clock=lambda: T0.timestamp() + 60)
    for s in sites:
        ing.store.register(s)
    ing._producer = await bus.producer()
    ing._dlq = DeadLetterWriter(ing._producer, TOPICS.deadletter.name)
    dlq = await bus.consumer([TOPICS.deadletter.name], "reader")
    await ing.process(records)
    await ing._dlq.flush()
    letters = [decode_dead_letter(r.value) for r in await dlq.getmany(1000, 0) if r.value]
    await bus.stop()
    return ing, letters


def test_a_key_that_is_not_the_site_is_dead_lettered() -> None:
    good = encode_telemetry("s0", T0, 1, 0.5, 1.0)
    forged = encode_telemetry("s1", T0, 1, 0.9, 4.0)
    records = [
        BusRecord(TOPICS.telemetry.name, 0, 0, b"s0", good, 0),
        BusRecord(TOPICS.telemetry.name, 0, 1, b"s0", forged, 0),  # s1's body under s0's key
    ]
    ing, letters = asyncio.run(_ingest_one(records, [site("s0"), site("s1")]))
    assert [(d.offset, d.reason) for d in letters] == [(1, "key_mismatch")]
    assert "is not the body's site_id 's1'" in letters[0].detail
    assert ing.store.seq[ing.store.index["s1"]] == -1  # the twin is untouched


def test_load_and_pv_beyond_the_registry_limits_are_refused() -> None:
    tariff = Tariff(demand_charge_per_kw=10.0)
    sites = [site("s0", tariff=tariff, site_load_max_kw=50, pv_max_kw=10)]
    values = [
        encode_telemetry("s0", T0, 1, 0.5, 1.0, site_load_kw=40.0, pv_kw=5.0),
        encode_telemetry("s0", T0 + timedelta(seconds=1), 2, 0.5, 1.0, site_load_kw=5000.0),
        encode_telemetry("s0", T0 + timedelta(seconds=2), 3, 0.5, 1.0, pv_kw=-3.0),
    ]
    records = [BusRecord(TOPICS.telemetry.name, 0, k, b"s0", v, 0) for k, v in enumerate(values)]
    ing, letters = asyncio.run(_ingest_one(records, sites))
    assert [(d.offset, d.reason) for d in letters] == [(1, "load_range"), (2, "pv_range")]
    assert ing.store.site_load_kw[0] == 40.0  # a poisoned month peak never reaches the plan
    with pytest.raises(ValueError, match="site_load_max_kw"):
        site("s9", tariff=tariff)


# -- a site on its own target that stops following is commanded again ---------------------------


def test_a_site_target_not_followed_is_commanded_again() -> None:
    store = FleetStore()
    store.register(site("s0"))
    t = T0.timestamp()

    def read(at: float, seq: int, p: float) -> None:
        cols, _ = decode_batch(
            [encode_telemetry("s0", datetime.fromtimestamp(at, UTC), seq, 0.5, p)]
        )
        store.fold(cols, at)
        store.evaluate(at)

    read(t, 1, 0.0)
    core = DispatchCore(DispatchSettings(follow_grace_s=1.0), lambda: store)
    target = GroupTarget(
        dispatch_id=dispatch_id("s0", T0),
        group="s0",
        interval_start=T0,
        interval_end=T0 + timedelta(minutes=15),
        target_kw=3.0,
    )
    core.add_targets([target], t)
    first = core.tick(t + 0.1).commands
    assert [c.setpoint_kw for c in first] == [3.0]
    core.on_acks([Ack(1, first[0].command_id, "s0", "accepted", T0)], t + 0.2)
    for k, at in enumerate((t + 5, t + 10)):  # two readings after the grace: still idle
        read(at, 2 + k, 0.0)
        again = core.tick(at + 0.1).commands
    assert [c.setpoint_kw for c in again] == [3.0]  # a new command, not an exclusion
    assert again[0].command_id != first[0].command_id
    # and its record counts what it really delivered (0 kW), not the target
    assert core.deliveries[target.dispatch_id].samples[-1][1] == 0.0


# -- crash recovery closes every loop -----------------------------------------------------------


class CrashError(Exception):
    """The process dies here."""


def _crash(*_: object, **__: object) -> None:
    raise CrashError


@pytest.mark.parametrize(
    ("point", "reopen_before_gate", "expected"),
    [
        ("before_request", True, "approved"),  # never sent, gate open: submit again
        ("before_request", False, "missed"),  # never sent, gate closed
        ("request_lost", True, "accepted"),  # the market never got it, gate open: resent
        ("request_lost", False, "missed"),  # the market never got it, gate closed
        ("answer_lost", True, "accepted"),  # the market accepted, the answer was lost
        ("after_answer", True, "accepted"),  # logged both ways, the bid not updated yet
    ],
)
def test_a_submission_cut_at_any_point_is_reconciled_at_start_up(
    tmp_path: Path, point: str, reopen_before_gate: bool, expected: str
) -> None:
    from market.adapter import LoggedMarket, SimulatedMarket
    from market.definitions import Product, load_market
    from market.lifecycle import BidAction
    from tests.api_support import NOW, make_bids
    from vpp.config import DatabaseSettings
    from vpp.store import db
    from vpp.store.bids import BidStore
    from vpp.store.keys import Principal
    from vpp.store.txlog import DbTxLog

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/c.db"))
    db.upgrade(engine)
    now = [NOW]
    store = BidStore(engine, clock=lambda: now[0])
    bid = make_bids(1)[0]
    store.create([bid], solve_id="s", report={})
    alice = Principal("k", "alice", "operator")
    store.review(bid.bid_id, 1, BidAction.APPROVE, alice)
    prices = {(Product.ENERGY_RT, bid.interval_start): 45.0}
    sim = SimulatedMarket(load_market("caiso"), prices)
    log = DbTxLog(engine)
    market = LoggedMarket(sim, log)
    if point == "before_request":
        log.record_request = _crash  # type: ignore[method-assign]
    elif point == "request_lost":
        sim.submit = _crash  # type: ignore[method-assign]
    elif point == "answer_lost":
        log.record_response = _crash  # type: ignore[method-assign]
    else:
        original = store._advance

        def die_on_accept(conn: object, row: object, action: object, *a: object) -> object:
            if action in (BidAction.ACCEPT, BidAction.REFUSE):
                raise CrashError
            return original(conn, row, action, *a)  # type: ignore[arg-type]

        store._advance = die_on_accept  # type: ignore[method-assign,assignment]
    now[0] = bid.interval_start - timedelta(minutes=80)  # before the 75-minute gate
    with pytest.raises(CrashError):
        store.submit([bid.bid_id], alice, market, "tx-crash")
    assert BidStore(engine).row(bid.bid_id).status == "submitted"
    # the restarted engine: a fresh store and log, the same market (reachable again)
    vars(sim).pop("submit", None)
    restarted = BidStore(engine, clock=lambda: now[0])
    if not reopen_before_gate:
        now[0] = bid.interval_start
    counts = restarted.reconcile_submitted(LoggedMarket(sim, DbTxLog(engine)), now[0])
    assert restarted.row(bid.bid_id).status == expected
    assert sum(counts.values()) == 1
    assert sim.submissions <= 1  # never sent twice
    assert restarted.reconcile_submitted(LoggedMarket(sim, DbTxLog(engine)), now[0]) == {}


def test_commands_whose_validity_ended_while_down_are_closed(tmp_path: Path) -> None:
    from vpp.config import DatabaseSettings
    from vpp.dispatch.contract import Command
    from vpp.dispatch.tracker import Tracker
    from vpp.store import db, ledger

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/l.db"))
    db.upgrade(engine)
    tracker = Tracker()
    cmds = [
        Command(
            v=1,
            command_id=f"c{k}",
            dispatch_id="d",
            site_id=f"s{k}",
            setpoint_kw=1.0,
            valid_from=T0,
            valid_until=T0 + timedelta(minutes=5 * (k + 1)),
            attempt=1,
            issued_at=T0,
        )
        for k in range(2)
    ]
    ledger.append(engine, tracker.issue(cmds, "g", T0.timestamp()))
    # the engine was down from T0 + 1 min to T0 + 7 min: c0 (valid 5 min) ended meanwhile
    back = T0 + timedelta(minutes=7)
    closed = ledger.close_expired_while_down(engine, back)
    assert [(e.command_id, e.event, e.reason) for e in closed] == [
        ("c0", "expired", "expired_while_down")
    ]
    assert [i.command_id for i, _ in ledger.open_commands(engine, back)] == ["c1"]
    assert ledger.close_expired_while_down(engine, back) == []


# -- the API cannot be starved ----------------------------------------------------------------


def test_nul_characters_are_422_wherever_they_come(tmp_path: Path) -> None:
    from tests.api_support import build_api, engine_for

    gen = engine_for("sqlite", tmp_path, None)  # type: ignore[arg-type]
    api = build_api(next(gen))
    h = api.h("alice")
    assert api.client.get("/api/v1/bids/abc%00def", headers=h).status_code == 422
    assert api.client.get("/api/v1/bids", params={"group": "a\x00b"}, headers=h).status_code == 422
    r = api.client.post(
        "/api/v1/dispatch/targets",
        content=b'{"group": "nor\\u0000th", "interval_start": "2026-11-21T14:05:00Z", '
        b'"duration_s": 300, "target_kw": 1}',
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]


@given(st.text(alphabet=st.sampled_from(["\\", "u", "0", "\x00", "a", '"']), max_size=12))
def test_a_body_is_refused_for_a_nul_exactly_when_its_text_holds_one(text: str) -> None:
    """Schemathesis found a text holding a literal backslash before u0000 refused: the
    body check must decode JSON escapes, not look for the six bytes."""
    from vpp.api.app import _has_nul

    for body in (json.dumps({"reason": text}), json.dumps({"reason": text}, ensure_ascii=False)):
        assert _has_nul(body.encode()) == ("\x00" in text)


def test_bodies_are_limited_and_keys_checked_before_they_are_read(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.api_support import build_api, engine_for
    from vpp.api.app import create_app

    gen = engine_for("sqlite", tmp_path, None)  # type: ignore[arg-type]
    api = build_api(next(gen))
    client = TestClient(create_app(api.services, max_body_bytes=1000))
    big = b"{" + b" " * 5000 + b"}"
    ctype = {"Content-Type": "application/json"}
    # no key: refused before the body is looked at (401, not 413)
    assert client.post("/api/v1/dispatch/targets", content=big, headers=ctype).status_code == 401
    r = client.post("/api/v1/dispatch/targets", content=big, headers={**ctype, **api.h("alice")})
    assert r.status_code == 413 and "1000 bytes" in r.text
    chunked = client.post(
        "/api/v1/dispatch/targets",
        content=iter([b"{", b" " * 600, b" " * 600, b"}"]),  # no Content-Length: counted
        headers={**ctype, **api.h("alice")},
    )
    assert chunked.status_code == 413


def test_a_500_is_logged_as_json_with_the_request_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from tests.api_support import build_api, engine_for
    from vpp.api.app import create_app

    gen = engine_for("sqlite", tmp_path, None)  # type: ignore[arg-type]
    api = build_api(next(gen))

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("the database fell over")

    api.services.bids.list_bids = broken  # type: ignore[method-assign]
    api.services.bids.cached = lambda key, compute: compute()  # type: ignore[method-assign]
    client = TestClient(create_app(api.services), raise_server_exceptions=False)
    with caplog.at_level("ERROR"):
        r = client.get("/api/v1/bids", headers={**api.h("alice"), "X-Request-ID": "req-42"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error", "request_id": "req-42"}
    assert r.headers["x-request-id"] == "req-42"
    record = next(rec for rec in caplog.records if rec.name == "vpp.api.app")
    assert record.request_id == "req-42" and record.exc_info is not None
    from vpp.logs import JsonFormatter

    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-42" and "the database fell over" in line["exc"]


def test_the_key_cache_is_bounded_and_never_holds_unknown_ids(tmp_path: Path) -> None:
    from vpp.config import DatabaseSettings
    from vpp.store import db
    from vpp.store.keys import KeyStore

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/k.db"))
    db.upgrade(engine)
    keys = KeyStore(engine, max_cached=3)
    made = [keys.create(f"k{i}", "viewer")[1] for i in range(5)]
    for i in range(200):
        assert keys.verify(f"vpp_{i:012x}_forged") is None
    assert len(keys._cache) == 0  # made-up ids are never cached
    for key in made:
        assert keys.verify(key) is not None
    assert len(keys._cache) == 3
    assert asyncio.run(keys.verify_async(made[0])) is not None
    assert asyncio.run(keys.verify_async("vpp_zz_bad")) is None


def test_made_up_key_ids_cost_at_most_one_small_read_a_second(tmp_path: Path) -> None:
    """Each well-formed unknown id used to read its row; now the id list answers, read
    again on a miss at most once per ids_refresh_s, and a key made by another process
    works once that has passed."""
    from vpp.config import DatabaseSettings
    from vpp.store import db
    from vpp.store.keys import KeyStore

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/k.db"))
    db.upgrade(engine)
    now = [100.0]
    keys = KeyStore(engine, clock=lambda: now[0])
    _, mine = keys.create("mine", "viewer")
    reads: list[str] = []
    sa_event.listen(engine, "before_cursor_execute", lambda *a: reads.append(a[2]))
    for i in range(500):
        assert keys.verify(f"vpp_{i:012x}_forged") is None
        assert asyncio.run(keys.verify_async(f"vpp_{i + 1000:012x}_forged")) is None
    assert keys.id_reads == 1 and len(reads) == 1  # the list, once
    assert keys.verify(mine) is not None  # made here: known at once
    _, theirs = KeyStore(engine).create("theirs", "operator")  # another process
    assert keys.verify(theirs) is None  # within ids_refresh_s of the last read
    now[0] += keys.ids_refresh_s
    principal = keys.verify(theirs)
    assert principal is not None and principal.name == "theirs"


def test_manual_targets_overlap_cancel_and_final_records(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from tests.api_support import NOW, build_api, engine_for
    from vpp.store import dispatch_log
    from vpp.store.tables import audit_log, dispatch_intervals

    gen = engine_for("sqlite", tmp_path, None)  # type: ignore[arg-type]
    api = build_api(next(gen))
    h = api.h("alice")
    start = NOW + timedelta(minutes=10)

    def post(at: datetime, seconds: int, kw: float) -> object:
        return api.client.post(
            "/api/v1/dispatch/targets",
            json={
                "group": "north",
                "interval_start": at.isoformat(),
                "duration_s": seconds,
                "target_kw": kw,
            },
            headers=h,
        )

    first = post(start, 900, 100)
    assert first.status_code == 201  # type: ignore[attr-defined]
    clash = post(start + timedelta(minutes=5), 600, 200)
    assert clash.status_code == 409  # type: ignore[attr-defined]
    assert "overlaps" in clash.text and "north-" in clash.text  # type: ignore[attr-defined]
    did = first.json()["dispatch_id"]  # type: ignore[attr-defined]
    assert (
        api.client.delete(f"/api/v1/dispatch/targets/{did}", headers=api.h("viewer")).status_code
        == 403
    )
    assert api.client.delete(f"/api/v1/dispatch/targets/{did}", headers=h).status_code == 204
    assert api.client.delete(f"/api/v1/dispatch/targets/{did}", headers=h).status_code == 404
    assert post(start + timedelta(minutes=5), 600, 200).status_code == 201  # type: ignore[attr-defined]
    with api.engine.connect() as conn:
        status = conn.execute(
            sa.select(dispatch_intervals.c.status).where(dispatch_intervals.c.dispatch_id == did)
        ).scalar_one()
        audited = (
            conn.execute(sa.select(audit_log.c.action).where(audit_log.c.resource_id == did))
            .scalars()
            .all()
        )
    assert status == "cancelled" and audited == ["create", "cancel"]
    # a final record is never overwritten, whatever writes later
    row = dispatch_log.list_intervals(api.engine, group="north", limit=10)[0]
    cancelled = next(r for r in row if r["dispatch_id"] == did)
    dispatch_log.upsert_many(api.engine, [{**cancelled, "status": "active", "target_kw": 9.0}])
    again = next(
        r
        for r in dispatch_log.list_intervals(api.engine, group="north", limit=10)[0]
        if r["dispatch_id"] == did
    )
    assert again["status"] == "cancelled" and again["target_kw"] == 100


def test_cancelling_a_target_under_way_supersedes_its_commands() -> None:
    store = FleetStore()
    for k in range(2):
        store.register(site(f"s{k}"))
    t = T0.timestamp()
    cols, _ = decode_batch([encode_telemetry(f"s{k}", T0, 1, 0.5, 0.0) for k in range(2)])
    store.fold(cols, t)
    store.evaluate(t)
    core = DispatchCore(DispatchSettings(), lambda: store)
    target = GroupTarget(
        dispatch_id=dispatch_id("g", T0),
        group="g",
        interval_start=T0,
        interval_end=T0 + timedelta(minutes=15),
        target_kw=6.0,
    )
    core.add_targets([target], t)
    sent = core.tick(t + 1).commands
    assert len(sent) == 2
    eff = core.cancel(target.dispatch_id, t + 2)
    assert [c.setpoint_kw for c in eff.commands] == [0.0, 0.0]
    assert {e.event for e in eff.entries} == {"superseded", "issued"}
    assert eff.rows[-1]["status"] == "cancelled"
    assert all(core.tracker.commands[c.command_id].state == "superseded" for c in sent)
    assert target.dispatch_id not in core.deliveries


def test_run_every_keeps_a_fixed_cadence() -> None:
    import contextlib
    import logging

    from vpp.periodic import run_every

    now = [0.0]
    starts: list[float] = []

    async def step() -> None:
        starts.append(now[0])
        now[0] += 0.3  # each step takes 0.3 s of a 1 s period
        if len(starts) == 3:
            now[0] += 2.5  # one overruns two whole periods: those runs are skipped
        if len(starts) == 6:
            raise asyncio.CancelledError

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    async def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await run_every(
                1.0, step, logging.getLogger("t"), "t", clock=lambda: now[0], sleep=fake_sleep
            )

    asyncio.run(main())
    assert starts == pytest.approx([0.0, 1.0, 2.0, 5.0, 6.0, 7.0])


def test_no_registry_record_stops_the_engine() -> None:
    """A producer timestamp of 10^15 ms (year 33658), a body that is not JSON and a record
    whose handling raises are dead-lettered with their reason; the records after them are
    applied (a compacted topic would otherwise replay the poison at every start)."""
    good = json.dumps(site("s2").model_dump(mode="json")).encode()
    records = [
        BusRecord(
            TOPICS.sites.name,
            0,
            0,
            b"s0",
            json.dumps(site("s0").model_dump(mode="json")).encode(),
            10**15,
        ),
        BusRecord(TOPICS.sites.name, 0, 1, b"s1", b"{not json", 0),
        BusRecord(TOPICS.sites.name, 0, 2, b"s2", good, int(T0.timestamp() * 1000)),
    ]

    async def run() -> tuple[Ingest, list]:
        bus = EmbeddedBus()
        await bus.start()
        await bus.ensure_topics(TOPICS.all())
        ing = Ingest(bus, IngestSettings(), TOPICS, clock=lambda: T0.timestamp() + 60)
        ing._producer = await bus.producer()
        ing._dlq = DeadLetterWriter(ing._producer, TOPICS.deadletter.name)
        dlq = await bus.consumer([TOPICS.deadletter.name], "reader")
        boom = BusRecord(TOPICS.sites.name, 0, 3, b"s3", good.replace(b"s2", b"s3"), 0)
        original = ing.store.register

        def register(cfg: SiteConfig) -> None:
            if cfg.site_id == "s3":
                raise RuntimeError("store full")
            original(cfg)

        ing.store.register = register  # type: ignore[method-assign]
        await ing._apply_registry([*records, boom])
        letters = [decode_dead_letter(r.value) for r in await dlq.getmany(1000, 0) if r.value]
        await bus.stop()
        return ing, letters

    ing, letters = asyncio.run(run())
    assert [(d.offset, d.reason) for d in letters] == [
        (0, "registry_invalid"),
        (1, "registry_invalid"),
        (3, "registry_invalid"),
    ]
    assert "is not a date" in letters[0].detail and "store full" in letters[2].detail
    assert "s2" in ing.store.index and "s0" not in ing.store.index


@pytest.mark.parametrize("name", ["ops\x1b[31m", "a\nb", "tab\there", "nul\x00", "del\x7f"])
def test_key_names_are_printable_text(tmp_path: Path, name: str) -> None:
    """A key's name is shown in audits, logs and pages: control characters are refused by
    the store and by the API body."""
    from pydantic import ValidationError

    from vpp.api.models import KeyCreate
    from vpp.config import DatabaseSettings
    from vpp.store import db
    from vpp.store.keys import KeyStore

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/k.db"))
    db.upgrade(engine)
    with pytest.raises(ValueError, match="printable"):
        KeyStore(engine).create(name, "viewer")
    with pytest.raises(ValidationError):
        KeyCreate(name=name, role="viewer")
    principal, _ = KeyStore(engine).create("night shift — Zoë", "viewer")
    assert principal.name == "night shift — Zoë"


def test_a_reading_cannot_be_smuggled_across_message_boundaries() -> None:
    """The probe's pair: the first message leaves a string open, the second closes it and
    carries a valid reading after a frame separator; each is undecodable alone, so neither
    may be folded, whichever way the batch is joined or framed. Also the nested-array form,
    where no string spans the boundary."""
    good = _messages(1)[0]
    open_string = b'{"v":1,"site_id":"'
    closes = b'Z","ts":"2026-11-21T12:00:00Z","seq":1,"soc":0.5,"p_kw":0}],[' + good
    full = good[:-1] + b',"x":[['
    closes_nested = b"]]}],[" + good
    for pair in ([open_string, closes], [full, closes_nested]):
        cols, refusals = decode_batch([*pair, good])
        assert cols.position.tolist() == [2], pair
        assert sorted(r.position for r in refusals) == [0, 1]


def test_load_and_pv_are_bounded_without_registry_limits() -> None:
    """The probe's 1e300 kW readings on a site whose registry sets no load or PV limit:
    refused against 20x the battery's rating (derived), a plausible reading folded."""
    sites = [site("s0")]  # no site_load_max_kw, no pv_max_kw
    rating = max(sites[0].p_charge_max_kw, sites[0].p_discharge_max_kw)
    values = [
        encode_telemetry("s0", T0, 1, 0.5, 1.0, site_load_kw=10 * rating, pv_kw=3 * rating),
        encode_telemetry("s0", T0 + timedelta(seconds=1), 2, 0.5, 1.0, site_load_kw=1e300),
        encode_telemetry("s0", T0 + timedelta(seconds=2), 3, 0.5, 1.0, pv_kw=1e300),
    ]
    records = [BusRecord(TOPICS.telemetry.name, 0, k, b"s0", v, 0) for k, v in enumerate(values)]
    ing, letters = asyncio.run(_ingest_one(records, sites))
    assert [(d.offset, d.reason) for d in letters] == [(1, "load_range"), (2, "pv_range")]
    assert ing.store.site_load_kw[0] == 10 * rating


def _limbo_setup(tmp_path: Path) -> tuple[Any, ...]:
    from market.adapter import LoggedMarket, SimulatedMarket
    from market.definitions import Product, load_market
    from market.lifecycle import BidAction
    from tests.api_support import NOW, make_bids
    from vpp.config import DatabaseSettings
    from vpp.store import db
    from vpp.store.bids import BidStore
    from vpp.store.keys import Principal
    from vpp.store.txlog import DbTxLog

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/limbo.db"))
    db.upgrade(engine)
    now = [NOW]
    store = BidStore(engine, clock=lambda: now[0])
    bids = make_bids(2)
    store.create(bids, solve_id="s", report={})
    alice = Principal("k", "alice", "operator")
    for b in bids:
        store.review(b.bid_id, 1, BidAction.APPROVE, alice)
    prices = {(Product.ENERGY_RT, b.interval_start): 45.0 for b in bids}
    sim = SimulatedMarket(load_market("caiso"), prices)
    return engine, now, store, bids, sim, LoggedMarket(sim, DbTxLog(engine)), alice


def test_a_lost_accept_write_is_closed_while_the_engine_runs(tmp_path: Path) -> None:
    """The probe's transient database error on the accept transaction: the pass goes on to
    the next bid, and the settle pass closes the stuck one from the logged answer once it
    has waited STUCK_AFTER (not before: a submission may be under way)."""
    from market.lifecycle import BidAction
    from vpp.bidding.bidder import STUCK_AFTER

    _, now, store, bids, sim, market, alice = _limbo_setup(tmp_path)
    original = store._advance
    failed = []

    def flaky(conn: object, row: Any, action: object, *a: object) -> object:
        if action == BidAction.ACCEPT and not failed:
            failed.append(row.bid_id)
            raise sa.exc.OperationalError("UPDATE bids", {}, Exception("database is locked"))
        return original(conn, row, action, *a)  # type: ignore[arg-type]

    store._advance = flaky  # type: ignore[method-assign,assignment]
    now[0] = bids[0].interval_start - timedelta(minutes=80)
    with pytest.raises(sa.exc.OperationalError):
        store.submit([bids[0].bid_id], alice, market, "tx-0")
    store.submit([bids[1].bid_id], alice, market, "tx-1")  # the next one is not held up
    assert [store.row(b.bid_id).status for b in bids] == ["submitted", "accepted"]
    assert store.reconcile_submitted(market, now[0], older_than=STUCK_AFTER) == {}
    now[0] += STUCK_AFTER
    counts = store.reconcile_submitted(market, now[0], older_than=STUCK_AFTER)
    assert counts == {"accept": 1} and store.row(bids[0].bid_id).status == "accepted"
    assert sim.submissions == 2  # each sent once


def test_an_unknown_bid_is_asked_again_and_an_operator_can_resolve_it(tmp_path: Path) -> None:
    from market.lifecycle import BidAction
    from vpp.store.bids import ConflictError

    _, now, store, bids, sim, market, alice = _limbo_setup(tmp_path)
    now[0] = bids[0].interval_start - timedelta(minutes=80)
    sim.submit = _crash  # type: ignore[method-assign]
    with pytest.raises(CrashError):
        store.submit([bids[0].bid_id], alice, market, "tx-u")
    sim.lookup = _crash  # type: ignore[method-assign]  # the market cannot say
    assert store.reconcile_submitted(market, now[0], include_unknown=True) == {"lose": 1}
    assert store.row(bids[0].bid_id).status == "unknown"
    # asked again at every pass: still nothing to go on, nothing changes (no churn)
    assert store.reconcile_submitted(market, now[0], include_unknown=True) == {}
    # the market answers again, never received it, the gate is open: resent once
    vars(sim).pop("submit")
    vars(sim).pop("lookup")
    assert store.reconcile_submitted(market, now[0], include_unknown=True) == {"accept": 1}
    assert store.row(bids[0].bid_id).status == "accepted" and sim.submissions == 1
    # an operator's resolution of another unknown bid, audited
    now[0] = bids[1].interval_start - timedelta(minutes=80)
    sim.submit = _crash  # type: ignore[method-assign]
    with pytest.raises(CrashError):
        store.submit([bids[1].bid_id], alice, market, "tx-v")
    sim.lookup = _crash  # type: ignore[method-assign]
    store.reconcile_submitted(market, now[0], include_unknown=True)
    with pytest.raises(ConflictError, match="not unknown"):
        store.resolve(bids[0].bid_id, 1, BidAction.ACCEPT, alice, "portal says accepted")
    row = store.resolve(bids[1].bid_id, 1, BidAction.REFUSE, alice, "portal: refused")
    assert row.status == "refused"
