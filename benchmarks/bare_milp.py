"""The bare-solver baseline for ``vpp optimize`` on a scenario's year: the same battery
arbitrage MILP built column by column with NumPy (:mod:`benchmarks.milp_reference`) and solved by
highspy, binaries only where they can matter (negative prices; none under the scenario's
``strategy.simultaneous: time_share``). Reads the price CSV with
the standard library; no Pyomo, pandas or engine code. Prints one JSON object:
``{"net_revenue": ..., "highs_s": ..., "binaries": ...}``.

    python benchmarks/bare_milp.py SCENARIO.yaml
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.milp_reference import ReferenceBattery, solve_reference


def _utc(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def main() -> None:
    path = Path(sys.argv[1])
    sc = yaml.safe_load(path.read_text())
    p = sc["prices"]
    if p.get("interval", "start") != "start" or p.get("timezone", "UTC") != "UTC":
        raise SystemExit("bare_milp reads interval-start UTC prices only")
    start, end = (_utc(str(p[k])) for k in ("start", "end"))
    values = []
    with open(path.parent / p["file"], newline="") as fh:
        for row in csv.DictReader(fh):
            t = _utc(row[p["time_column"]])
            if start <= t < end:
                values.append(float(row[p["column"]]))
    price = np.asarray(values)
    f = sc["fleet"][0]
    kwh = f["count"] * f["capacity_kwh"] / 1000
    battery = ReferenceBattery(
        e_min_mwh=kwh * f["soc_min"],
        e_max_mwh=kwh * f["soc_max"],
        e0_mwh=kwh * f["soc_initial"],
        p_dis_max_mw=f["count"] * f["p_discharge_max_kw"] / 1000,
        p_ch_max_mw=f["count"] * f["p_charge_max_kw"] / 1000,
        eta_c=f["eff_charge"],
        eta_d=f["eff_discharge"],
    )
    # forbid: binaries where a price is negative (elsewhere they cannot bind); time_share:
    # none, the LP's hull P+/P+max + P-/P-max <= 1 (optimizer.blocks.add_no_simultaneous)
    simultaneous = sc.get("strategy", {}).get("simultaneous", "forbid")
    binary = price < 0 if simultaneous == "forbid" else np.zeros(len(price), dtype=bool)
    with contextlib.redirect_stdout(io.StringIO()):  # HiGHS prints its banner on creation
        result = solve_reference(battery, price, 1.0, binary=binary, mip_rel_gap=1e-7)
    print(
        json.dumps(
            {
                "net_revenue": result.objective,
                "highs_s": result.highs_s,
                "binaries": int(binary.sum()),
                "simultaneous": simultaneous,
            }
        )
    )


if __name__ == "__main__":
    main()
