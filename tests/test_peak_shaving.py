"""Peak shaving: the model's plan against hand-checkable cases, and the schedules API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from optimizer.peak_model import PeakInputs, PeakShavingModel, SiteBattery
from optimizer.report import InfeasibleInputError
from tests.api_support import Api, build_api, engine_for
from vpp.bus.embedded import EmbeddedBus
from vpp.config import DatabaseSettings, DispatchSettings, PeakShavingSettings, TopicsSettings
from vpp.dispatch.service import DispatchService
from vpp.dispatch.targets import GroupTarget, dispatch_id
from vpp.peak_shaving import LoadProfiles, PeakShaver, tou_prices
from vpp.store import db, peak_schedules
from vpp.store.tables import audit_log
from vpp.telemetry.contract import encode_telemetry
from vpp.telemetry.decode import decode_batch
from vpp.twins.registry import SiteConfig, Tariff, TouPeriod
from vpp.twins.store import FleetStore

BATTERY = SiteBattery(
    e_min_kwh=1.0,
    e_max_kwh=9.5,
    p_charge_max_kw=5.0,
    p_discharge_max_kw=5.0,
    eff_charge=0.95,
    eff_discharge=0.95,
)


def inputs(load: list[float], **over: object) -> PeakInputs:
    n = len(load)
    base: dict[str, object] = {
        "interval_h": 1.0,
        "net_load_kw": np.array(load),
        "import_price_per_kwh": np.full(n, 0.10),
        "export_price_per_kwh": np.zeros(n),
        "demand_charge_per_kw": 15.0,
        "e0_kwh": 5.0,
    }
    base.update(over)
    return PeakInputs(**base)  # type: ignore[arg-type]


def test_shaves_a_short_peak_to_the_level_the_energy_allows() -> None:
    # 5 kWh usable above the floor... 4 kWh delivered = 4·0.95 after losses; the peak of
    # 10 kW lasts two hours, so the level L satisfies 2·(10 − L) = 4·0.95 → L = 8.1 kW
    # when the battery may recharge beforehand (it does: energy is cheap at 0.10).
    load = [3.0, 3.0, 3.0, 10.0, 10.0, 3.0]
    plan = PeakShavingModel(6).solve(BATTERY, inputs(load))
    assert plan.status == "optimal"
    assert plan.peak_without_kw == 10.0
    assert plan.peak_kw < 10.0
    assert np.all(plan.p_kw <= BATTERY.p_discharge_max_kw + 1e-6)
    assert np.all(plan.p_kw >= -BATTERY.p_charge_max_kw - 1e-6)
    assert np.all(plan.e_kwh >= BATTERY.e_min_kwh - 1e-6)
    assert np.all(plan.e_kwh <= BATTERY.e_max_kwh + 1e-6)
    assert plan.e_kwh[-1] >= 5.0 - 1e-6  # ends no lower than it started
    # The meter balances and the billed peak is the highest import.
    assert np.allclose(plan.grid_kw, np.array(load) - plan.p_kw, atol=1e-6)
    assert plan.peak_kw == pytest.approx(plan.grid_kw.max(), abs=1e-6)
    # Energy limited: (10 − L)·2 h drawn from store at 1/0.95, charged beforehand.
    level = plan.peak_kw
    assert (10 - level) * 2 / 0.95 <= (BATTERY.e_max_kwh - BATTERY.e_min_kwh) + 1e-6
    assert plan.cost < plan.cost_without


def test_no_demand_charge_work_below_the_months_peak() -> None:
    # The month already peaked at 12 kW: a 10 kW peak costs no demand charge, and flat
    # energy prices leave nothing to arbitrage, so the battery stays idle.
    load = [3.0, 10.0, 10.0, 3.0]
    plan = PeakShavingModel(4).solve(BATTERY, inputs(load, peak_so_far_kw=12.0))
    assert np.allclose(plan.p_kw, 0.0, atol=1e-6)
    assert plan.peak_kw == pytest.approx(12.0)
    assert plan.cost == pytest.approx(plan.cost_without)


def test_time_of_use_moves_energy_to_the_cheap_hours_without_exporting() -> None:
    load = [2.0, 2.0, 2.0, 2.0]
    price = np.array([0.05, 0.05, 0.40, 0.40])
    plan = PeakShavingModel(4).solve(
        BATTERY, inputs(load, import_price_per_kwh=price, demand_charge_per_kw=0.0)
    )
    assert plan.p_kw[:2].min() < 0  # charges while cheap
    assert plan.p_kw[2:].max() > 0  # discharges while dear
    assert np.all(plan.grid_kw >= -1e-6)  # never exports: the battery only serves the load
    assert np.all(plan.p_kw <= np.array(load) + 1e-6)


def test_model_is_reused_and_the_second_solve_sees_the_new_inputs() -> None:
    model = PeakShavingModel(4)
    first = model.solve(BATTERY, inputs([3.0, 9.0, 3.0, 3.0]))
    second = model.solve(BATTERY, inputs([3.0, 3.0, 3.0, 9.0], e0_kwh=3.0))
    fresh = PeakShavingModel(4).solve(BATTERY, inputs([3.0, 3.0, 3.0, 9.0], e0_kwh=3.0))
    assert first.p_kw[1] > 0 and second.p_kw[3] > 0
    assert second.cost == pytest.approx(fresh.cost, rel=1e-9)
    assert second.peak_kw == pytest.approx(fresh.peak_kw, rel=1e-9)


def test_contradictory_inputs_are_named() -> None:
    model = PeakShavingModel(3)
    with pytest.raises(InfeasibleInputError, match="initial energy 20 kWh outside"):
        model.solve(BATTERY, inputs([1.0, 1.0, 1.0], e0_kwh=20.0))
    with pytest.raises(InfeasibleInputError, match="net_load_kw has 2 values"):
        model.solve(BATTERY, inputs([1.0, 1.0]))
    with pytest.raises(InfeasibleInputError, match="export price above the import price"):
        model.solve(BATTERY, inputs([1.0, 1.0, 1.0], export_price_per_kwh=np.full(3, 0.5)))
    with pytest.raises(InfeasibleInputError, match=r"end energy 9\.5 kWh unreachable"):
        # 3 half-hours at 5 kW and 95 % store 7.125 kWh: 1 kWh cannot become 9.5 kWh
        model.solve(BATTERY, inputs([1.0, 1.0, 1.0], interval_h=0.5, e0_kwh=1.0, e_end_kwh=9.5))


def test_tou_prices_follow_local_time_across_daylight_saving() -> None:
    tariff = Tariff(
        timezone="America/Los_Angeles",
        tou=[TouPeriod(hours=[16, 17, 18, 19, 20], weekdays=[0, 1, 2, 3, 4], price_per_kwh=0.5)],
    )
    # 2026-03-06 (Fri, PST, UTC-8) and 2026-03-09 (Mon, PDT, UTC-7): 16:00 local each.
    before = datetime(2026, 3, 7, 0, tzinfo=UTC)  # Fri 16:00 PST
    after = datetime(2026, 3, 9, 23, tzinfo=UTC)  # Mon 16:00 PDT
    weekend = datetime(2026, 3, 8, 0, tzinfo=UTC)  # Sat 16:00
    assert tou_prices(tariff, [before, after, weekend]).tolist() == [0.5, 0.5, 0.0]


# -- API ------------------------------------------------------------------------------------

TARIFF = {
    "currency": "USD",
    "timezone": "UTC",
    "demand_charge_per_kw": 18.0,
    "tou": [{"hours": list(range(16, 21)), "price_per_kwh": 0.30}],
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    for engine in engine_for(request.param, tmp_path, request):
        yield build_api(engine)


def _body(api: Api, **over: object) -> dict[str, object]:
    start = (api.clock() + timedelta(hours=1)).replace(minute=0)
    body: dict[str, object] = {
        "site_id": "s0",
        "interval_start": start.isoformat(),
        "interval_s": 3600,
        "net_load_kw": [3.0, 3.0, 9.0, 9.0, 3.0, 3.0],
        "tariff": TARIFF,
    }
    body.update(over)
    return body


def test_schedule_is_planned_stored_audited_and_dispatched(api: Api) -> None:
    r = api.client.post("/api/v1/schedules", json=_body(api), headers=api.h("alice"))
    assert r.status_code == 201, r.text
    plan = r.json()
    assert plan["peak_without_kw"] == 9.0 and plan["peak_kw"] < 9.0
    assert plan["cost"] < plan["cost_without"]
    assert len(plan["p_kw"]) == 6 and max(plan["p_kw"]) > 0
    # One site target per interval, in dispatch, with the plan's setpoints.
    targets = sorted(
        (d.target for d in api.services.dispatch.deliveries.values()),
        key=lambda t: t.interval_start,
    )
    assert [t.group for t in targets] == ["s0"] * 6
    assert {t.source for t in targets} == {"peak_shaving"}
    assert [t.target_kw for t in targets] == pytest.approx(plan["p_kw"], abs=1e-3)
    # Readable by a viewer: the list (without arrays) and the full plan.
    listed = api.client.get("/api/v1/schedules", headers=api.h("viewer")).json()
    assert listed["count"] == 1 and "p_kw" not in listed["data"][0]
    one = api.client.get(f"/api/v1/schedules/{plan['schedule_id']}", headers=api.h("viewer"))
    assert one.json()["p_kw"] == plan["p_kw"]
    with api.engine.connect() as conn:
        audited = conn.execute(
            sa.select(audit_log.c.actor, audit_log.c.resource_type, audit_log.c.resource_id)
        ).all()
    assert [a.actor.split()[0] for a in audited if a.resource_id == plan["schedule_id"]] == [
        "alice"
    ]
    assert plan["created_by"].startswith("alice")


def test_a_replan_replaces_its_own_targets_but_never_a_manual_one(api: Api) -> None:
    first = api.client.post("/api/v1/schedules", json=_body(api), headers=api.h("alice"))
    assert first.status_code == 201
    replan = _body(api, net_load_kw=[3.0, 3.0, 3.0, 3.0, 9.5, 9.5], peak_so_far_kw=2.0)
    second = api.client.post("/api/v1/schedules", json=replan, headers=api.h("alice"))
    assert second.status_code == 201, second.text
    targets = sorted(
        (d.target for d in api.services.dispatch.deliveries.values()),
        key=lambda t: t.interval_start,
    )
    assert len(targets) == 6
    assert [t.target_kw for t in targets] == pytest.approx(second.json()["p_kw"], abs=1e-3)
    # A manual target for the site blocks a plan over that interval.
    start = datetime.fromisoformat(str(replan["interval_start"])) + timedelta(hours=6)
    manual = {
        "group": "s0",
        "interval_start": start.isoformat(),
        "duration_s": 3600,
        "target_kw": 1,
    }
    assert (
        api.client.post("/api/v1/dispatch/targets", json=manual, headers=api.h("alice")).status_code
        == 201
    )
    later = _body(api, interval_start=start.isoformat())
    blocked = api.client.post("/api/v1/schedules", json=later, headers=api.h("alice"))
    assert blocked.status_code == 409 and "manual" in blocked.json()["detail"]
    assert api.client.get("/api/v1/schedules", headers=api.h("viewer")).json()["count"] == 2


def test_schedule_uses_the_registry_tariff_and_the_twin_soc(api: Api) -> None:
    _, store = api.services.fleet()
    assert store is not None
    store.register(
        SiteConfig(
            site_id="s1",
            group="north",
            capacity_kwh=10,
            p_charge_max_kw=5,
            p_discharge_max_kw=5,
            tariff=Tariff.model_validate(TARIFF),
            site_load_max_kw=100,
        )
    )
    body = _body(api, site_id="s1")
    del body["tariff"]
    r = api.client.post("/api/v1/schedules", json=body, headers=api.h("bob"))
    assert r.status_code == 201, r.text
    assert r.json()["demand_charge_per_kw"] == 18.0
    no_tariff = _body(api, site_id="s2")
    del no_tariff["tariff"]
    r = api.client.post("/api/v1/schedules", json=no_tariff, headers=api.h("bob"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tariff"]


def test_schedule_refusals(api: Api) -> None:
    def post(who: str = "alice", **over: object) -> int:
        raw = json.dumps(_body(api, **over))  # allows Infinity, as a careless client sends it
        headers = {**api.h(who), "Content-Type": "application/json"}
        return api.client.post("/api/v1/schedules", content=raw, headers=headers).status_code

    assert api.client.post("/api/v1/schedules", json=_body(api)).status_code == 401
    assert post("viewer") == 403
    assert post(site_id="nope") == 404
    assert (
        post(interval_start=(api.clock() - timedelta(hours=3)).replace(minute=0).isoformat()) == 409
    )
    assert (
        post(interval_start=(api.clock() + timedelta(days=8)).replace(minute=0).isoformat()) == 409
    )
    assert post(interval_start=(api.clock() + timedelta(minutes=7)).isoformat()) == 422  # unaligned
    assert post(net_load_kw=[]) == 422
    assert post(net_load_kw=[1.0, float("inf")]) == 422
    assert post(soc=1.5) == 422
    assert post(interval_s=30) == 422
    assert post(unknown=1) == 422
    # Nothing was stored or dispatched by any of them.
    assert api.client.get("/api/v1/schedules", headers=api.h("viewer")).json()["count"] == 0
    assert not api.services.dispatch.deliveries


# -- unattended re-planning ---------------------------------------------------------------

DAY0 = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday


def _fleet() -> FleetStore:
    store = FleetStore()
    tariff = Tariff.model_validate(TARIFF)
    for i, tar in enumerate([tariff, tariff, None]):
        store.register(
            SiteConfig(
                site_id=f"p{i}",
                group="g",
                capacity_kwh=40,
                p_charge_max_kw=10,
                p_discharge_max_kw=10,
                tariff=tar,
                site_load_max_kw=100 if tar else None,
            )
        )
    return store


def _read(store: FleetStore, at: datetime, seq: int, load: dict[str, float | None]) -> None:
    raw = [
        encode_telemetry(site, at, seq, 0.5, 1.0, site_load_kw=kw, pv_kw=2.0 if kw else None)
        for site, kw in load.items()
    ]
    cols, _ = decode_batch(raw)
    store.fold(cols, at.timestamp())
    store.evaluate(at.timestamp())


def test_load_profiles_learn_time_of_day_and_track_the_months_peak() -> None:
    store = _fleet()
    profiles = LoadProfiles(interval_s=3600, weight=0.5)
    at = DAY0 + timedelta(hours=17, minutes=10)
    _read(store, at, 1, {"p0": 12.0, "p1": None, "p2": 5.0})
    assert profiles.sample(store, at.timestamp()) == 2  # p1 meters no load
    _read(store, at + timedelta(minutes=5), 2, {"p0": 16.0, "p1": None, "p2": 5.0})
    profiles.sample(store, (at + timedelta(minutes=5)).timestamp())
    p0 = store.index["p0"]
    # slot 17: first sample 10 kW (12 − 2 PV), then halfway to 14 kW
    assert profiles.mean_kw[p0, 17] == pytest.approx(12.0)
    # the peak import is load − PV − battery (1 kW discharging)
    assert profiles.peak_kw[p0] == pytest.approx(13.0)
    start = DAY0 + timedelta(hours=16)
    forecast = profiles.forecast(p0, start, 3)
    assert forecast is not None
    assert forecast.tolist() == [14.0, 12.0, 14.0]  # unsampled slots take the latest reading
    assert profiles.forecast(store.index["p1"], start, 3) is None
    # A new month starts from zero.
    december = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    _read(store, december, 3, {"p0": 4.0, "p1": None, "p2": 5.0})
    profiles.sample(store, december.timestamp())
    assert profiles.peak_kw[p0] == pytest.approx(1.0)


@pytest.fixture
def shaver(tmp_path: Path) -> Iterator[tuple[PeakShaver, FleetStore, DispatchService, list[float]]]:
    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/p.db"))
    db.upgrade(engine)
    store = _fleet()
    now = [(DAY0 + timedelta(hours=15, minutes=44)).timestamp()]
    dispatch = DispatchService(
        DispatchSettings(),
        EmbeddedBus(),
        TopicsSettings(),
        db=engine,
        store=lambda: store,
        clock=lambda: now[0],
    )
    settings = PeakShavingSettings(interval_s=900, horizon_intervals=16)
    yield (
        PeakShaver(settings, engine, lambda: store, dispatch, clock=lambda: now[0]),
        store,
        (dispatch),
        now,
    )
    engine.dispose()


async def test_replan_plans_tariffed_sites_and_hands_dispatch_the_next_intervals(
    shaver: tuple[PeakShaver, FleetStore, DispatchService, list[float]],
) -> None:
    peak, store, dispatch, now = shaver
    # Last month the 16:00 slot saw 30 kW; today it is 12 kW at 15:43.
    today = now[0]
    now[0] = datetime(2026, 10, 31, 16, 10, tzinfo=UTC).timestamp()
    _read(store, datetime.fromtimestamp(now[0], UTC), 1, {"p0": 30.0, "p1": None, "p2": 5.0})
    await peak.sample()
    now[0] = today
    _read(store, datetime.fromtimestamp(today - 60, UTC), 2, {"p0": 12.0, "p1": None, "p2": 5.0})
    await peak.sample()
    assert await peak.replan() == 1
    assert peak.skipped == {"p1": "no fresh telemetry"}  # tariffed but no metered load
    targets = sorted(
        (d.target for d in dispatch.deliveries.values()), key=lambda t: t.interval_start
    )
    first = DAY0 + timedelta(hours=15, minutes=45)
    assert [(t.group, t.interval_start) for t in targets] == [
        ("p0", first),
        ("p0", first + timedelta(minutes=15)),
    ]
    assert {t.source for t in targets} == {"peak_shaving"}
    rows, count = peak_schedules.list_schedules(peak.db)
    assert count == 1 and rows[0]["created_by"] == "engine (system)" and rows[0]["intervals"] == 16
    # The forecast peak (28 kW net at 16:00) is cut by the battery's full 10 kW.
    stored = peak_schedules.get(peak.db, rows[0]["schedule_id"])
    assert stored is not None
    assert stored["net_load_kw"][:2] == [10.0, 28.0]
    assert stored["p_kw"][1] == pytest.approx(10.0)
    assert stored["peak_without_kw"] == 28.0 and stored["peak_kw"] == pytest.approx(18.0)
    assert np.abs(np.array(stored["p_kw"])).max() <= 10 + 1e-6
    assert targets[1].target_kw == pytest.approx(10.0)
    # A manual target in the way: that site is not re-planned (and nothing is stored).
    later = first + timedelta(minutes=30)
    manual = GroupTarget(
        dispatch_id=dispatch_id("p0", later),
        group="p0",
        interval_start=later,
        interval_end=later + timedelta(minutes=15),
        target_kw=0.0,
        reserve_up_kw=0,
        reserve_down_kw=0,
        source="manual",
    )
    dispatch.add_targets([manual])
    now[0] += 15 * 60
    _read(store, datetime.fromtimestamp(now[0] - 60, UTC), 3, {"p0": 12.0, "p1": None, "p2": 5.0})
    await peak.sample()
    assert await peak.replan() == 0
    assert peak.skipped["p0"] == "manual target in the way"
    assert peak_schedules.list_schedules(peak.db)[1] == 1
    assert "1 sites planned" in peak.status()["line"]


def test_seasonal_tou_periods_match_by_month_weekday_and_hour() -> None:
    from vpp.peak_shaving import tou_prices
    from vpp.twins.registry import Tariff, TouPeriod

    tariff = Tariff(
        timezone="America/Los_Angeles",
        tou=[
            TouPeriod(
                hours=[16, 17], weekdays=[0, 1, 2, 3, 4], months=[6, 7, 8, 9], price_per_kwh=0.5
            ),
            TouPeriod(hours=[16, 17], months=[1, 2, 3, 4, 5, 10, 11, 12], price_per_kwh=0.2),
            TouPeriod(  # off-peak: every other hour of the year, one period each
                hours=[h for h in range(24) if h not in (16, 17)], price_per_kwh=0.1
            ),
            TouPeriod(hours=[16, 17], weekdays=[5, 6], months=[6, 7, 8, 9], price_per_kwh=0.1),
        ],
    )
    starts = [
        datetime(2026, 7, 15, 23, tzinfo=UTC),  # Wed 16:00 PDT, summer on-peak
        datetime(2026, 7, 18, 23, tzinfo=UTC),  # Sat 16:00 PDT: summer weekend, off-peak
        datetime(2026, 1, 14, 0, tzinfo=UTC),  # Tue 16:00 PST, winter peak
        datetime(2026, 1, 14, 3, tzinfo=UTC),  # 19:00 PST
    ]
    assert tou_prices(tariff, starts).tolist() == [0.5, 0.1, 0.2, 0.1]


def test_a_tariff_whose_periods_overlap_is_refused_naming_the_hour() -> None:
    """A catch-all period under a peak one meant "first match wins" in the registry and
    "both add up" in a DER-VET file: one meaning now, so an overlap is refused."""
    from pydantic import ValidationError

    from vpp.twins.registry import Tariff, TouPeriod

    with pytest.raises(ValidationError, match=r"tou\[0\] and tou\[1\] both price month 1, "):
        Tariff(
            tou=[
                TouPeriod(hours=[16, 17], weekdays=[0, 1, 2, 3, 4], price_per_kwh=0.5),
                TouPeriod(hours=list(range(24)), price_per_kwh=0.1),
            ]
        )


def test_the_shipped_ci_tariff_prices_every_hour_as_the_dervet_file_does() -> None:
    """One meaning for both formats: the C&I backtest's registry tariff (the DER-VET
    bill-reduction case's winter tariff) and the DER-VET file give the same price every
    hour of January to May, weekdays and weekends."""
    from pathlib import Path

    import pandas as pd

    from market.tariffs import load_dervet_tariff
    from vpp.peak_shaving import tou_prices
    from vpp.scenario import load_scenario

    root = Path(__file__).resolve().parents[1] / "scenarios"
    sc = load_scenario(root / "us-rt-2019-q1-ci-backtest.yaml")
    registry = next(f.tariff for f in sc.fleet if f.tariff is not None)
    assert registry is not None
    dervet = load_dervet_tariff(root / "data" / "dervet_billreduction_tariff.csv")
    starts = pd.date_range("2019-01-01", "2019-06-01", freq="h", tz="Etc/GMT+8", inclusive="left")
    ours = tou_prices(registry, [t.to_pydatetime() for t in starts])
    theirs = dervet.energy_price_checked(starts.tz_localize(None))
    assert (ours == theirs).all(), starts[ours != theirs][:3]
    assert registry.demand_charge_per_kw == dervet.demand[0].value
