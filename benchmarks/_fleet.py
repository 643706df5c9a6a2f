"""A small fleet in memory, shared by the API tests and the console/API benchmarks."""

from __future__ import annotations

from datetime import datetime, timedelta

from vpp.fleet.hierarchy import FleetHierarchy
from vpp.telemetry.contract import encode_telemetry
from vpp.telemetry.decode import decode_batch
from vpp.twins.registry import SiteConfig
from vpp.twins.store import FleetStore


def make_fleet(at: datetime) -> tuple[FleetStore, FleetHierarchy]:
    """Six 1 MWh / 500 kW sites in groups north and south, three minutes of readings
    before ``at`` and a current one: the small fleet the API tests and benchmarks share."""
    store = FleetStore(trace_depth=16, trace_every_s=0.0)
    for i in range(6):
        store.register(
            SiteConfig(
                site_id=f"s{i}",
                group="north" if i < 3 else "south",
                capacity_kwh=1000,
                p_charge_max_kw=500,
                p_discharge_max_kw=500,
            )
        )
    now = at.timestamp()
    # a few minutes of history for the sites' traces, then the current reading (seq 1)
    for k, (soc, p_kw) in enumerate(((0.56, -200.0), (0.54, 150.0), (0.52, 300.0))):
        cols, _ = decode_batch(
            [
                encode_telemetry(
                    f"s{i}",
                    at - timedelta(seconds=181 - 60 * k),
                    0,
                    soc,
                    p_kw,
                    site_load_kw=80.0 + 10 * k,
                )
                for i in range(6)
            ]
        )
        store.fold(cols, now)
    cols, _ = decode_batch(
        [encode_telemetry(f"s{i}", at - timedelta(seconds=1), 1, 0.5, 1.0) for i in range(6)]
    )
    store.fold(cols, now)
    store.evaluate(now)
    hier = FleetHierarchy(store)
    hier.refresh(now)
    return store, hier
