"""`vpp backtest`: the engine's strategies replayed in simulated time on real prices.

Each test builds a short scenario from the shipped data (scenarios/data) and runs the real
path: strategies, simulated market with gate closure, dispatch core, simulated fleet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from vpp.backtest import pool
from vpp.backtest.report import write_outputs
from vpp.backtest.runner import prepare, run_backtest, run_strategy, without_timing
from vpp.optimize import optimize
from vpp.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
DATA = SCENARIOS / "data"
FORECASTS = ["persistence_day", "persistence_week", "seasonal", "lear", "learned", "scenarios"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def scenario_file(tmp_path: Path, base: str, name: str = "s.yaml", **changes: Any) -> Path:
    """A copy of a shipped scenario with absolute data paths and dotted-key changes."""
    data = yaml.safe_load((SCENARIOS / base).read_text())
    data["prices"]["file"] = str(DATA / Path(data["prices"]["file"]).name)
    if "features" in data:
        data["features"]["file"] = str(DATA / Path(data["features"]["file"]).name)
    for f in data["fleet"]:
        if "load" in f:
            f["load"]["file"] = str(DATA / Path(f["load"]["file"]).name)
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for key in path:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[last] = value
    out = tmp_path / name
    out.write_text(yaml.safe_dump(data))
    return out


def bound_on_windows(path: Path, start: datetime, end: datetime) -> float:
    """`vpp optimize` on the backtest's decision windows over the same period."""
    sc = load_scenario(path)
    sc = sc.model_copy(
        update={
            "prices": sc.prices.model_copy(update={"start": start, "end": end}),
            "strategy": sc.strategy.model_copy(update={"forecast": "perfect"}),
        }
    )
    return optimize(sc, check=False).net_revenue


# -- perfect foresight is the bound --------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "start", "end", "changes"),
    [
        # day-ahead, one decision per trading day; efficiencies of 1 keep the schedule on the
        # market's 0.1 MW grid, so market rules do not bind and the two must agree exactly
        (
            "de-2019-backtest.yaml",
            utc(2019, 3, 1),
            utc(2019, 3, 15),
            {
                "fleet__0__eff_charge": 1.0,
                "fleet__0__eff_discharge": 1.0,
                "fleet__0__capacity_kwh": 2000,
            },
        ),
        # real time: hourly decisions over a 24 h horizon, 75 minutes ahead of the gate
        # (a SoC window of whole 5-minute steps at full power, on the 1 kW grid)
        (
            "us-rt-2019-q1-ci-backtest.yaml",
            utc(2019, 2, 1, 8),
            utc(2019, 2, 3, 8),
            {
                "fleet__0__eff_charge": 1.0,
                "fleet__0__eff_discharge": 1.0,
                "fleet__0__soc_min": 0.0,
                "fleet__0__soc_max": 1.0,
            },
        ),
    ],
    ids=["day-ahead", "real-time"],
)
def test_perfect_equals_optimize_on_the_same_windows(
    tmp_path: Path, base: str, start: datetime, end: datetime, changes: dict[str, Any]
) -> None:
    path = scenario_file(tmp_path, base, strategy__forecast=["perfect"], **changes)
    sc = load_scenario(path)
    if base.startswith("us-rt"):  # the market battery only: no peak-shaving site
        sc = sc.model_copy(update={"fleet": sc.fleet[:1]})
        path.write_text(yaml.safe_dump(sc.model_dump(mode="json", exclude_unset=True)))
    result = run_strategy(prepare(load_scenario(path), start=start, end=end), "perfect")
    windows = bound_on_windows(path, start, end)
    assert windows > 0
    # equal up to what was trimmed to keep awards deliverable on the quantity step (one
    # 1 kW step for five minutes in the real-time case)
    assert result.summary["trimmed_mwh"] <= 1e-4
    assert result.summary["net"] == pytest.approx(windows, rel=1e-5)
    assert result.summary["delivery"]["accuracy"] == pytest.approx(1.0, abs=1e-9)


