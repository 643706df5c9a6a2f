"""An API wired to a real database (SQLite or PostgreSQL), a small fleet and a simulated
market, for the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from benchmarks._fleet import make_fleet as shared_fleet
from market.adapter import LoggedMarket, SimulatedMarket
from market.bids import Bid, BidCurve, Segment
from market.definitions import Product, load_market
from tests.conftest import PG_BASE_URL
from vpp.api.app import create_app
from vpp.bus.embedded import EmbeddedBus
from vpp.config import DatabaseSettings, DispatchSettings, PeakShavingSettings, TopicsSettings
from vpp.dispatch.service import DispatchService
from vpp.fleet.hierarchy import FleetHierarchy
from vpp.peak_shaving import PeakShaver
from vpp.services import Services
from vpp.store import db
from vpp.store.bids import BidStore
from vpp.store.keys import KeyStore
from vpp.store.txlog import DbTxLog
from vpp.twins.store import FleetStore

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MARKET = load_market("caiso")
FIRST = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)  # RT gate = start - 75 min


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Api:
    client: TestClient
    services: Services
    clock: Clock
    sim: SimulatedMarket
    keys: dict[str, str]  # name -> plaintext
    engine: sa.Engine

    def h(self, who: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[who]}


def make_bids(n: int = 12) -> list[Bid]:
    out = []
    for k in range(n):
        start = FIRST + timedelta(minutes=5 * (k // 2))
        group = "north" if k % 2 == 0 else "south"
        out.append(
            Bid(
                bid_id=f"{group}-energy_rt-{start:%Y%m%dT%H%MZ}",
                market="caiso",
                group=group,
                product=Product.ENERGY_RT,
                interval_start=start,
                interval_end=start + timedelta(minutes=5),
                curve=BidCurve(
                    discharge=[Segment(price_per_mwh=40 + k, quantity_mw=0.5)],
                    charge=[Segment(price_per_mwh=10, quantity_mw=0.25)],
                ),
            )
        )
    return out


def make_fleet() -> tuple[FleetStore, FleetHierarchy]:
    return shared_fleet(NOW)


def engine_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    if kind == "sqlite":
        engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/api.db"))
        db.upgrade(engine)
        yield engine
        engine.dispose()
        return
    schema = f"{request.getfixturevalue('pg_schema')}_{abs(hash(request.node.nodeid)) % 10**8}"
    admin = sa.create_engine(PG_BASE_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = db.create_db_engine(DatabaseSettings(url=PG_BASE_URL, schema_name=schema))
    db.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def build_api(engine: sa.Engine) -> Api:
    clock = Clock()
    keys = KeyStore(engine, ttl_s=0.0)
    bids = BidStore(engine, clock=clock, cache_ttl_s=60)
    prices = {(Product.ENERGY_RT, FIRST + timedelta(minutes=5 * k)): 45.0 for k in range(24)}
    sim = SimulatedMarket(MARKET, prices)
    fleet_store, hier = make_fleet()
    services = Services(
        db=engine,
        keys=keys,
        bids=bids,
        fleet=lambda: (hier.latest, fleet_store),
        market=LoggedMarket(sim, DbTxLog(engine)),
        clock=clock,
    )
    # Dispatch is built but not started: the API schedules targets into it and reads its
    # live deliveries; no ticks run, so nothing is published.
    services.dispatch = DispatchService(
        DispatchSettings(),
        EmbeddedBus(),
        TopicsSettings(),
        db=engine,
        store=lambda: fleet_store,
        clock=lambda: clock().timestamp(),
    )
    services.peak_shaver = PeakShaver(
        PeakShavingSettings(),
        engine,
        lambda: fleet_store,
        services.dispatch,
        clock=lambda: clock().timestamp(),
    )
    bids.create(make_bids(), solve_id="solve-1", report={"model": "scenario", "objective": 1.0})
    plaintext = {}
    for name, role in (
        ("viewer", "viewer"),
        ("alice", "operator"),
        ("bob", "operator"),
        ("admin", "admin"),
    ):
        plaintext[name] = keys.create(name, role)[1]  # type: ignore[arg-type]
    client = TestClient(create_app(services))
    return Api(client, services, clock, sim, plaintext, engine)
