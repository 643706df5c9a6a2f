"""Optimizer timings on real prices.

1. Market model, T = 288 (5-minute, 24 h), energy + reg up + reg down: 2019 US real-time
   prices (DER-VET, interval-ending UTC-08:00), 2019-07-15; re-solve with 2019-07-16. No
   public regulation prices ship with the data, so reserve prices are synthetic:
   reg up = 8 + 0.10·max(π, 0), reg down = 6 + 0.05·max(π, 0) USD/MW/h.
2. Market model, T = 8,760 (hourly 2019), energy only: DE day-ahead prices; re-solve with
   DK1's 2019 prices (new prices, same battery).
3. Scenario bidding model, 24 h × 20 scenarios: DE 2019-03-04 with persistence-forecast
   error scenarios (56 days of history); re-solve with 2019-03-05's.

4. ``de_2019_year_process``: the DE 2019 scenario (``scenarios/de-2019-arbitrage.yaml``,
   8,760 hourly prices, 1 MW / 1 MWh) through ``vpp optimize`` as a subprocess, whole
   process from the shell (interpreter, imports, scenario, Pyomo build, HiGHS, report),
   against ``benchmarks/bare_milp.py``: the same MILP built with NumPy and solved by bare
   highspy (binaries at negative prices only), also a whole process. Median wall times,
   their ratio, and both net revenues (they must agree). Goal: ratio <= 1.5.

5. ``bill_reduction_year``: the DER-VET bill-reduction case
   (``scenarios/bills/dervet-bill-reduction.yaml``: 8,760 hours, PV, seasonal TOU, 12
   monthly peaks) planned as one model: build (Pyomo model and HiGHS instance), HiGHS, and
   the whole what-if (data, build, solve, bills), median of repeats; with the avoided
   demand charge (DER-VET: 173,252.97 $/yr).

For 1-3, every figure the median of ``--repeats`` runs (default 7; min and max beside):

- ``build_plus_first_s``: a fresh model built and solved once (what a caller without a
  cached model pays);
- ``resolve_s``: the cached model, just solved with the first price set, re-solved with
  the second (every price parameter changes: nothing is skipped as unchanged), and
  ``resolve_highs_s`` the HiGHS time inside it;
- ``rebuild_s``: the baseline beside every re-solve: the same new prices solved on a model
  rebuilt from scratch; ``rebuild_to_resolve_ratio`` is what caching the model saves;
- ``resolve_to_highs_ratio``: re-solve wall time over its HiGHS time (modelling overhead).

Battery: 1 MW / 2 MWh, 92 % round trip.

    python benchmarks/optimizer.py [--data ../shared/data] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from market.definitions import Product
from market.forecasts import price_scenarios
from market.prices import PriceSeries, load_price_csv
from optimizer.inputs import BatteryAggregate, MarketInputs, ScenarioInputs
from optimizer.market_model import MarketModel
from optimizer.scenario_model import ScenarioBidModel

BATTERY = BatteryAggregate(
    e_min_mwh=0.2,
    e_max_mwh=2.0,
    e_initial_mwh=1.0,
    p_charge_max_mw=1.0,
    p_discharge_max_mw=1.0,
    eff_charge=0.959,
    eff_discharge=0.959,
)


def day(series: PriceSeries, d: str) -> np.ndarray:
    start = datetime.fromisoformat(d).replace(tzinfo=UTC)
    return series.window(start, start + timedelta(days=1)).values


def timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def market_288(data: Path) -> dict[str, float]:
    rt = load_price_csv(
        data / "dervet_5min_2019_price_usd_mwh_siteload.csv",
        time_column="Datetime (he)",
        column="DA Price ($/kWh)",
        unit="USD/MWh",
        interval="end",
        timezone="Etc/GMT+8",
        time_format="%m/%d/%Y %H:%M",
    )

    def inputs(prices: np.ndarray) -> MarketInputs:
        pos = np.maximum(prices, 0)
        return MarketInputs(
            interval_h=5 / 60,
            energy_price=prices,
            reserve_price={Product.REG_UP: 8 + 0.10 * pos, Product.REG_DOWN: 6 + 0.05 * pos},
            deployment={Product.REG_UP: 0.1, Product.REG_DOWN: 0.1},
            sustain_h=0.25,
            degradation_per_mwh=2.0,
        )

    a, b = inputs(day(rt, "2019-07-15")), inputs(day(rt, "2019-07-16"))
    return measure(lambda: MarketModel(288, [Product.REG_UP, Product.REG_DOWN]), a, b)


def market_8760(data: Path) -> dict[str, float]:
    path = data / "entsoe_dayahead_price_eur_mwh_2019_hourly.csv"
    de, dk1 = (
        load_price_csv(
            path,
            time_column="time_utc_hour_beginning",
            column=c,
            unit="EUR/MWh",
            interval="start",
            timezone="UTC",
        ).values
        for c in ("DE", "DK1")
    )
    mk = lambda p: MarketInputs(interval_h=1.0, energy_price=p, degradation_per_mwh=2.0)  # noqa: E731
    return measure(lambda: MarketModel(8760), mk(de), mk(dk1))


def scenarios_24x20(data: Path) -> dict[str, float]:
    de = load_price_csv(
        data / "entsoe_dayahead_price_eur_mwh_2019_hourly.csv",
        time_column="time_utc_hour_beginning",
        column="DE",
        unit="EUR/MWh",
        interval="start",
        timezone="UTC",
    )

    def inputs(d: str) -> ScenarioInputs:
        starts = pd.date_range(d, periods=24, freq="h", tz="UTC")
        prices = price_scenarios(de, starts, "persistence_day", 20, window_days=56)
        return ScenarioInputs(interval_h=1.0, energy_price=prices, degradation_per_mwh=2.0)

    return measure(lambda: ScenarioBidModel(24, 20), inputs("2019-03-04"), inputs("2019-03-05"))


REPEATS = 7


def stats(xs: list[float]) -> dict[str, float]:
    return {
        "median": round(float(np.median(xs)), 4),
        "min": round(min(xs), 4),
        "max": round(max(xs), 4),
    }


def measure(make, a, b) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Median of REPEATS: fresh build + first solve, cached re-solve, rebuild baseline."""
    build, first, resolve, resolve_highs, rebuild = [], [], [], [], []
    for _ in range(REPEATS):
        model, build_s = timed(make)
        _, first_s = timed(lambda: model.solve(BATTERY, a))  # noqa: B023
        build.append(build_s)
        first.append(build_s + first_s)
        # The same cached model, solved with ``a`` just now, re-solved with new prices ``b``.
        again, re_s = timed(lambda: model.solve(BATTERY, b))  # noqa: B023
        resolve.append(re_s)
        resolve_highs.append(again.report.highs_s)
        # Baseline: those new prices on a model rebuilt from scratch.
        _, fresh_s = timed(lambda: make().solve(BATTERY, b))
        rebuild.append(fresh_s)
    med_re, med_highs = float(np.median(resolve)), float(np.median(resolve_highs))
    return {
        "repeats": REPEATS,
        "build_s": stats(build),
        "build_plus_first_s": stats(first),
        "resolve_s": stats(resolve),
        "resolve_highs_s": stats(resolve_highs),
        "rebuild_s": stats(rebuild),
        "rebuild_to_resolve_ratio": round(float(np.median(rebuild)) / med_re, 2),
        "resolve_to_highs_ratio": round(med_re / med_highs, 3) if med_highs else None,
        "objective": round(again.report.objective, 2),
        "integer_intervals": again.report.integer_intervals,
    }


