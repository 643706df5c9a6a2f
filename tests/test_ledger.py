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