def test_no_strategy_beats_perfect_foresight(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "de-2019-backtest.yaml")
    sc = load_scenario(path)
    result = run_backtest(
        prepare(sc, start=utc(2019, 4, 1), end=utc(2019, 4, 22)), ["perfect", *FORECASTS], jobs=2
    )
    bound = result.bound["net"]
    nets = {s.name: s.summary["net"] for s in result.strategies}
    assert bound > 0
    for name, net in nets.items():
        assert net <= bound + 1e-6, (name, net, bound)
        assert net <= nets["perfect"] + 1e-6, (name, net, nets["perfect"])
        assert result.strategies[0].summary["bids"]["refused"] == 0
    assert nets["seasonal"] > 0.3 * bound  # a forecast strategy earns real money


@pytest.mark.slow
def test_no_perfect_award_in_a_year_of_de_is_short_for_lack_of_energy(tmp_path: Path) -> None:
    """Plans are re-checked on the market's 0.1 MW step before they are bid: a year of
    perfect-foresight awards on the shipped DE scenario is delivered in full. Without the
    re-check (measured by switching it off), 260 awards deviate, 0.75 MWh in the year: a
    floored discharge leaves more stored than planned and a later full charge does not fit."""
    sc = load_scenario(scenario_file(tmp_path, "de-2019-backtest.yaml"))
    result = run_strategy(prepare(sc), "perfect")
    table = result.intervals
    assert float(table["shortfall_mwh"].max()) <= 1e-9
    assert float(table["excess_mwh"].max()) <= 1e-9
    assert result.summary["delivery"]["accuracy"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("terminal", ["free", "value", "initial", 0.5])
def test_the_bound_does_not_move_with_a_strategy_setting(tmp_path: Path, terminal: Any) -> None:
    """The perfect-foresight bound is one number per period and fleet: the terminal rule a
    strategy uses (which moved the DK1 bound from 860.17 to 775.75 or 823.82) does not
    change it."""
    from vpp.backtest.runner import bound

    start, end = utc(2019, 6, 1), utc(2019, 6, 8)
    nets = []
    for rule in ("free", terminal):
        path = scenario_file(
            tmp_path,
            "dk1-2019-home-batteries-backtest.yaml",
            name=f"dk1-{rule}.yaml",
            strategy__terminal=rule,
            fleet__0__count=10,
        )
        nets.append(bound(prepare(load_scenario(path), start=start, end=end))[0]["net"])
    assert nets[0] > 0
    assert nets[1] == pytest.approx(nets[0], rel=1e-9)


# -- no look-ahead ------------------------------------------------------------------------


def replay(inputs: Any, name: Any, poison_after: datetime | None) -> Any:
    """One strategy's replay with its bids recorded (a worker's part: module level)."""
    return run_strategy(inputs, name, poison_after=poison_after, record_bids=True)


def replays(parts: list[tuple[Any, Any, datetime | None]]) -> list[Any]:
    """Several replays at once, in two worker processes (the suite's second core)."""
    return pool.run_parts(replay, parts, 2)


@pytest.mark.parametrize("name", FORECASTS)
def test_bids_do_not_depend_on_prices_published_after_the_decision(
    tmp_path: Path, name: str
) -> None:
    """Every price published after a decision is replaced with garbage: that decision's
    bids (and every earlier one's) are byte-identical. Poisoning from a day earlier
    changes them, so the comparison can fail."""
    sc = load_scenario(scenario_file(tmp_path, "de-2019-backtest.yaml"))
    inputs = prepare(sc, start=utc(2019, 3, 1), end=utc(2019, 3, 8))
    k = 4
    at = inputs.decisions[k].at
    clean, poisoned, earlier = replays(
        [(inputs, name, None), (inputs, name, at), (inputs, name, inputs.decisions[k - 2].at)]
    )
    assert clean.bids_by_decision[k]  # it did bid
    for j in range(k + 1):
        assert poisoned.bids_by_decision[j] == clean.bids_by_decision[j], j
    assert earlier.bids_by_decision[k] != clean.bids_by_decision[k]


@pytest.mark.parametrize("name", ["lear", "learned", "scenarios"])
def test_bids_do_not_depend_on_features_published_after_the_decision(
    tmp_path: Path, name: str
) -> None:
    """The features alone: every load, wind and solar value published after a decision
    replaced with noise leaves that decision's bids byte-identical; noise from two
    decisions earlier changes them (the forecaster does read its features)."""
    from dataclasses import replace

    sc = load_scenario(scenario_file(tmp_path, "de-2019-backtest.yaml"))
    inputs = prepare(sc, start=utc(2019, 3, 1), end=utc(2019, 3, 8))
    assert inputs.features is not None and inputs.features.names == ("load", "solar", "wind")
    k = 4
    at = inputs.decisions[k].at
    late = replace(inputs, features=inputs.features.poisoned_after(at))
    early = replace(inputs, features=inputs.features.poisoned_after(inputs.decisions[k - 2].at))
    clean, poisoned, earlier = replays(
        [(inputs, name, None), (late, name, None), (early, name, None)]
    )
    for j in range(k + 1):
        assert poisoned.bids_by_decision[j] == clean.bids_by_decision[j], j
    assert (
        poisoned.summary["forecast"]["feature_fills"] == clean.summary["forecast"]["feature_fills"]
    )
    assert earlier.bids_by_decision[k] != clean.bids_by_decision[k]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured: anchored curves on LEAR earn less than LEAR's own schedule "
    "(DE 2019: 85.15 % vs 85.41 % of the market-feasible optimum; 1-15 March: 476 vs 498 "
    "EUR); the curves' options lose where the forecast's quantiles are off. Strict: this "
    "starts failing the day the curves earn their keep, and the default can then move",
)
def test_the_curve_strategy_earns_at_least_the_schedule_of_its_own_forecast(
    tmp_path: Path,
) -> None:
    sc = load_scenario(scenario_file(tmp_path, "de-2019-backtest.yaml"))
    inputs = prepare(sc, start=utc(2019, 3, 1), end=utc(2019, 3, 15))
    curves = run_strategy(inputs, "scenarios").summary["net"]
    schedule = run_strategy(inputs, sc.strategy.base_forecast).summary["net"]
    assert curves >= schedule - 1e-6


