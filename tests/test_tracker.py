"""The command tracker: acks, idempotency, retries with the same id, timeouts, supersession,
expiry, and the rebuild from the ledger."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from vpp.dispatch.contract import Ack, Command
from vpp.dispatch.tracker import Tracker, TrackerSettings

T0 = 1_800_000_000.0
START = datetime.fromtimestamp(T0, UTC)


def cmd(cid: str, site: str = "s1", kw: float = 2.0, until_s: float = 60.0) -> Command:
    return Command(1, cid, "d1", site, kw, START, START + timedelta(seconds=until_s), 1, START)


def ack(cid: str, status: str = "accepted", site: str = "s1", reason: str | None = None) -> Ack:
    return Ack(1, cid, site, status, START, reason)  # type: ignore[arg-type]


def tracker() -> Tracker:
    return Tracker(TrackerSettings(ack_timeout_s=2.0, max_attempts=3, backoff_s=0.5, jitter=0.0))


def test_ack_is_idempotent_and_late_acks_change_nothing() -> None:
    t = tracker()
    entries = t.issue([cmd("a")], "g", T0)
    assert [e.event for e in entries] == ["issued"]
    e1, out = t.on_acks([ack("a")], T0 + 0.1)
    assert [e.event for e in e1] == ["acked"] and out.responsive == ["s1"]
    e2, _ = t.on_acks([ack("a")], T0 + 0.2)
    assert e2 == []  # duplicate
    t.issue([cmd("b", kw=3.0)], "g", T0 + 1)
    assert t.commands["a"].state == "superseded"
    e3, _ = t.on_acks([ack("a", "completed")], T0 + 2)
    assert e3 == []  # late ack for a superseded command
    e4, _ = t.on_acks([ack("b", site="intruder")], T0 + 2)
    assert e4 == [] and t.commands["b"].state == "pending"  # wrong site: ignored


def test_retries_keep_the_id_then_time_out_and_redispatch() -> None:
    t = tracker()
    t.issue([cmd("a")], "g", T0)
    assert t.due(T0 + 1.9)[0] == []
    entries, out = t.due(T0 + 2.0)
    assert [e.event for e in entries] == ["sent"] and out.resend[0].command_id == "a"
    assert out.resend[0].attempt == 2
    entries, out = t.due(T0 + 2.0 + 2.0 + 0.5)  # timeout + backoff 0.5
    assert out.resend[0].attempt == 3
    entries, out = t.due(T0 + 2.0 + 2.5 + 3.0 + 1.0)  # backoff doubles to 1.0
    assert [e.event for e in entries] == ["timeout"]
    assert out.unresponsive == ["s1"] and out.redispatch == {"g"}
    assert t.commands["a"].state == "timed_out"


def test_rejection_is_recorded_with_its_reason_and_redispatches() -> None:
    t = tracker()
    t.issue([cmd("a")], "g", T0)
    entries, out = t.on_acks([ack("a", "rejected", reason="battery maintenance")], T0 + 1)
    assert entries[0].event == "rejected" and entries[0].reason == "battery maintenance"
    assert out.redispatch == {"g"}


def test_no_retry_beyond_the_interval_and_expiry() -> None:
    t = tracker()
    t.issue([cmd("a", until_s=3.0), cmd("b", site="s2", until_s=3.0)], "g", T0)
    t.on_acks([ack("b", site="s2")], T0 + 0.5)
    entries, out = t.due(T0 + 2.0)  # a retry would end after the validity: give up now
    assert [e.event for e in entries] == ["timeout"] and out.resend == []
    entries, _ = t.due(T0 + 3.0)
    assert [(e.command_id, e.event) for e in entries] == [("b", "completed")]


def test_restore_resends_pending_commands_under_their_own_id() -> None:
    t = tracker()
    issued = t.issue([cmd("a"), cmd("b", site="s2")], "g", T0)
    acked, _ = t.on_acks([ack("b", site="s2")], T0 + 0.5)
    rows = [(issued[0], issued[0]), (issued[1], acked[0])]
    fresh = tracker()
    entries, resend = fresh.restore(rows, {"s1": "g", "s2": "g"}, T0 + 5)
    assert [c.command_id for c in resend] == ["a"] and resend[0].attempt == 2
    assert resend[0].setpoint_kw == 2.0 and resend[0].valid_until == issued[0].valid_until
    assert fresh.commands["b"].state == "acked"
    assert [e.event for e in entries] == ["sent"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["issue", "accept", "reject", "complete", "tick"]),
            st.integers(0, 5),  # site
            st.floats(0.0, 4.0),  # time step
            st.floats(1.0, 30.0),  # validity of a new command
        ),
        max_size=60,
    )
)
def test_due_and_counts_agree_with_a_full_scan(ops: list[tuple[str, int, float, float]]) -> None:
    """After every ``due(now)`` nothing due is left behind (no pending command past its
    deadline or validity, no acked one past its validity) and the state counts match."""
    t = tracker()
    now, k = T0, 0
    for op, site, step, validity in ops:
        now += step
        if op == "issue":
            k += 1
            c = Command(
                1,
                f"c{k}",
                "d1",
                f"s{site}",
                1.0,
                START,
                datetime.fromtimestamp(now + validity, UTC),
                1,
                datetime.fromtimestamp(now, UTC),
            )
            t.issue([c], f"g{site % 2}", now)
        elif op in ("accept", "reject", "complete") and (cid := t.latest.get(f"s{site}")):
            status = {"accept": "accepted", "reject": "rejected", "complete": "completed"}[op]
            t.on_acks([ack(cid, status, site=f"s{site}")], now)
        t.due(now)
        for tr in t.commands.values():
            until = tr.command.valid_until.timestamp()
            if tr.state == "pending":
                assert until > now and tr.deadline > now
            if tr.state == "acked":
                assert until > now
        states = Counter(tr.state for tr in t.commands.values())
        assert {s: n for s, n in t.counts.items() if n} == dict(states)
