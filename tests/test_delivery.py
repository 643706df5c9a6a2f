"""Delivery as a meter counts it: a closed interval's shortfall is the deviation of its
measured mean power from the target, either side, beyond the documented tolerance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vpp.config import DispatchSettings
from vpp.dispatch.core import DispatchCore
from vpp.dispatch.targets import GroupTarget, dispatch_id
from vpp.telemetry.contract import encode_telemetry
from vpp.telemetry.decode import decode_batch
from vpp.twins.registry import SiteConfig
from vpp.twins.store import FleetStore

T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
SITES = 4


def _store() -> FleetStore:
    store = FleetStore()
    for k in range(SITES):
        store.register(
            SiteConfig(
                site_id=f"s{k}",
                group="g",
                capacity_kwh=100.0,
                p_charge_max_kw=50.0,
                p_discharge_max_kw=50.0,
                telemetry_interval_s=5.0,
            )
        )
    return store


def _close_with(target_kw: float, site_p_kw: float) -> dict[str, object]:
    """Run one 5-minute interval where every site reads ``site_p_kw``; the closing row."""
    store = _store()
    core = DispatchCore(DispatchSettings(follow_grace_s=600.0), lambda: store)
    seq = [0]

    def read(at: datetime) -> None:
        seq[0] += 1
        cols, _ = decode_batch(
            [encode_telemetry(f"s{k}", at, seq[0], 0.5, site_p_kw) for k in range(SITES)]
        )
        store.fold(cols, at.timestamp())
        store.evaluate(at.timestamp())

    read(T0 - timedelta(seconds=1))
    t = GroupTarget(
        dispatch_id=dispatch_id("g", T0),
        group="g",
        interval_start=T0,
        interval_end=T0 + timedelta(minutes=5),
        target_kw=target_kw,
    )
    core.add_targets([t], T0.timestamp())
    rows: list[dict[str, object]] = []
    for s in range(0, 301, 5):
        at = T0 + timedelta(seconds=s)
        read(at)
        rows += core.tick(at.timestamp()).rows
    return rows[-1]


@pytest.mark.parametrize(
    ("target_kw", "site_p_kw", "status", "shortfall_kw"),
    [
        (-51.0, -51.0 / SITES, "delivered", 0.0),  # on target
        (-51.0, -31.6 / SITES, "short", 19.4),  # the walk-through's south 05:15
        (100.0, 140.0 / SITES, "short", 40.0),  # over-delivery is a deviation too
        (100.0, 104.0 / SITES, "delivered", 0.0),  # within 5 % of target
        (0.0, 16.0 / SITES, "short", 16.0),  # a 0 kW award that moved the fleet
        (0.0, 0.8 / SITES, "delivered", 0.0),  # within the 1 kW floor
    ],
)
def test_a_closed_interval_is_judged_by_its_measured_mean(
    target_kw: float, site_p_kw: float, status: str, shortfall_kw: float
) -> None:
    row = _close_with(target_kw, site_p_kw)
    assert row["status"] == status
    assert row["shortfall_kw"] == pytest.approx(shortfall_kw, abs=1e-6)
    assert row["delivered_kw"] == pytest.approx(site_p_kw * SITES)


def test_nothing_measured_is_nothing_delivered() -> None:
    store = _store()  # registered, never reported: no site online
    core = DispatchCore(DispatchSettings(), lambda: store)
    t = GroupTarget(
        dispatch_id=dispatch_id("g", T0),
        group="g",
        interval_start=T0,
        interval_end=T0 + timedelta(minutes=5),
        target_kw=30.0,
    )
    core.add_targets([t], T0.timestamp())
    core.tick(T0.timestamp() + 1)
    row = core.tick((T0 + timedelta(minutes=5)).timestamp()).rows[-1]
    assert row["status"] == "short"
    assert row["shortfall_kw"] == pytest.approx(30.0)