# -- reproducibility, faults ----------------------------------------------------------------


def small_fleet(tmp_path: Path, **changes: Any) -> Path:
    changes.setdefault("strategy__forecast", ["scenarios"])
    return scenario_file(
        tmp_path,
        "dk1-2019-home-batteries-backtest.yaml",
        name=f"dk1-{len(list(tmp_path.iterdir()))}.yaml",
        fleet__0__count=40,
        **changes,
    )


def test_the_same_seed_gives_the_same_summary(tmp_path: Path) -> None:
    path = small_fleet(tmp_path)
    outs = []
    for run in ("a", "b"):
        inputs = prepare(load_scenario(path), start=utc(2019, 3, 4), end=utc(2019, 3, 7))
        paths = write_outputs(run_backtest(inputs, ["scenarios"]), tmp_path / run)
        summary = json.loads(paths["summary"].read_text())
        outs.append(json.dumps(without_timing(summary), sort_keys=True).encode())
        assert summary["strategies"]["scenarios"]["timing"]["wall_s"] > 0
    assert outs[0] == outs[1]
    other = prepare(
        load_scenario(small_fleet(tmp_path, backtest__seed=7)),
        start=utc(2019, 3, 4),
        end=utc(2019, 3, 7),
    )
    third = json.dumps(without_timing(run_backtest(other, ["scenarios"]).summary()), sort_keys=True)
    assert third.encode() != outs[0]  # the seed drives the faults


