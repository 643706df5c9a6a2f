"""The command ledger on SQLite and the real PostgreSQL: the bulk append stores exactly what
a Core insert would, all or nothing, and the readers rebuild commands from it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.api_support import engine_for
from vpp.store import ledger
from vpp.store.ledger import LedgerEntry
from vpp.store.tables import command_ledger

T0 = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    gen = engine_for(request.param, tmp_path, request)
    yield next(gen)
    for _ in gen:
        pass


def entry(k: int, event: str = "issued", state: str = "pending", **kw: object) -> LedgerEntry:
    fields: dict[str, object] = {
        "command_id": f"0190a000-0000-7000-8000-{k:012d}",
        "dispatch_id": "g1-20261121T1200Z",
        "site_id": f"site-{k % 7}",
        "event": event,
        "state": state,
        "attempt": 1,
        "setpoint_kw": -2.5 + k * 0.125,
        "valid_from": T0,
        "valid_until": T0 + timedelta(minutes=5),
        "ts": T0 + timedelta(milliseconds=k),
        "reason": None,
        **kw,
    }
    return LedgerEntry(**fields)  # type: ignore[arg-type]


def test_bulk_append_round_trips_exactly(engine: sa.Engine) -> None:
    entries = [entry(k) for k in range(50)] + [
        entry(3, "acked", "acked", ts=T0 + timedelta(seconds=1)),
        entry(4, "rejected", "rejected", reason="setpoint 9 kW beyond rating"),
    ]
    ledger.append(engine, entries)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(command_ledger).order_by(command_ledger.c.seq)).all()
    # Written in command-id order; one command's entries keep their order.
    assert [ledger._entry(r) for r in rows] == sorted(entries, key=lambda e: e.command_id)
    third = [r.event for r in rows if r.command_id == entry(3).command_id]
    assert third == ["issued", "acked"]
    assert all(r.ts.tzinfo is not None for r in rows)
    # The same entry through a plain Core insert reads back identically.
    with engine.begin() as conn:
        conn.execute(command_ledger.insert(), [entries[0].row()])
        last = conn.execute(sa.select(command_ledger).order_by(command_ledger.c.seq.desc())).first()
    assert ledger._entry(last) == entries[0]


def test_a_bad_entry_writes_nothing(engine: sa.Engine) -> None:
    naive = entry(2, ts=datetime(2026, 11, 21, 12, 0))  # noqa: DTZ001 - the bug under test
    with pytest.raises(ValueError, match="naive datetime"):
        ledger.append(engine, [entry(1), naive, entry(3)])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(command_ledger)).scalar() == 0


def test_open_commands_and_last_states(engine: sa.Engine) -> None:
    ledger.append(
        engine,
        [
            entry(1),
            entry(2),
            entry(3),
            entry(1, "acked", "acked"),
            entry(2, "timeout", "timed_out", reason="no ack after 3 attempts"),
            entry(3, "sent", "pending", attempt=2, reason="retry 2"),
        ],
    )
    opened = ledger.open_commands(engine, T0)
    assert sorted((first.command_id[-1], last.state, last.attempt) for first, last in opened) == [
        ("1", "acked", 1),
        ("3", "pending", 2),
    ]
    assert ledger.open_commands(engine, T0 + timedelta(minutes=5)) == []  # validity over
    rows, count = ledger.last_states(engine, state="timed_out")
    assert count == 1 and rows[0]["reason"] == "no ack after 3 attempts"
    history, total = ledger.history(engine, command_id=entry(3).command_id)
    assert total == 2 and [r["event"] for r in history] == ["sent", "issued"]


# -- bounded state: 64-bit keys, the maintained summary, retention ---------------------------


@pytest.mark.postgres
def test_the_ledger_writes_past_the_32_bit_limit(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The walk-through's ``SequenceGeneratorLimitExceeded``: the ledger's sequence moved to
    just below 2^31, then a dispatch's worth of rows appended across the old limit."""
    gen = engine_for("postgres", tmp_path, request)
    engine = next(gen)
    try:
        with engine.begin() as conn:
            name = conn.execute(sa.text("SELECT pg_get_serial_sequence('command_ledger', 'seq')"))
            conn.execute(sa.text(f"ALTER SEQUENCE {name.scalar()} RESTART WITH {2**31 - 5}"))
        ledger.append(engine, [entry(k) for k in range(10)])
        ledger.append(engine, [entry(k, "acked", "acked") for k in range(10)])
        with engine.connect() as conn:
            seqs = conn.execute(sa.select(command_ledger.c.seq)).scalars().all()
        assert min(seqs) == 2**31 - 5 and max(seqs) == 2**31 + 14
        rows, count = ledger.last_states(engine, limit=100)
        assert count == 10 and {r["state"] for r in rows} == {"acked"}
        assert rows[0]["seq"] == 2**31 + 14  # newest first, by the 64-bit key
    finally:
        for _ in gen:
            pass


def _grouped_last(engine: sa.Engine) -> dict[str, tuple[int, str]]:
    """The last state per command the slow way: group the whole ledger."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(command_ledger).order_by(command_ledger.c.seq)).all()
    return {r.command_id: (r.seq, r.state) for r in rows}


def test_the_summary_is_the_ledger_grouped(engine: sa.Engine) -> None:
    import random

    rng = random.Random(3)
    states = ["pending", "acked", "completed", "timed_out"]
    for _ in range(20):
        batch = [
            entry(k, rng.choice(["acked", "sent"]), rng.choice(states))
            for k in rng.sample(range(40), 12)
        ]
        ledger.append(engine, batch)
    rows, count = ledger.last_states(engine, limit=500)
    expected = _grouped_last(engine)
    assert count == len(expected)
    assert {r["command_id"]: (r["seq"], r["state"]) for r in rows} == expected
    assert [r["seq"] for r in rows] == sorted((s for s, _ in expected.values()), reverse=True)
    acked, n = ledger.last_states(engine, state="acked", limit=500)
    assert n == sum(1 for _, st in expected.values() if st == "acked") == len(acked)


def test_retention_prunes_in_batches_and_keeps_what_is_open(engine: sa.Engine) -> None:
    old = T0 - timedelta(days=100)
    ledger.append(engine, [entry(k, ts=old, valid_until=old) for k in range(25)])
    ledger.append(
        engine,
        [entry(k, "completed", "completed", ts=old + timedelta(seconds=1)) for k in range(10)],
    )
    ledger.append(engine, [entry(k) for k in range(100, 105)])  # today's, open
    removed = ledger.prune(engine, T0 - timedelta(days=90), batch=7)
    assert removed == 35 + 25  # every old ledger row, every summary row of an old command
    with engine.connect() as conn:
        left = conn.execute(sa.select(command_ledger.c.command_id)).scalars().all()
    assert sorted(left) == sorted(entry(k).command_id for k in range(100, 105))
    opened = ledger.open_commands(engine, T0)
    assert sorted(last.command_id for _, last in opened) == sorted(left)
    assert ledger.last_states(engine)[1] == 5
