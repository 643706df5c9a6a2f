"""A replayed strategy settled: what its market sites delivered (their meters) at the
actual price, per market interval, and the summary an analyst reads.

The award settles at the clearing price, a deviation (delivered − awarded) at the
imbalance price (``price ∓ spread`` under dual pricing, the clearing price both ways under
single pricing: a spread of 0), degradation on the delivered throughput and variable O&M
on the delivered discharge. Tariffed sites' bills are reported with and without their
batteries (:func:`bills`), and the forecast the strategy bid on is scored
(:func:`forecast_quality`).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

from vpp.aggregate import KW_PER_MW
from vpp.backtest.inputs import F64, Inputs, StrategyResult
from vpp.peak_shaving import tou_prices
from vpp.twins.registry import Tariff

if TYPE_CHECKING:
    from vpp.backtest.replay import Replay


def settle(r: Replay) -> StrategyResult:
    """The replay's intervals and summary (see the module docstring)."""
    inputs, name = r.inputs, r.name
    sc, st, lo, hi = inputs.scenario, inputs.scenario.strategy, inputs.lo, inputs.hi
    market, product, starts = inputs.market, inputs.product, inputs.series.starts
    dt_h = inputs.interval_h
    executor = r.executor
    price = inputs.series.values[lo:hi]  # settle at the actual prices (never the poisoned)
    if r.poisoned:
        price = r.values[lo:hi]
    rows = []
    totals = {
        "energy": 0.0,
        "imbalance": 0.0,
        "degradation": 0.0,
        "variable_om": 0.0,
        "award_mwh": 0.0,
        "dev_mwh": 0.0,
        "discharged_mwh": 0.0,
    }
    for g in r.groups:
        aw = np.nan_to_num(r.award[g], nan=0.0)
        aw_mwh = aw * dt_h
        delivered = np.diff(r.m_net[g]) / KW_PER_MW
        thru = np.diff(r.m_thru[g]) / KW_PER_MW
        dev = delivered - aw_mwh
        energy = aw_mwh * price
        imbalance = dev * price - inputs.spread_per_mwh * np.abs(dev)
        discharged = (thru + delivered) / 2  # throughput = out + in, delivered = out − in
        degradation = st.degradation_per_mwh * thru + st.vom_per_mwh * discharged
        totals["variable_om"] += float((st.vom_per_mwh * discharged).sum())
        totals["energy"] += float(energy.sum())
        totals["imbalance"] += float(imbalance.sum())
        totals["degradation"] += float(degradation.sum())
        totals["award_mwh"] += float(np.abs(aw_mwh).sum())
        totals["dev_mwh"] += float(np.abs(dev).sum())
        totals["discharged_mwh"] += float(discharged.sum())
        lowest_offer = np.array(
            [
                c.discharge[0].price_per_mwh if c is not None and c.discharge else np.nan
                for c in (r.curves_kept.get((g, p)) for p in range(lo, hi))
            ]
        )
        highest_bid = np.array(
            [
                c.charge[0].price_per_mwh if c is not None and c.charge else np.nan
                for c in (r.curves_kept.get((g, p)) for p in range(lo, hi))
            ]
        )
        rows.append(
            pd.DataFrame(
                {
                    "strategy": name,
                    "group": g,
                    "interval_start": starts[lo:hi],
                    "price_per_mwh": price,
                    "forecast_per_mwh": r.forecast,
                    "offer_mw": r.offer_mw[g],
                    "charge_bid_mw": r.charge_bid_mw[g],
                    "segments": r.segments[g],
                    "lowest_offer_per_mwh": lowest_offer,
                    "highest_bid_per_mwh": highest_bid,
                    "expected_mw": r.planned[g],
                    "award_mw": aw,
                    "target_kw": aw * KW_PER_MW,
                    "delivered_mwh": delivered,
                    "delivered_mw": delivered / dt_h,
                    "soc": r.m_soc[g][1:],
                    "shortfall_mwh": np.maximum(aw_mwh - delivered, 0.0),
                    "excess_mwh": np.maximum(delivered - aw_mwh, 0.0),
                    "revenue": energy + imbalance - degradation,
                }
            )
        )
    usable_mwh = (
        sum(
            f.count * f.capacity_kwh * (f.soc_max - f.soc_min) for f in sc.fleet if f.tariff is None
        )
        / KW_PER_MW
    )
    ledger = executor.core.ledger_events
    # each command's newest ledger event: resolved ones end acked, completed, rejected,
    # timeout (re-dispatched), expired or superseded; issued/sent means still pending
    final = Counter(executor.last_event.values())
    pending = final["issued"] + final["sent"]
    redispatches = sum(int(row["redispatches"]) for row in executor.closed)
    net = totals["energy"] + totals["imbalance"] - totals["degradation"]
    summary: dict[str, Any] = {
        "revenue": {product.value: totals["energy"]},
        "imbalance": totals["imbalance"],
        "degradation": -(totals["degradation"] - totals["variable_om"]),
        "variable_om": -totals["variable_om"],
        "net": net,
        "full_cycles": totals["discharged_mwh"] / usable_mwh if usable_mwh > 0 else 0.0,
        "delivery": {
            "awarded_mwh": totals["award_mwh"],
            "deviation_mwh": totals["dev_mwh"],
            "accuracy": 1.0 - totals["dev_mwh"] / totals["award_mwh"]
            if totals["award_mwh"] > 0
            else None,
        },
        "bids": {"decisions": len(inputs.decisions), "refused": r.refused, "notes": r.notes},
        "commands": {
            "issued": int(ledger["issued"]),
            "resent": int(ledger["sent"]),
            "acked": int(ledger["acked"]),
            "rejected": int(ledger["rejected"]),
            "timed_out": int(ledger["timeout"]),
            "expired": int(ledger["expired"]),
            "superseded": int(ledger["superseded"]),
            "redispatches": redispatches,
            "unresolved": int(pending),
            "final": dict(sorted(final.items())),
            "messages_sent": executor.stats.commands_sent,
        },
        "telemetry": {
            "readings": executor.stats.readings,
            "refused": executor.stats.refused,
            "site_events": dict(sorted(executor.stats.events.items())),
        },
    }
    if r.tariffed.any():
        summary["tariffs"] = bills(inputs, r.bill_slots, r.tariffed, executor.fleet.soc)
        summary["peak_shaving"] = {
            "plans": executor.stats.peak_plans,
            "skipped": executor.stats.peak_skipped,
        }
    summary["forecast"] = forecast_quality(
        r.strategy.forecaster.name, inputs.series.values[lo:hi], r.forecast, r.quantiles
    )
    summary["forecast"]["fallbacks"] = r.fallbacks
    summary["forecast"]["feature_fills"] = r.fills
    summary["trimmed_mwh"] = float(sum(r.trimmed.values()))
    summary["warnings"] = warnings_of(summary)
    summary["timing"] = {
        "wall_s": time.perf_counter() - r.wall0,
        "highs_s": r.highs_s,
        "solve_s": r.solve_s,
    }
    example = None
    if r.curves_kept:
        floor, cap = market.price_limits(product)

        def priced(c: Any) -> int:  # segments at a price of their own (not price-taking)
            return sum(floor < s.price_per_mwh < cap for s in c.discharge + c.charge)

        (g_best, p_best), best = max(
            r.curves_kept.items(), key=lambda kv: (priced(kv[1]), -kv[0][1])
        )
        if lo <= p_best < hi:
            example = (g_best, starts[p_best].to_pydatetime(), best, float(price[p_best - lo]))
    return StrategyResult(
        name, summary, pd.concat(rows, ignore_index=True), r.bids_by_decision, example
    )