def test_parallel_strategies_equal_the_sequential_run(tmp_path: Path) -> None:
    """--jobs: the bound and each strategy in worker processes give the sequential run's
    result byte for byte (faults seeded, several strategies, the progress of each)."""
    path = small_fleet(tmp_path, strategy__forecast=["perfect", "seasonal", "scenarios"])
    inputs = prepare(load_scenario(path), start=utc(2019, 3, 4), end=utc(2019, 3, 6))
    names = list(load_scenario(path).strategy.names)
    seen: dict[str, tuple[int, int]] = {}

    def progress(name: str, done: int, total: int) -> None:
        seen[name] = (done, total)

    runs = [run_backtest(inputs, names), run_backtest(inputs, names, jobs=2, progress=progress)]
    summaries = [json.dumps(without_timing(r.summary()), sort_keys=True) for r in runs]
    assert summaries[0] == summaries[1]
    frames = [pd.concat([s.intervals for s in r.strategies]).to_csv().encode() for r in runs]
    assert frames[0] == frames[1]
    assert [s.name for s in runs[1].strategies] == names
    assert seen == {n: (len(inputs.decisions), len(inputs.decisions)) for n in names}


def test_parallel_lear_equals_the_sequential_run(tmp_path: Path) -> None:
    """LEAR's LASSO sums through BLAS: a worker's one thread and this process's several
    summed in another order and the last bits differed (the DE year's summaries did), so
    both run one thread."""
    sc = load_scenario(scenario_file(tmp_path, "de-2019-backtest.yaml"))
    inputs = prepare(sc, start=utc(2019, 3, 4), end=utc(2019, 3, 8))
    names: list[Any] = ["lear", "perfect"]
    runs = [run_backtest(inputs, names), run_backtest(inputs, names, jobs=2)]
    summaries = [json.dumps(without_timing(r.summary()), sort_keys=True) for r in runs]
    assert summaries[0] == summaries[1]
    assert runs[0].strategies[0].summary["forecast"].get("fallbacks") in (None, {})


def test_hourly_history_replays_as_sdac_quarter_hours(tmp_path: Path) -> None:
    """``prices.replay_interval: PT15M``: the 2019 hourly DE prices replayed in today's
    SDAC design — quarter-hour products (92 on the DST day), each hour's price held over its
    quarters, imbalance at one price — against the hourly design they cleared in. Held
    prices add no shape, so the learned forecasts are the hourly ones held; the finer
    schedule can only gain on the same prices."""
    period = {"start": utc(2019, 3, 30), "end": utc(2019, 4, 2)}  # DST begins on the 31st
    hourly = prepare(load_scenario(scenario_file(tmp_path, "de-2019-backtest.yaml")), **period)
    quarters = prepare(
        load_scenario(
            scenario_file(
                tmp_path, "de-2019-backtest.yaml", name="q.yaml", prices__replay_interval="PT15M"
            )
        ),
        **period,
    )
    assert quarters.step == pd.Timedelta(minutes=15) and hourly.step == pd.Timedelta(hours=1)
    assert quarters.hi - quarters.lo == 4 * (hourly.hi - hourly.lo)
    held = quarters.series.values[quarters.lo : quarters.hi].reshape(-1, 4)
    assert (held == hourly.series.values[hourly.lo : hourly.hi, None]).all()
    day = quarters.series.starts[quarters.lo : quarters.hi].tz_convert("Europe/Brussels").date
    assert sum(d.isoformat() == "2019-03-31" for d in day) == 92
    assert (quarters.imbalance_pricing, quarters.spread_per_mwh) == ("single", 0.0)
    assert (hourly.imbalance_pricing, hourly.spread_per_mwh) == ("dual", 20.0)
    names: list[Any] = ["perfect", "lear"]
    a, b = run_backtest(hourly, names), run_backtest(quarters, names)
    sa, sb = a.summary(), b.summary()
    assert (sa["interval_minutes"], sb["interval_minutes"]) == (60, 15)
    assert sb["imbalance"] == {"pricing": "single", "spread_per_mwh": 0.0}
    assert b.bound["net"] >= a.bound["net"] - 1e-6
    fa, fb = (r.strategies[1].summary["forecast"] for r in (a, b))
    assert fb["mae"] == pytest.approx(fa["mae"], rel=1e-9)  # the hourly forecast, held
    assert not fb.get("fallbacks")


