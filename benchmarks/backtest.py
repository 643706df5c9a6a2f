"""Backtest benchmarks (issue: scenario backtests from the CLI).

1. ``de_2019``: DE 2019 day-ahead, one 1 MW / 1 MWh battery (efficiencies 0.9487, starting
   empty), one decision per trading day: net revenue and share of the perfect-foresight
   optimum of the year (one model) for every strategy. Goal: the best forecast strategy
   captures >= 85 %.
2. ``rt_2019_hourly``: a year of 2019 five-minute US real-time prices
   (../shared/data), one 1 MW / 2 MWh battery (efficiencies 0.95) re-optimized every hour
   over 24 h (8,760 solves of 288 intervals), perfect foresight: wall time and the share of
   it inside HiGHS, for (a) the decision loop alone (`vpp optimize` on the same windows:
   forecast, build/update, HiGHS, read back) and (b) the whole backtest (the same decisions
   plus bids, market clearing, dispatch, simulated site, settlement). Goal: < 60 s with
   >= 60 % inside HiGHS.
3. ``fleet_500``: the shipped DK1 scenario (500 home batteries, 5 % offline, 10 % ack loss),
   June 2019, its three strategies: wall time of the whole run and per strategy.
   Goal: < 60 s.

Every figure is one run (a backtest is deterministic for a seed; the wall times vary with the
machine's load). Prints one JSON object.

    python -m benchmarks.backtest [--data ../shared/data] [--skip de_2019,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vpp.backtest.runner import prepare, run_backtest  # noqa: E402
from vpp.optimize import optimize  # noqa: E402
from vpp.scenario import load_scenario  # noqa: E402

SCENARIOS = ROOT / "scenarios"


def de_2019() -> dict[str, Any]:
    sc = load_scenario(SCENARIOS / "de-2019-backtest.yaml")
    started = time.perf_counter()
    result = run_backtest(prepare(sc), sc.strategy.names)
    out: dict[str, Any] = {
        "perfect_foresight_net_eur": round(result.bound["net"], 2),
        "strategies": {},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    for s in result.strategies:
        out["strategies"][s.name] = {
            "net_eur": round(s.summary["net"], 2),
            "share_of_perfect_foresight": round(s.summary["share_of_perfect_foresight"], 4),
            "wall_s": round(s.summary["timing"]["wall_s"], 1),
        }
    forecasts = {k: v for k, v in out["strategies"].items() if k != "perfect"}
    best = max(forecasts, key=lambda k: forecasts[k]["share_of_perfect_foresight"])
    out["best_forecast_strategy"] = best
    out["goal"] = "best forecast strategy >= 0.85 of perfect foresight"
    out["goal_met"] = forecasts[best]["share_of_perfect_foresight"] >= 0.85
    return out


def rt_scenario(data: Path, tmp: Path) -> Path:
    spec = {
        "name": "us-rt-2019-hourly",
        "market": "caiso",
        "prices": {
            "file": str(data / "dervet_5min_2019_price_usd_mwh_siteload.csv"),
            "time_column": "Datetime (he)",
            "column": "DA Price ($/kWh)",
            "unit": "USD/MWh",
            "interval": "end",
            "timezone": "Etc/GMT+8",
            "time_format": "%m/%d/%Y %H:%M",
            "start": "2019-01-01T08:00:00Z",
            "end": "2020-01-01T08:00:00Z",
        },
        "fleet": [
            {
                "name": "grid-battery",
                "count": 1,
                "group": "sp15",
                "capacity_kwh": 2000,
                "p_charge_max_kw": 1000,
                "p_discharge_max_kw": 1000,
                "eff_charge": 0.95,
                "eff_discharge": 0.95,
                "soc_min": 0.0,
                "soc_max": 1.0,
                "soc_initial": 0.5,
            }
        ],
        "strategy": {
            "forecast": "perfect",
            "horizon": "PT24H",
            "reoptimize_every": "PT1H",
        },
        "backtest": {
            "decision_lead": "PT5M",
            "telemetry_interval_s": 300,
            "seed": 1,
            "faults": {"ack_delay_s": 0.0},
        },
    }
    path = tmp / "rt.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def rt_2019_hourly(data: Path, tmp: Path) -> dict[str, Any]:
    sc = load_scenario(rt_scenario(data, tmp))
    started = time.perf_counter()
    loop = optimize(sc)
    loop_wall = time.perf_counter() - started
    loop_highs = sum(r.highs_s for g in loop.groups for r in g.reports)
    started = time.perf_counter()
    inputs = prepare(sc)
    result = run_backtest(inputs, ["perfect"])
    wall = time.perf_counter() - started
    s = result.strategies[0].summary
    return {
        "decisions": len(inputs.decisions),
        "intervals": inputs.hi - inputs.lo,
        "decision_loop": {
            "what": "vpp optimize on the backtest's hourly windows (perfect foresight)",
            "wall_s": round(loop_wall, 1),
            "highs_s": round(loop_highs, 1),
            "share_in_highs": round(loop_highs / loop_wall, 3),
            "net_usd": round(loop.net_revenue, 2),
        },
        "backtest": {
            "what": "the whole backtest of the perfect strategy (bound solve included)",
            "wall_s": round(wall, 1),
            "strategy_wall_s": round(s["timing"]["wall_s"], 1),
            "highs_s": round(s["timing"]["highs_s"], 1),
            "share_in_highs": round(s["timing"]["highs_s"] / s["timing"]["wall_s"], 3),
            "net_usd": round(s["net"], 2),
        },
        "goal": "< 60 s with >= 60 % inside HiGHS",
    }


def fleet_500() -> dict[str, Any]:
    sc = load_scenario(SCENARIOS / "dk1-2019-home-batteries-backtest.yaml")
    started = time.perf_counter()
    inputs = prepare(
        sc, start=datetime(2019, 6, 1, tzinfo=UTC), end=datetime(2019, 7, 1, tzinfo=UTC)
    )
    result = run_backtest(inputs, sc.strategy.names)
    wall = time.perf_counter() - started
    return {
        "sites": sum(f.count for f in sc.fleet),
        "period": "2019-06",
        "wall_s": round(wall, 1),
        "per_strategy": {
            s.name: {
                "wall_s": round(s.summary["timing"]["wall_s"], 1),
                "net_eur": round(s.summary["net"], 2),
                "share_of_perfect_foresight": round(s.summary["share_of_perfect_foresight"], 3),
                "delivery_accuracy": round(s.summary["delivery"]["accuracy"], 4),
                "commands": s.summary["commands"]["issued"],
                "timed_out": s.summary["commands"]["timed_out"],
                "unresolved": s.summary["commands"]["unresolved"],
            }
            for s in result.strategies
        },
        "goal": "< 60 s",
        "goal_met": wall < 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    out: dict[str, Any] = {"benchmark": "backtest"}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if "de_2019" not in skip:
            out["de_2019"] = de_2019()
        if "rt_2019_hourly" not in skip:
            out["rt_2019_hourly"] = rt_2019_hourly(args.data, Path(tmp))
        if "fleet_500" not in skip:
            out["fleet_500"] = fleet_500()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
