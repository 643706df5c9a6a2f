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
        ({"prices__unit": "EUR/GWh"}, "prices.unit: unknown unit 'EUR/GWh'"),
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