def test_imbalance_rules_are_checked_and_overridable(tmp_path: Path) -> None:
    both = scenario_file(
        tmp_path,
        "de-2019-backtest.yaml",
        backtest__imbalance={"pricing": "single", "spread_per_mwh": 5.0},
    )
    with pytest.raises(ScenarioError, match="spread_per_mwh applies to dual pricing"):
        load_scenario(both)
    dual = scenario_file(
        tmp_path,
        "de-2019-backtest.yaml",
        name="d.yaml",
        prices__replay_interval="PT15M",
        backtest__imbalance={"spread_per_mwh": 7.0},  # a spread asks for dual pricing
    )
    inputs = prepare(load_scenario(dual), start=utc(2019, 3, 4), end=utc(2019, 3, 5))
    assert (inputs.imbalance_pricing, inputs.spread_per_mwh) == ("dual", 7.0)
    odd = scenario_file(
        tmp_path, "de-2019-backtest.yaml", name="o.yaml", prices__replay_interval="PT25M"
    )
    with pytest.raises(ScenarioError, match=r"prices\.replay_interval: .* cannot be replayed"):
        prepare(load_scenario(odd), start=utc(2019, 3, 4), end=utc(2019, 3, 5))


def test_faults_cost_money_and_every_command_is_resolved(tmp_path: Path) -> None:
    start, end = utc(2019, 3, 4), utc(2019, 3, 9)

    def run(faults: dict[str, float]) -> dict[str, Any]:
        path = small_fleet(tmp_path, backtest__faults=faults, strategy__forecast=["perfect"])
        inputs = prepare(load_scenario(path), start=start, end=end)
        return run_backtest(inputs, ["perfect"]).strategies[0].summary

    clean = run({})
    lossy = run({"ack_loss": 0.3, "ack_delay_s": 0.5})
    assert clean["net"] > 0
    assert lossy["net"] <= clean["net"] + 1e-9
    assert lossy["delivery"]["accuracy"] < clean["delivery"]["accuracy"]
    c = lossy["commands"]
    assert c["resent"] > 0 and c["timed_out"] > 0 and c["redispatches"] > 0
    # every command ends acked (or completed), rejected, timed out (re-dispatched), expired
    # or superseded by a newer one: none is left pending
    assert c["unresolved"] == 0
    assert sum(c["final"].values()) == c["issued"]
    assert set(c["final"]) <= {"acked", "completed", "rejected", "timeout", "expired", "superseded"}
    assert clean["commands"]["timed_out"] == 0 and clean["commands"]["resent"] == 0


# -- the command line ----------------------------------------------------------------------


