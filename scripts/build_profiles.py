"""Build the simulator's compact load/PV profiles from ../shared/data (developers only).

The engine never reads ../shared at run time; this script derives the small profile file
shipped in the package (vpp/sim/profiles/profiles.npz) and is kept so it can be rebuilt.

- household_w: one household's mean active power per 15 minutes for 2007 (35,040 values,
  watts, uint16), from the UCI "Individual household electric power consumption" data
  (CC BY 4.0), local time Sceaux (France); used by time of year.
- ci_load_kw, pv_per_kw: a C&I site's hourly load (kW) and PV output per rated kW for
  2017 (8,760 values each, float32) from EPRI DER-VET's "DER for bill reduction" case
  (BSD-3-Clause); the source labels hours ending, shifted here to hour-beginning.
- vpp/bidding/data/us_rt_2019_5min.npz: a year of five-minute US real-time prices
  (USD/MWh, float32) from DER-VET's 000-004-timeseries_5min_negprices.csv, with the UTC
  start of its first interval; the engine's simulated market replays them by time of year.
- vpp/bidding/data/de_da_2019_hourly.npz: the 2019 German day-ahead prices (EUR/MWh,
  float32, hourly, UTC), from the ENTSO-E data in ../shared/data; the EU day-ahead market's
  replayed prices.

    python scripts/build_profiles.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "vpp" / "sim" / "profiles" / "profiles.npz"
PRICES = Path(__file__).resolve().parents[1] / "vpp" / "bidding" / "data" / "us_rt_2019_5min.npz"
DE_PRICES = PRICES.with_name("de_da_2019_hourly.npz")


def main(data: Path) -> None:
    hh = pd.read_csv(data / "uci_household_power_15min_2006_2010.csv")
    hh["t"] = pd.to_datetime(hh["time_local_paris_interval_start"])
    year = hh[(hh["t"] >= "2007-01-01") & (hh["t"] < "2008-01-01")]
    if len(year) != 35_040:
        raise SystemExit(f"expected 35,040 household rows for 2007, got {len(year)}")
    household_w = np.round(year["active_power_kw_mean"].to_numpy() * 1000).astype(np.uint16)

    ci = pd.read_csv(data / "dervet_billreduction_2017_hourly_siteload_pv.csv")
    if len(ci) != 8760:
        raise SystemExit(f"expected 8,760 C&I rows, got {len(ci)}")
    pv_col = next(c for c in ci.columns if c.startswith("PV Gen"))
    ci_load_kw = ci["Site Load (kW)"].to_numpy(dtype=np.float32)
    pv_per_kw = ci[pv_col].to_numpy(dtype=np.float32)

    np.savez_compressed(OUT, household_w=household_w, ci_load_kw=ci_load_kw, pv_per_kw=pv_per_kw)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")

    rt = pd.read_csv(data / "dervet_5min_2019_price_usd_mwh_siteload.csv")
    if len(rt) != 105_120:
        raise SystemExit(f"expected 105,120 five-minute rows, got {len(rt)}")
    # Interval-ending labels at UTC-08:00: row 0 ends 2019-01-01 00:00 UTC-8, i.e. the
    # interval starts 2019-01-01 07:55 UTC. Prices in USD/MWh (the source mislabels them).
    first_start = np.datetime64("2019-01-01T07:55:00")
    PRICES.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        PRICES,
        price_usd_mwh=rt["DA Price ($/kWh)"].to_numpy(dtype=np.float32),
        first_start_utc=np.array([first_start.astype("datetime64[s]").astype(np.int64)]),
        interval_s=np.array([300]),
    )
    print(f"wrote {PRICES} ({PRICES.stat().st_size:,} bytes)")

    da = pd.read_csv(data / "entsoe_dayahead_price_eur_mwh_2019_hourly.csv")
    if len(da) != 8760:
        raise SystemExit(f"expected 8,760 hourly day-ahead rows, got {len(da)}")
    # Interval-starting UTC labels; the first hour starts 2019-01-01 00:00 UTC.
    np.savez_compressed(
        DE_PRICES,
        price_eur_mwh=da["DE"].to_numpy(dtype=np.float32),
        first_start_utc=np.array([np.datetime64("2019-01-01T00:00:00", "s").astype(np.int64)]),
        interval_s=np.array([3600]),
    )
    print(f"wrote {DE_PRICES} ({DE_PRICES.stat().st_size:,} bytes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    main(parser.parse_args().data)
