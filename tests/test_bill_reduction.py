"""The DER-VET "DER for bill reduction" case (EPRI, BSD-3-Clause), planned as one year with
perfect foresight, against the tool's frozen monthly bill (scenarios/data/README.md).

Same inputs as DER-VET: 2017 hourly site load and PV (1,000 kW rated), the seasonal TOU
tariff with a 7.016 $/kW monthly facility demand charge, the battery DER-VET sized
(1,575 kW / 9,450 kWh, 91 % round trip applied on charging, as DER-VET does, SoC 0-100 %,
starting and ending at its 50 % target), exports credited at the import price, no
curtailment.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market.tariffs import TariffError, load_dervet_tariff
from optimizer.bill_model import (
    BillBattery,
    BillInputs,
    DemandCharge,
    monthly_bill,
    plan_bill,
)
from optimizer.report import InfeasibleInputError

DATA = Path(__file__).resolve().parents[1] / "scenarios" / "data"


def _case() -> tuple[BillInputs, BillBattery, pd.DataFrame]:
    df = pd.read_csv(DATA / "dervet_billreduction_2017_hourly_siteload_pv.csv")
    ends = pd.to_datetime(df["Datetime (he)"], format="%m/%d/%Y %H:%M")
    starts = pd.DatetimeIndex(ends - pd.Timedelta(hours=1))  # hour-ending -> interval start
    tariff = load_dervet_tariff(DATA / "dervet_billreduction_tariff.csv")
    assert tariff.uncovered(starts) == 0
    price = tariff.energy_price(starts)
    inputs = BillInputs(
        interval_h=1.0,
        load_kw=df["Site Load (kW)"].to_numpy(float),
        import_price_per_kwh=price,
        export_price_per_kwh=price,
        month=starts.month.to_numpy(),
        demand=[DemandCharge(p.name, p.value, p.covers(starts)) for p in tariff.demand],
        pv_kw=df.iloc[:, 3].to_numpy(float) * 1000.0,
    )
    battery = BillBattery(
        e_min_kwh=0.0,
        e_max_kwh=9450.0,
        e0_kwh=4725.0,
        e_end_kwh=4725.0,
        p_charge_max_kw=1575.0,
        p_discharge_max_kw=1575.0,
        eff_charge=0.91,
        eff_discharge=1.0,
    )
    expected = pd.read_csv(DATA / "dervet_billreduction_expected_simple_monthly_bill.csv")
    return inputs, battery, expected


def test_bill_reduction_year_matches_der_vet_month_by_month() -> None:
    inputs, battery, expected = _case()
    plan = plan_bill(inputs, battery)
    before = monthly_bill(inputs.load_kw, inputs)
    after = monthly_bill(plan.grid_kw, inputs)
    for month, row in enumerate(expected.itertuples(index=False), start=1):
        _, energy, energy0, _, demand, demand0 = row
        assert before[month]["energy"] == pytest.approx(energy0, rel=1e-6)
        assert before[month]["demand"] == pytest.approx(demand0, rel=1e-6)
        assert after[month]["demand"] == pytest.approx(demand, rel=1e-3), month
        # The year's optimum is degenerate in how energy cost falls between months of equal
        # prices (the SoC carries over); the total below is exact, a month within 0.2 %.
        assert after[month]["energy"] == pytest.approx(energy, rel=2e-3), month
    avoided = sum(before[m]["demand"] - after[m]["demand"] for m in before)
    change = sum(after[m]["energy"] - before[m]["energy"] for m in before)
    assert avoided == pytest.approx(173_252.97, rel=1e-3)
    assert change == pytest.approx(-293_762.04, rel=1e-3)
    # one billed peak per (charge, month), and each is the month's highest import
    assert len(plan.peaks_kw) == 12
    for (_, month), peak in plan.peaks_kw.items():
        sel = inputs.month == month
        assert peak == pytest.approx(max(0.0, float(np.max(plan.grid_kw[sel]))), abs=1e-3)


def test_limits_curtailment_and_several_demand_charges() -> None:
    """A day with a facility charge and an on-peak charge, an import limit below the load's
    peak, an export limit and a feed-in tariff below the import price."""
    t = np.arange(24)
    load = 100.0 + 80.0 * ((t >= 16) & (t < 20))  # 180 kW evening peak
    pv = np.clip(150.0 * np.sin((t - 6) / 12 * np.pi), 0, None)  # midday surplus
    price = np.where((t >= 16) & (t < 20), 0.40, 0.10)
    on_peak = (t >= 16) & (t < 20)
    inputs = BillInputs(
        interval_h=1.0,
        load_kw=load,
        import_price_per_kwh=price,
        export_price_per_kwh=np.full(24, 0.02),
        month=np.ones(24, dtype=np.int64),
        demand=[
            DemandCharge("facility", 5.0, np.ones(24, dtype=bool)),
            DemandCharge("on-peak", 15.0, on_peak),
        ],
        pv_kw=pv,
        curtail_pv=True,
        import_max_kw=150.0,
        export_max_kw=10.0,
    )
    battery = BillBattery(0.0, 200.0, 100.0, 100.0, 60.0, 60.0, 0.95, 0.95)
    plan = plan_bill(inputs, battery)
    assert plan.grid_kw.max() <= 150.0 + 1e-6
    assert -plan.grid_kw.max() <= 10.0 + 1e-6 and plan.grid_kw.min() >= -10.0 - 1e-6
    assert (plan.curtailed_kw <= pv + 1e-6).all()
    assert plan.peaks_kw[("on-peak", 1)] <= plan.peaks_kw[("facility", 1)] + 1e-6
    # the meter balances every hour
    net = load - pv + plan.curtailed_kw - plan.p_kw
    np.testing.assert_allclose(plan.grid_kw, net, atol=1e-6)
    # an import limit the battery cannot meet is refused with the reason
    tight = dataclasses.replace(inputs, import_max_kw=50.0)
    with pytest.raises(InfeasibleInputError, match="import limit"):
        plan_bill(tight, battery)


def test_export_above_import_price_is_refused() -> None:
    inputs = BillInputs(
        interval_h=1.0,
        load_kw=np.ones(4),
        import_price_per_kwh=np.full(4, 0.1),
        export_price_per_kwh=np.full(4, 0.2),
        month=np.ones(4, dtype=np.int64),
    )
    with pytest.raises(InfeasibleInputError, match="export price above"):
        plan_bill(inputs, BillBattery(0, 1, 0, 0, 1, 1, 1, 1))


def test_a_bad_tariff_row_names_the_row_and_column(tmp_path: Path) -> None:
    text = (DATA / "dervet_billreduction_tariff.csv").read_text().splitlines()
    text[3] = text[3].replace(",1,5,", ",1,13,", 1)
    bad = tmp_path / "tariff.csv"
    bad.write_text("\n".join(text) + "\n")
    with pytest.raises(TariffError, match=r"tariff.csv:4: column 'End Month': 13"):
        load_dervet_tariff(bad)


def test_cli_bill_prints_the_reference_and_refuses_a_bad_key(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    import yaml

    spec = (
        Path(__file__).resolve().parents[1] / "scenarios" / "bills" / "dervet-bill-reduction.yaml"
    )
    out = tmp_path / "bill.json"
    res = subprocess.run(
        [sys.executable, "-m", "vpp", "bill", str(spec), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "avoided demand charge: 173,252.97" in res.stdout
    totals = json.loads(out.read_text())["totals"]
    assert totals["energy_change"] == pytest.approx(-293_762.04, rel=1e-3)
    data = yaml.safe_load(spec.read_text())
    data["battery"]["soc_initial"] = 1.5
    data["tariff"]["dervet"] = str(spec.parent / data["tariff"]["dervet"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    res = subprocess.run(
        [sys.executable, "-m", "vpp", "bill", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2
    assert "battery.soc_initial" in res.stderr and "Traceback" not in res.stderr


def test_api_what_if_plans_the_reference_year_without_dispatching(tmp_path: Path) -> None:
    """POST /api/v1/schedules/what-if with the DER-VET case's year as JSON (load, PV and the
    tariff's billing periods inline): the same totals as the CLI, nothing stored."""
    from market.tariffs import load_dervet_tariff as load_tariff
    from tests.api_support import build_api, engine_for

    inputs, _, _ = _case()
    api = build_api(next(engine_for("sqlite", tmp_path, None)))  # type: ignore[arg-type]
    periods = [
        {
            "start_month": p.start_month,
            "end_month": p.end_month,
            "start_he": p.start_he,
            "end_he": p.end_he,
            "weekday": p.weekday,
            "value": p.value,
            "charge": p.charge,
            "name": p.name,
        }
        for p in load_tariff(DATA / "dervet_billreduction_tariff.csv").periods
    ]
    assert inputs.pv_kw is not None
    body = {
        "interval_start": "2017-01-01T00:00:00Z",  # the case's clock, read as UTC here
        "interval_s": 3600,
        "load_kw": inputs.load_kw.tolist(),
        "pv_kw": inputs.pv_kw.tolist(),
        "dervet_periods": periods,
        "battery": {
            "capacity_kwh": 9450,
            "p_charge_max_kw": 1575,
            "p_discharge_max_kw": 1575,
            "eff_charge": 0.91,
            "eff_discharge": 1.0,
            "soc_initial": 0.5,
        },
    }
    r = api.client.post("/api/v1/schedules/what-if", json=body, headers=api.h("alice"))
    assert r.status_code == 200, r.text[:500]
    totals = r.json()["totals"]
    assert totals["avoided_demand_charge"] == pytest.approx(173_252.97, rel=1e-3)
    assert totals["energy_change"] == pytest.approx(-293_762.04, rel=1e-3)
    assert len(r.json()["months"]) == 12
    assert api.client.get("/api/v1/schedules", headers=api.h("alice")).json()["count"] == 0
    # viewers may not run it; inconsistent bodies are 422 naming the problem
    assert (
        api.client.post("/api/v1/schedules/what-if", json=body, headers=api.h("viewer")).status_code
        == 403
    )
    both = {**body, "tariff": {"demand_charge_per_kw": 5.0}}
    r = api.client.post("/api/v1/schedules/what-if", json=both, headers=api.h("alice"))
    assert r.status_code == 422 and "exactly one of tariff and dervet_periods" in r.text
    tz = {**body, "dervet_periods": None, "tariff": {"demand_charge_per_kw": 5.0}}
    tz["tariff_timezone"] = "Europe/Paris"  # honoured or refused, never ignored
    r = api.client.post("/api/v1/schedules/what-if", json=tz, headers=api.h("alice"))
    assert r.status_code == 422 and "tariff carries its own timezone" in r.text
    short = {**body, "pv_kw": body["pv_kw"][:10]}  # type: ignore[index]
    r = api.client.post("/api/v1/schedules/what-if", json=short, headers=api.h("alice"))
    assert r.status_code == 422 and "pv_kw has 10 values" in r.text
    # a gap in the tariff is refused as `vpp bill` refuses it, not billed as free energy
    # (the API's own copy of the conversion used to skip the check)
    energy = [p for p in periods if p["charge"] == "energy"]
    gap = {**body, "dervet_periods": [p for p in periods if p is not energy[0]]}
    r = api.client.post("/api/v1/schedules/what-if", json=gap, headers=api.h("alice"))
    assert r.status_code == 422 and "intervals have no energy price" in r.text, r.text[:300]