def vpp(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vpp", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backtest__faults__ack_loss": 1.5}, "backtest.faults.ack_loss"),
        ({"strategy__forecast": ["oracle"]}, "strategy.forecast"),
        ({"backtest__imbalance__spread": 3}, "backtest.imbalance.spread"),
        ({"fleet__0__tariff": {"demand_charge_per_kw": 10}}, "fleet.0"),
        ({"strategy__bid_quantile": 0.7}, "strategy.bid_quantile"),
        ({"strategy__features": ["cloud_cover"]}, "strategy.features ['cloud_cover']"),
        ({"features__columns__load__column": "DE_load"}, "features: columns.load"),
        ({"features__columns__load__unit": "furlongs"}, "unknown feature unit"),
        ({"features__columns__load__known": "soon"}, "features.columns.load.known"),
    ],
)
def test_a_malformed_scenario_fails_before_any_work(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = scenario_file(tmp_path, "de-2019-backtest.yaml", **changes)
    out = tmp_path / "out"
    res = vpp("backtest", path, "--out", out)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "perfect,oracle"], "--strategy"),
        (["--from", "2019-03-01T00:00"], "--from"),
        (["--from", "2019-03-05", "--to", "2019-03-01"], "before it starts"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    path = scenario_file(tmp_path, "de-2019-backtest.yaml")
    res = vpp("backtest", path, "--out", tmp_path / "out", *args)
    assert res.returncode == 2
    assert message in res.stderr


def test_optimize_refuses_a_forecast_strategy_naming_the_key(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "de-2019-backtest.yaml")
    with pytest.raises(ScenarioError, match=r"strategy\.forecast.*vpp backtest"):
        optimize(load_scenario(path))
    res = vpp("optimize", path)
    assert res.returncode == 2
    assert "strategy.forecast" in res.stderr and "vpp backtest" in res.stderr
    only_perfect = scenario_file(
        tmp_path, "de-2019-backtest.yaml", name="p.yaml", strategy__forecast="perfect"
    )
    res = vpp("optimize", only_perfect)
    assert res.returncode == 2 and "strategy.bid_quantile" in res.stderr  # backtest-only


def test_cli_backtest_writes_summary_intervals_and_report(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path, "de-2019-backtest.yaml", strategy__forecast=["perfect", "seasonal"]
    )
    out = tmp_path / "out"
    res = vpp("backtest", path, "--out", out, "--from", "2019-05-01", "--to", "2019-05-08")
    assert res.returncode == 0, res.stderr
    assert "seasonal" in res.stdout and "perfect foresight" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    s = summary["strategies"]["seasonal"]
    assert set(s) >= {
        "revenue",
        "imbalance",
        "degradation",
        "net",
        "full_cycles",
        "delivery",
        "commands",
        "timing",
        "share_of_perfect_foresight",
    }
    assert summary["perfect_foresight"]["net"] >= s["net"]
    table = pd.read_parquet(out / "intervals.parquet")
    assert len(table) == 2 * 7 * 24
    assert {"price_per_mwh", "forecast_per_mwh", "award_mw", "delivered_mwh", "soc"} <= set(
        table.columns
    )
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4
    assert "http" not in report.replace("http-equiv", "")  # self-contained


@pytest.mark.slow
def test_peak_shaving_bill_never_rises_with_the_battery_in_the_shipped_us_backtest(
    tmp_path: Path,
) -> None:
    """The C&I site is committed to peak shaving: the market never dispatches its battery
    (its group's awards split over the grid battery alone), so its bill with the battery
    is never above its bill without, and whatever the market strategy does, the site's
    battery does the same — its bill is identical under every strategy."""
    sc = load_scenario(SCENARIOS / "us-rt-2019-q1-ci-backtest.yaml")
    inputs = prepare(sc, start=utc(2019, 2, 4, 8), end=utc(2019, 2, 11, 8))
    result = run_backtest(inputs, ["perfect", "seasonal", "scenarios"], jobs=2)
    bills = [s.summary["tariffs"]["ci-site-0000"] for s in result.strategies]
    for s, bill in zip(result.strategies, bills, strict=True):
        with_battery = bill["demand_charge"] + bill["energy"]
        without = bill["demand_charge_without"] + bill["energy_without"]
        assert with_battery <= without + 1e-6, (s.name, with_battery, without)
        for month in bill["months"].values():
            assert month["peak_kw"] <= month["peak_without_kw"] + 1e-6, (s.name, month)
    for bill in bills[1:]:
        assert bill["bill_change"] == pytest.approx(bills[0]["bill_change"], abs=1e-9)
        assert bill["stored_kwh_change"] == pytest.approx(bills[0]["stored_kwh_change"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("base", "start", "end"),
    [
        ("de-2019-backtest.yaml", "2019-06-03", "2019-06-06"),
        ("dk1-2019-home-batteries-backtest.yaml", "2019-06-03", "2019-06-05"),
        ("us-rt-2019-q1-ci-backtest.yaml", "2019-02-05T08:00Z", "2019-02-06T08:00Z"),
    ],
)
def test_shipped_backtest_scenarios_run_on_a_short_range(
    tmp_path: Path, base: str, start: str, end: str
) -> None:
    res = vpp("backtest", SCENARIOS / base, "--from", start, "--to", end, "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    sc = load_scenario(SCENARIOS / base)
    assert set(summary["strategies"]) == set(sc.strategy.names)
    for s in summary["strategies"].values():
        assert s["commands"]["unresolved"] == 0
        assert s["bids"]["refused"] == 0
