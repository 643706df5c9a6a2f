"""Site twins: fold rules, refusals, registry changes, state machines, bounds, hierarchy."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from vpp.fleet.estimates import Z90, EstimateSettings
from vpp.fleet.hierarchy import FleetHierarchy
from vpp.telemetry.contract import encode_telemetry
from vpp.telemetry.decode import decode_batch
from vpp.twins.registry import Registry, RegistryChange, SiteConfig
from vpp.twins.store import FleetStore
from vpp.twins.view import site_view

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()


def site(site_id: str, group: str = "north", **kw: float) -> SiteConfig:
    base: dict[str, float | str] = {
        "site_id": site_id,
        "group": group,
        "capacity_kwh": 10.0,
        "p_charge_max_kw": 5.0,
        "p_discharge_max_kw": 5.0,
        "eff_charge": 0.95,
        "eff_discharge": 0.95,
        "soc_min": 0.1,
        "soc_max": 0.9,
        "telemetry_interval_s": 10.0,
    }
    base.update(kw)
    return SiteConfig.model_validate(base)


def reading(
    site_id: str, dt_s: float, seq: int, soc: float, p_kw: float = 0.0, **kw: object
) -> bytes:
    return encode_telemetry(site_id, T0 + timedelta(seconds=dt_s), seq, soc, p_kw, **kw)  # type: ignore[arg-type]


def fold(store: FleetStore, *msgs: bytes, now: float = NOW) -> object:
    cols, refusals = decode_batch(list(msgs))
    out = store.fold(cols, now)
    out.refusals = [*refusals, *out.refusals]
    return out


@pytest.fixture
def store() -> FleetStore:
    s = FleetStore(partitions=4)
    for i in range(3):
        s.register(site(f"s{i}", "north" if i < 2 else "south"))
    return s


def test_newest_wins_duplicates_and_out_of_order_never_move_back(store: FleetStore) -> None:
    fold(store, reading("s0", -5, 2, 0.5))
    out = fold(store, reading("s0", -9, 1, 0.2), reading("s0", -5, 2, 0.9))
    assert out.applied == 0 and out.superseded == 2  # type: ignore[attr-defined]
    assert store.soc[0] == 0.5
    # Same ts, higher seq wins; within one batch the newest wins whatever the order.
    fold(store, reading("s0", -1, 7, 0.7), reading("s0", -1, 9, 0.8), reading("s0", -3, 10, 0.1))
    assert (store.seq[0], store.soc[0]) == (9, 0.8)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\x00garbage", "undecodable"),
        (b'{"v":1,"site_id":"s0"}', "schema"),
        (
            b'{"v":1,"site_id":"s0","ts":"2026-11-21T12:00:00","seq":1,"soc":0.5,"p_kw":0}',
            "bad_timestamp",
        ),
        (
            b'{"v":1,"site_id":"s0","ts":"2026-11-21T12:00:00Z","seq":1,"soc":1e999,"p_kw":0}',
            "non_finite",
        ),
        (
            b'{"v":2,"site_id":"s0","ts":"2026-11-21T12:00:00Z","seq":1,"soc":0.5,"p_kw":0}',
            "version",
        ),
        (
            b'{"v":1,"site_id":"nope","ts":"2026-11-21T12:00:00Z","seq":1,"soc":0.5,"p_kw":0}',
            "unknown_site",
        ),
        (
            b'{"v":1,"site_id":"s0","ts":"2026-11-21T12:00:00Z","seq":1,"soc":1.2,"p_kw":0}',
            "soc_range",
        ),
        (
            b'{"v":1,"site_id":"s0","ts":"2026-11-21T12:00:00Z","seq":1,"soc":0.5,"p_kw":7.6}',
            "power_range",
        ),
        (
            b'{"v":1,"site_id":"s0","ts":"2026-11-21T12:01:00Z","seq":1,"soc":0.5,"p_kw":0}',
            "ts_future",
        ),
        (
            b'{"v":1,"site_id":"s0","ts":"2026-11-01T12:00:00Z","seq":1,"soc":0.5,"p_kw":0}',
            "ts_too_old",
        ),
        (
            b'{"v":1,"site_id":"s0","ts":"2026-11-21T12:00:00Z","seq":1,"soc":0.5,"p_kw":0,"x":1}',
            "schema",
        ),
        (
            b'{"v":1,"site_id":"s0","ts":"2026-11-21T12:00:00Z","seq":1,"soc":"full","p_kw":0}',
            "schema",
        ),
    ],
)
def test_each_refusal_has_a_precise_reason_and_touches_nothing(
    store: FleetStore, raw: bytes, reason: str
) -> None:
    before = FleetStore.restore(store.snapshot())
    good = reading("s1", -1, 1, 0.4)
    out = fold(store, raw, good)
    refusals = out.refusals  # type: ignore[attr-defined]
    assert [(r.position, r.reason) for r in refusals] == [(0, reason)]
    assert refusals[0].detail
    assert store.soc[1] == 0.4 and math.isnan(store.soc[0])
    assert np.array_equal(store.column("soc")[[0, 2]], before.column("soc")[[0, 2]], equal_nan=True)


def test_power_within_tolerance_is_accepted(store: FleetStore) -> None:
    out = fold(store, reading("s0", -1, 1, 0.5, 7.4))
    assert out.applied == 1  # type: ignore[attr-defined]


def test_registry_changes_apply_live_and_history_explains_the_past() -> None:
    reg = Registry()
    store = FleetStore()
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    for change in (
        RegistryChange(t1, "a", site("a", capacity_kwh=10.0)),
        RegistryChange(t2, "a", site("a", "south", capacity_kwh=9.0)),
        RegistryChange(t3, "a", None),
    ):
        assert reg.apply(change)
        if change.config is None:
            store.decommission(change.site_id)
        else:
            store.register(change.config)
    assert not reg.apply(RegistryChange(t3, "a", None))
    assert reg.as_of(t1 + timedelta(minutes=5))["a"].capacity_kwh == 10.0
    assert reg.as_of(t2)["a"].group == "south"
    assert "a" not in reg.as_of(t3)
    assert store.capacity_kwh[0] == 9.0 and store.groups[store.group[0]] == "south"
    assert not store.active[0]
    out = fold(store, reading("a", -1, 1, 0.5))
    assert [r.reason for r in out.refusals] == ["unknown_site"]  # type: ignore[attr-defined]


def test_connectivity_ages_online_stale_offline_and_comes_back(store: FleetStore) -> None:
    fold(store, reading("s0", 0, 1, 0.5))
    names = lambda evs: [(e.site_id, e.from_state, e.to_state) for e in evs]  # noqa: E731
    assert names(store.evaluate(NOW + 31)) == [("s0", "online", "stale")]
    assert names(store.evaluate(NOW + 101)) == [("s0", "stale", "offline")]
    out = fold(store, reading("s0", 100, 2, 0.5), now=NOW + 101)
    assert names(out.events) == [("s0", "offline", "online")]  # type: ignore[attr-defined]


def test_fault_and_unavailable_are_events(store: FleetStore) -> None:
    fold(store, reading("s0", -2, 1, 0.5, 1.0))
    out = fold(store, reading("s0", -1, 2, 0.5, 0.0, mode="fault"))
    assert [e.kind for e in out.events] == ["operation:fault"]  # type: ignore[attr-defined]
    out = fold(store, reading("s0", 0, 3, 0.5, 0.0, available=False))
    assert [e.kind for e in out.events] == ["operation:unavailable"]  # type: ignore[attr-defined]


def test_stale_bounds_widen_with_age_and_offline_contributes_nothing() -> None:
    store = FleetStore()
    store.register(site("a"))
    fold(store, reading("a", 0, 1, 0.5, 0.0))
    hier = FleetHierarchy(store, EstimateSettings(sustain_h=1.0))

    store.evaluate(NOW + 1)
    online = hier.refresh(NOW + 1).fleet.e_discharge_kwh
    # E = 5, E_min = 1: (5 - 1) * 0.95 exactly, no bounds
    assert online.expected == pytest.approx(3.8) and online.lower == online.upper == online.expected

    store.evaluate(NOW + 60)  # stale after 30 s (3 x 10 s)
    stale = hier.refresh(NOW + 60).fleet.e_discharge_kwh
    age_h = 60 / 3600
    lo_e = max(min(1.0, 5.0), 5.0 - 5.0 * age_h / 0.95)
    hi_e = min(max(9.0, 5.0), 5.0 + 5.0 * age_h * 0.95)
    assert stale.expected == pytest.approx(3.8)
    assert stale.lower == pytest.approx((lo_e - 1.0) * 0.95)
    assert stale.upper == pytest.approx((hi_e - 1.0) * 0.95)
    wider = hier.refresh(NOW + 90).fleet.e_discharge_kwh
    assert wider.lower < stale.lower and wider.upper > stale.upper

    store.evaluate(NOW + 200)  # offline after 100 s
    offline = hier.refresh(NOW + 200).fleet
    assert offline.e_discharge_kwh.expected == 0.0
    assert offline.e_discharge_kwh.lower == 0.0
    assert offline.e_discharge_kwh.upper == pytest.approx(3.8)
    assert offline.p_discharge_p50_kw == 0.0 and offline.counts["connectivity"]["offline"] == 1


def test_hierarchy_sums_groups_counts_states_and_navigates() -> None:
    store = FleetStore()
    for i, g in enumerate(["n", "n", "s"]):
        store.register(site(f"x{i}", g))
    fold(
        store,
        reading("x0", 0, 1, 0.9, 2.0),
        reading("x1", 0, 1, 0.1, -3.0),
        reading("x2", 0, 1, 0.5),
    )
    store.evaluate(NOW)
    snap = FleetHierarchy(store).refresh(NOW)
    assert set(snap.groups) == {"n", "s"}
    assert snap.fleet.sites == 3
    assert snap.groups["n"].counts["operation"] == {
        "idle": 0,
        "charging": 1,
        "discharging": 1,
        "fault": 0,
        "unavailable": 0,
    }
    assert snap.fleet.p_net_kw.expected == pytest.approx(-1.0)
    for q in ("e_discharge_kwh", "e_charge_kwh", "p_discharge_kw", "p_charge_kw"):
        total = getattr(snap.fleet, q).expected
        parts = sum(getattr(g, q).expected for g in snap.groups.values())
        assert total == pytest.approx(parts)
    assert snap.children("fleet") == ["n", "s"]
    assert snap.children("group", "n") == ["x0", "x1"]
    assert snap.parent("site", "x2") == ("group", "s")
    assert snap.parent("group", "s") == ("fleet", "fleet")
    x0 = snap.site("x0")
    assert x0 is not None and x0.e_discharge_kwh.expected == pytest.approx((9.0 - 1.0) * 0.95)


def test_p90_is_below_p50_and_matches_the_normal_approximation() -> None:
    store = FleetStore()
    n = 400
    for i in range(n):
        store.register(site(f"y{i}"))
    fold(store, *(reading(f"y{i}", 0, 1, 0.9) for i in range(n)))
    store.evaluate(NOW)
    store.health[:n] = 0.9
    snap = FleetHierarchy(store, EstimateSettings(sustain_h=1.0)).refresh(NOW)
    p_each = 5.0  # min(5 kW, (9 - 1) * 0.95 kWh / 1 h)
    mean = n * 0.9 * p_each
    sd = math.sqrt(n * (0.9 * p_each**2 - (0.9 * p_each) ** 2))
    assert snap.fleet.p_discharge_p50_kw == pytest.approx(mean)
    assert snap.fleet.p_discharge_p90_kw == pytest.approx(mean - Z90 * sd)
    assert snap.fleet.p_discharge_kw.expected == pytest.approx(n * p_each)


def test_owned_partitions_limit_the_aggregate() -> None:
    store = FleetStore(partitions=4)
    for i in range(40):
        store.register(site(f"z{i}"))
    fold(store, *(reading(f"z{i}", 0, 1, 0.5) for i in range(40)))
    store.evaluate(NOW)
    hier = FleetHierarchy(store)
    total = hier.refresh(NOW).fleet.e_discharge_kwh.expected
    store.set_owned_partitions([0, 1])
    part_a = hier.refresh(NOW).fleet
    store.set_owned_partitions([2, 3])
    part_b = hier.refresh(NOW).fleet
    assert 0 < part_a.sites < 40 and part_a.sites + part_b.sites == 40
    assert part_a.e_discharge_kwh.expected + part_b.e_discharge_kwh.expected == pytest.approx(total)


def test_snapshot_round_trip_and_site_view(store: FleetStore) -> None:
    fold(store, reading("s2", -3, 4, 0.33, -1.5, site_load_kw=2.0))
    store.evaluate(NOW)
    back = FleetStore.restore(store.snapshot())
    assert back.state_equal(store)
    view = site_view(back, "s2", NOW)
    assert view is not None
    assert (view.group, view.connectivity, view.operation) == ("south", "online", "charging")
    assert view.soc == 0.33 and view.site_load_kw == 2.0 and view.pv_kw is None
    assert view.e_kwh == pytest.approx(3.3)
    assert site_view(back, "missing", NOW) is None


def test_store_grows_past_its_initial_capacity() -> None:
    store = FleetStore(initial_capacity=16)
    for i in range(100):
        store.register(site(f"g{i}"))
    fold(store, *(reading(f"g{i}", 0, 1, 0.5) for i in range(100)))
    assert store.n == 100 and np.all(store.column("soc") == 0.5)


# -- the recent-readings trace (vpp.twins.trace) ------------------------------------------


def test_trace_samples_at_most_every_s_and_keeps_the_last_depth_oldest_first() -> None:
    s = FleetStore(partitions=1, trace_depth=3, trace_every_s=10.0)
    s.register(site("a"))
    s.register(site("b"))
    for k in range(8):  # a reading every 5 s: every other one is due
        fold(s, reading("a", -60 + 5 * k, k, 0.5 + 0.01 * k, p_kw=k), now=NOW)
    got = s.trace.series(s.index["a"])  # type: ignore[union-attr]
    assert got["ts"] == [T0.timestamp() - 60 + 5 * k for k in (2, 4, 6)]
    assert got["p_kw"] == [2.0, 4.0, 6.0]
    assert got["soc"] == [0.52, 0.54, 0.56]
    assert s.trace.series(s.index["b"])["ts"] == []  # type: ignore[union-attr]


def test_trace_ignores_refused_and_superseded_readings_and_survives_growth() -> None:
    s = FleetStore(partitions=1, initial_capacity=16, trace_depth=4, trace_every_s=0.0)
    s.register(site("a"))
    fold(s, reading("a", -10, 2, 0.5, p_kw=1.0))
    fold(s, reading("a", -20, 1, 0.4, p_kw=9.0))  # older than the twin: superseded
    fold(s, reading("a", -5, 3, 1.7, p_kw=9.0))  # SoC out of range: refused
    for i in range(40):  # the store grows past its first capacity
        s.register(site(f"x{i}"))
    fold(s, reading("a", -1, 4, 0.6, p_kw=2.0))
    got = s.trace.series(s.index["a"])  # type: ignore[union-attr]
    assert got["p_kw"] == [1.0, 2.0] and got["soc"] == [0.5, 0.6]


def test_a_site_day_is_the_coarse_trace_then_the_recent_one() -> None:
    """The site page's day: one reading every day_trace_every_s up to where the recent
    trace begins, then the recent trace's (the recent one alone covered 12 minutes)."""
    s = FleetStore(
        partitions=1, trace_depth=3, trace_every_s=60.0, day_trace_depth=96, day_trace_every_s=900.0
    )
    s.register(site("a"))
    start = -6 * 3600
    for k in range(6 * 60 + 1):  # a reading a minute for six hours
        fold(s, reading("a", start + 60 * k, k + 1, 0.5, p_kw=float(k % 4)), now=NOW)
    got = s.recent_telemetry(s.index["a"])
    ts = [t - T0.timestamp() for t in got["ts"]]  # type: ignore[union-attr]
    assert ts[-3:] == [-120.0, -60.0, 0.0]  # the recent trace, every minute
    assert ts[:-3] == [start + 900.0 * k for k in range(24)]  # then the day, every 15 min
    assert ts == sorted(ts) and got["p_kw"][-1] == 0.0  # type: ignore[index]
    assert (got["day_every_s"], got["day_depth"], got["depth"]) == (900.0, 96, 3)


def test_no_trace_when_depth_is_zero() -> None:
    s = FleetStore(partitions=1)
    s.register(site("a"))
    fold(s, reading("a", -1, 1, 0.5))
    assert s.trace is None