def de_2019_process() -> dict[str, object]:
    """``vpp optimize`` vs the bare highspy model of the same formulation, each a fresh
    process, interleaved: per formulation of simultaneous charge and discharge."""
    root = Path(__file__).resolve().parents[1]
    shipped = root / "scenarios" / "de-2019-arbitrage.yaml"
    out: dict[str, object] = {"repeats": REPEATS}
    for simultaneous in ("forbid", "time_share"):
        ours, bare, ours_net, bare_net = [], [], 0.0, 0.0
        with tempfile.TemporaryDirectory() as tmp:
            spec = yaml.safe_load(shipped.read_text())
            spec["prices"]["file"] = str(shipped.parent / spec["prices"]["file"])
            spec.setdefault("strategy", {})["simultaneous"] = simultaneous
            scenario = Path(tmp) / "s.yaml"
            scenario.write_text(yaml.safe_dump(spec))
            for _ in range(REPEATS):
                dump = Path(tmp) / "out.json"
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "vpp", "optimize", str(scenario), "--json", str(dump)],
                    check=True,
                    capture_output=True,
                    cwd=root,
                )
                ours.append(time.perf_counter() - started)
                ours_net = json.loads(dump.read_text())["net_revenue"]
                started = time.perf_counter()
                res = subprocess.run(
                    [sys.executable, str(root / "benchmarks" / "bare_milp.py"), str(scenario)],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=root,
                )
                bare.append(time.perf_counter() - started)
                bare_out = json.loads(res.stdout.strip().splitlines()[-1])
                bare_net = bare_out["net_revenue"]
        out[simultaneous] = {
            "vpp_optimize_wall_s": stats(ours),
            "bare_highspy_wall_s": stats(bare),
            "ratio": round(float(np.median(ours)) / float(np.median(bare)), 2),
            "vpp_optimize_net_eur": round(ours_net, 4),
            "bare_highspy_net_eur": round(bare_net, 4),
            "bare_binaries": bare_out["binaries"],
            "relative_difference": abs(ours_net - bare_net) / abs(bare_net),
        }
    return out


def bill_reduction_year() -> dict[str, object]:
    from vpp.bill import load_bill_spec, run_bill

    spec = load_bill_spec(
        Path(__file__).resolve().parents[1] / "scenarios" / "bills" / "dervet-bill-reduction.yaml"
    )
    build, highs, whole = [], [], []
    avoided = 0.0
    for _ in range(REPEATS):
        result, wall = timed(lambda: run_bill(spec))
        assert result.plan is not None
        build.append(result.plan.build_s)
        highs.append(result.plan.highs_s)
        whole.append(wall)
        avoided = result.totals()["avoided_demand_charge"]
    return {
        "repeats": REPEATS,
        "intervals": 8760,
        "build_s": stats(build),
        "highs_s": stats(highs),
        "whole_what_if_s": stats(whole),
        "avoided_demand_charge_usd": round(avoided, 2),
        "der_vet_avoided_demand_charge_usd": 173252.97,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    args = parser.parse_args()
    globals()["REPEATS"] = 1 if args.smoke else args.repeats
    out = {
        "benchmark": "optimizer",
        "smoke": args.smoke,
        "market_T288_energy_regup_regdown": market_288(args.data),
        "market_T8760_energy": market_8760(args.data),
        "scenario_bid_T24_S20": scenarios_24x20(args.data),
        "de_2019_year_process": de_2019_process(),
        "bill_reduction_year": bill_reduction_year(),
        "goals": {
            "figures": "median of repeats; min and max beside",
            "T288_build_plus_first_s": "<= 0.150",
            "T288_resolve_s": "<= 0.030",
            "T8760_resolve_to_highs_ratio": "<= 2.5",
            "scenario_build_plus_first_s": "<= 1.0",
            "de_2019_year_process_ratio": "<= 1.5",
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