def forecast_quality(
    forecaster: str, price: F64, forecast: F64, quantiles: dict[float, F64]
) -> dict[str, Any]:
    """How good the forecast the strategy bid on was, over the intervals it forecast: MAE,
    sMAPE (``mean 2|f − p| / (|f| + |p|)``, intervals where both are 0 left out) and, for a
    forecast with quantiles, the share of prices at or below each level's quantile (a
    calibrated level ``q`` covers ``q`` of them)."""
    ok = ~np.isnan(forecast)
    out: dict[str, Any] = {"forecaster": forecaster, "intervals": int(ok.sum())}
    if not ok.any():
        return out | {"mae": None, "smape": None}
    err = np.abs(forecast[ok] - price[ok])
    denom = np.abs(forecast[ok]) + np.abs(price[ok])
    nz = denom > 0
    out["mae"] = float(err.mean())
    out["smape"] = float((2 * err[nz] / denom[nz]).mean()) if nz.any() else None
    if quantiles:
        cover = {}
        for level, q in sorted(quantiles.items()):
            has = ~np.isnan(q)
            if has.any():
                cover[f"{level:g}"] = round(float((price[has] <= q[has]).mean()), 4)
        out["coverage"] = cover
    return out


def warnings_of(summary: dict[str, Any]) -> list[str]:
    """What an analyst must not miss: a strategy that loses money, a bill that rises with
    the battery, decisions whose forecaster fell back, feature values filled."""
    out = []
    if summary["net"] < 0:
        out.append(f"net revenue is negative ({summary['net']:.2f})")
    for site, bill in summary.get("tariffs", {}).items():
        change = bill["bill_change"]
        if change > 0.005:  # half a cent: more than rounding noise
            out.append(
                f"{site}: the bill rises by {change:.2f} {bill['currency']} with the battery"
            )
    fb = summary["forecast"].get("fallbacks") or {}
    if fb:
        taken = ", ".join(f"{k} {v}×" for k, v in sorted(fb.items()))
        out.append(
            f"{summary['forecast']['forecaster']} fell back in "
            f"{sum(fb.values())} of {summary['bids']['decisions']} decisions ({taken})"
        )
    if summary["forecast"].get("feature_fills"):
        out.append(
            f"{summary['forecast']['feature_fills']} feature values were not published by "
            "their decision and were filled"
        )
    return out