def test_api_what_if_with_a_registry_tariff_returns_the_plan_per_interval(tmp_path: Path) -> None:
    from tests.api_support import build_api, engine_for

    api = build_api(next(engine_for("sqlite", tmp_path, None)))  # type: ignore[arg-type]
    load = [40.0] * 16 + [120.0] * 4 + [40.0] * 4
    body = {
        "interval_start": "2026-01-05T00:00:00Z",
        "interval_s": 3600,
        "load_kw": load,
        "tariff": {
            "demand_charge_per_kw": 12.0,
            "tou": [
                {"hours": [16, 17, 18, 19], "price_per_kwh": 0.30},
                {
                    "hours": [h for h in range(24) if h not in (16, 17, 18, 19)],
                    "price_per_kwh": 0.10,
                },
            ],
        },
        "battery": {"capacity_kwh": 200, "p_charge_max_kw": 50, "p_discharge_max_kw": 50},
        "include_intervals": True,
    }
    r = api.client.post("/api/v1/schedules/what-if", json=body, headers=api.h("alice"))
    assert r.status_code == 200, r.text
    data = r.json()
    grid = np.array(data["intervals"]["grid_kw"])
    assert grid.max() == pytest.approx(data["months"][0]["demand_after"] / 12.0, rel=1e-6)
    assert grid.max() < 120.0  # the evening peak is shaved
    assert data["totals"]["avoided_demand_charge"] > 0
