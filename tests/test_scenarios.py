"""Scenario files: validation errors with key paths, shipped scenarios, `vpp optimize`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vpp.optimize import optimize
from vpp.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"


def week_scenario(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((SCENARIOS / "de-2019-arbitrage.yaml").read_text())
    data["prices"]["file"] = str(SCENARIOS / "data" / "entsoe_dayahead_2019_de_dk1.csv")
    data["prices"]["start"] = "2019-01-14T00:00:00Z"
    data["prices"]["end"] = "2019-01-21T00:00:00Z"
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for key in path:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
    out = tmp_path / "week.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenarios_validate_and_read_only_repository_data(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.prices.file.is_file()
    assert SCENARIOS in sc.prices.file.parents
    assert "shared" not in sc.prices.file.parts


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fleet__0__capacity_kwh": -5}, "fleet.0.capacity_kwh: Input should be greater than 0"),
        ({"market": "nordpool"}, "market: unknown market 'nordpool'"),
        ({"prices__unit": "EUR/GWh"}, "prices.unit: unknown energy price unit 'EUR/GWh'"),
        ({"prices__unit": "EUR/MW/h"}, "prices.unit: unknown energy price unit 'EUR/MW/h'"),
        ({"strategy__mip_rel_gap": 0.5}, "strategy.mip_rel_gap"),
        ({"strategy__vom_per_mwh": -1}, "strategy.vom_per_mwh"),
        ({"fleet__0__soc_initial": 1.5}, "fleet.0.soc_initial"),
        ({"strategy__products": ["energy", "reg_up"]}, "need reserve_prices columns"),
        ({"strategy__horizon": "tomorrow"}, "strategy.horizon"),
        ({"fleet__0__colour": "red"}, "fleet.0.colour: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario(week_scenario(tmp_path, **changes))
    assert message in str(err.value)


def test_relative_file_resolves_against_the_scenario_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "p.csv").write_text(
        (SCENARIOS / "data" / "entsoe_dayahead_2019_de_dk1.csv").read_text()
    )
    path = week_scenario(tmp_path, prices__file="d/p.csv")
    assert load_scenario(path).prices.file == (tmp_path / "d" / "p.csv").resolve()


def test_optimize_a_week_reports_revenue_cycles_and_the_solve(tmp_path: Path) -> None:
    result = optimize(load_scenario(week_scenario(tmp_path))).to_dict()
    assert result["intervals"] == 168
    assert result["net_revenue"] == pytest.approx(result["revenue"]["energy_da"])
    assert result["net_revenue"] > 0
    group = result["groups"][0]
    assert group["full_cycles"] > 1
    assert group["solve"]["status"] == "optimal"


def test_variable_om_is_charged_on_discharge_only_and_the_optimum_is_exact(
    tmp_path: Path,
) -> None:
    """``strategy.vom_per_mwh`` and ``strategy.mip_rel_gap`` are honoured: the week's optimum
    with 8 EUR/MWh of variable O&M on discharge (and 2 of degradation on throughput) equals
    the independent NumPy MILP to 1e-6, and the O&M line is 8 x the discharged MWh."""
    from benchmarks.milp_reference import ReferenceBattery, solve_reference
    from vpp.scenario import load_prices

    path = week_scenario(
        tmp_path,
        strategy__vom_per_mwh=8.0,
        strategy__degradation_per_mwh=2.0,
        strategy__mip_rel_gap=1e-9,
    )
    sc = load_scenario(path)
    result = optimize(sc)
    group = result.groups[0]
    assert group.variable_om == pytest.approx(8.0 * group.discharged_mwh, rel=1e-9)
    f = sc.fleet[0]
    usable_kwh = f.count * f.capacity_kwh
    b = ReferenceBattery(
        e_min_mwh=usable_kwh * f.soc_min / 1000,
        e_max_mwh=usable_kwh * f.soc_max / 1000,
        e0_mwh=usable_kwh * f.soc_initial / 1000,
        p_dis_max_mw=f.count * f.p_discharge_max_kw / 1000,
        p_ch_max_mw=f.count * f.p_charge_max_kw / 1000,
        eta_c=f.eff_charge,
        eta_d=f.eff_discharge,
    )
    window = load_prices(sc)[0].values
    ref = solve_reference(b, window, 1.0, degradation_per_mwh=2.0, vom_per_mwh=8.0)
    assert result.net_revenue == pytest.approx(ref.objective, rel=1e-6)
    plain = optimize(load_scenario(week_scenario(tmp_path, strategy__degradation_per_mwh=2.0)))
    assert plain.groups[0].discharged_mwh > group.discharged_mwh  # O&M trims thin spreads
    assert result.to_dict()["variable_om"] == pytest.approx(group.variable_om)


def test_capacity_prices_per_kw_per_hour_convert_to_per_mw(tmp_path: Path) -> None:
    from market.prices import load_price_csv

    csv = tmp_path / "reg.csv"
    csv.write_text("t,up\n2019-01-01T00:00:00Z,0.012\n2019-01-01T01:00:00Z,0.004\n")
    kw = dict(time_column="t", column="up", interval="start", timezone="UTC")
    assert load_price_csv(csv, unit="USD/kW/h", **kw).values.tolist() == pytest.approx([12.0, 4.0])


def test_rolling_windows_stay_close_to_the_single_model(tmp_path: Path) -> None:
    from datetime import timedelta

    sc = load_scenario(week_scenario(tmp_path))
    whole = optimize(sc).net_revenue
    rolled = optimize(sc, max_intervals=48, window=timedelta(days=2), overlap=timedelta(days=1))
    assert rolled.groups[0].windows == 6
    assert rolled.net_revenue <= whole + 1e-6
    assert rolled.net_revenue >= 0.97 * whole


def test_cli_optimize_writes_json_with_net_revenue(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    res = subprocess.run(
        [sys.executable, "-m", "vpp", "optimize", str(week_scenario(tmp_path)), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "net revenue" in res.stdout
    assert "-0.00" not in res.stdout  # no degradation cost printed as a negative zero
    assert json.loads(out.read_text())["net_revenue"] > 0


def test_cli_optimize_bad_scenario_exits_2_with_the_path(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vpp",
            "optimize",
            str(week_scenario(tmp_path, fleet__0__capacity_kwh=0)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "fleet.0.capacity_kwh" in res.stderr


def test_prices_in_another_currency_than_the_market_are_refused(tmp_path: Path) -> None:
    """EUR prices on caiso were optimized and reported as USD."""
    res = subprocess.run(
        [sys.executable, "-m", "vpp", "optimize", str(week_scenario(tmp_path, market="caiso"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    text = " ".join(res.stderr.split())
    assert "prices.unit 'EUR/MWh' is in EUR, but market 'caiso' settles in USD" in text
    assert "Traceback" not in res.stderr