def bills(
    inputs: Inputs,
    slots: list[tuple[float, F64, F64]],
    tariffed: npt.NDArray[np.bool_],
    soc_end: F64,
) -> dict[str, Any]:
    """Demand charges and energy bills of tariffed sites with and without their batteries,
    per billing month in the tariff's zone (peak = the highest plan-interval mean import).

    ``bill_change`` is the bill with the battery minus the bill without, less the energy
    the battery holds at the end beyond what it held at the start (bought in the period,
    still the site's: valued at the period's mean import price times the discharge
    efficiency). Without that credit a battery that ends fuller than it started — ready
    for the next peak — would look like a rising bill."""
    out: dict[str, Any] = {}
    if len(slots) < 2:
        return out
    t = np.array([s[0] for s in slots])
    imp = np.diff(np.vstack([s[1] for s in slots]), axis=0)  # (slots-1, sites) kWh
    imp0 = np.diff(np.vstack([s[2] for s in slots]), axis=0)
    starts = [datetime.fromtimestamp(x, UTC) for x in t[:-1]]
    hours = np.diff(t) / 3600.0
    for i in np.flatnonzero(tariffed).tolist():
        site = inputs.sites[i]
        tariff: Tariff = site.tariff  # type: ignore[assignment]
        zone = ZoneInfo(tariff.timezone)
        months = np.array([s.astimezone(zone).strftime("%Y-%m") for s in starts])
        price = tou_prices(tariff, starts)
        kw, kw0 = imp[:, i] / hours, imp0[:, i] / hours
        per_month = {}
        for m in sorted(set(months.tolist())):
            sel = months == m
            per_month[m] = {
                "demand_charge": float(kw[sel].max() * tariff.demand_charge_per_kw),
                "demand_charge_without": float(kw0[sel].max() * tariff.demand_charge_per_kw),
                "energy": float((imp[sel, i] * price[sel]).sum()),
                "energy_without": float((imp0[sel, i] * price[sel]).sum()),
                "peak_kw": float(kw[sel].max()),
                "peak_without_kw": float(kw0[sel].max()),
            }
        total = {k: sum(v[k] for v in per_month.values()) for k in next(iter(per_month.values()))}
        stored_kwh = float((soc_end[i] - inputs.soc0[i]) * site.capacity_kwh)
        stored_value = stored_kwh * site.eff_discharge * float(price.mean())
        out[site.site_id] = {
            "currency": tariff.currency,
            **{k: v for k, v in total.items() if not k.startswith("peak")},
            "demand_charge_saved": total["demand_charge_without"] - total["demand_charge"],
            "energy_saved": total["energy_without"] - total["energy"],
            "stored_kwh_change": stored_kwh,
            "stored_energy_value": stored_value,
            "bill_change": (total["demand_charge"] + total["energy"])
            - (total["demand_charge_without"] + total["energy_without"])
            - stored_value,
            "months": per_month,
        }
    return out
