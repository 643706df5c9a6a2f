"""A backtest's outputs: ``summary.json``, ``intervals.parquet`` and ``report.html``.

The report is one self-contained HTML file (plots embedded as PNG data URIs, no script, no
external asset): the comparison table, price with forecast, dispatch and SoC over a
window, cumulative net revenue of each strategy against the perfect-foresight bound, one
interval's bid curve against its clearing price, and the captured share by month.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vpp.backtest.inputs import BacktestResult, StrategyResult
from vpp.records import amount

COLORS = ["#1b6ca8", "#d1495b", "#00a6a6", "#edae49", "#66a182", "#8d6a9f", "#444444"]


def write_outputs(result: BacktestResult, out: Path) -> dict[str, Path]:
    """Write the three files into ``out`` (created if missing); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    paths = {
        "summary": out / "summary.json",
        "intervals": out / "intervals.parquet",
        "report": out / "report.html",
    }
    paths["summary"].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", "utf-8")
    frames = [s.intervals for s in result.strategies]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.to_parquet(paths["intervals"], engine="pyarrow", index=False)
    paths["report"].write_text(render_html(result, summary), "utf-8")
    return paths


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _focus(result: BacktestResult) -> StrategyResult:
    """The strategy the window plot shows beside perfect foresight: the default
    (``scenarios``) when it ran, else the best forecast strategy, else the first."""
    others = [s for s in result.strategies if s.name != "perfect"]
    for s in others:
        if s.name == "scenarios":
            return s
    if others:
        return max(others, key=lambda s: s.summary["net"])
    return result.strategies[0]


def _perfect(result: BacktestResult) -> StrategyResult | None:
    return next((s for s in result.strategies if s.name == "perfect"), None)


def window_plot(result: BacktestResult, days: int) -> str:
    s = _focus(result)
    df = s.intervals
    group = df["group"].iloc[0]
    df = df[df["group"] == group]
    end = df["interval_start"].iloc[0] + pd.Timedelta(days=days)
    w = df[df["interval_start"] < end]
    fig, ax = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    t = w["interval_start"]
    ax[0].step(t, w["price_per_mwh"], where="post", color="#222", lw=1.2, label="actual price")
    ax[0].step(
        t,
        w["forecast_per_mwh"],
        where="post",
        color=COLORS[1],
        lw=1.2,
        ls="--",
        label=f"{s.name} forecast (median)",
    )
    ax[0].set_ylabel(f"price ({result.inputs.market.currency}/MWh)")
    ax[0].legend(loc="upper left", fontsize=8)
    ax[1].step(t, w["award_mw"], where="post", color=COLORS[0], lw=1.4, label=f"{s.name} award")
    pf = _perfect(result)
    if pf is not None and pf is not s:
        p = pf.intervals
        p = p[(p["group"] == group) & (p["interval_start"] < end)]
        ax[1].step(
            p["interval_start"],
            p["award_mw"],
            where="post",
            color="#222",
            lw=0.9,
            alpha=0.6,
            label="perfect award",
        )
    ax[1].step(
        t, w["delivered_mw"], where="post", color=COLORS[2], lw=1.0, ls=":", label="delivered"
    )
    ax[1].axhline(0, color="#999", lw=0.6)
    ax[1].set_ylabel("MW (+ discharge)")
    ax[1].legend(loc="upper left", fontsize=8)
    ax[2].plot(t, w["soc"], color=COLORS[3], lw=1.4)
    ax[2].set_ylim(-0.02, 1.02)
    ax[2].set_ylabel("SoC at interval end")
    ax[0].set_title(f"{s.name}, group {group}: the first {days} days", loc="left", fontsize=10)
    fig.autofmt_xdate()
    return _png(fig)


def cumulative_plot(result: BacktestResult) -> str:
    fig, ax = plt.subplots(figsize=(11, 4))
    first = result.strategies[0].intervals
    times = first[first["group"] == first["group"].iloc[0]]["interval_start"]
    ax.plot(
        times,
        np.cumsum(result.bound_by_interval),
        color="#222",
        lw=2,
        label="perfect foresight, whole period (the bound)",
    )
    for k, s in enumerate(result.strategies):
        per = s.intervals.groupby("interval_start")["revenue"].sum()
        ax.plot(per.index, per.cumsum(), color=COLORS[k % len(COLORS)], lw=1.3, label=s.name)
    ax.set_ylabel(f"cumulative net revenue ({result.inputs.market.currency})")
    ax.legend(fontsize=8)
    ax.set_title("Cumulative net revenue against perfect foresight", loc="left", fontsize=10)
    fig.autofmt_xdate()
    return _png(fig)


def curve_plot(result: BacktestResult) -> str | None:
    chosen = next(
        (s for s in result.strategies if s.name == "scenarios" and s.example_curve is not None),
        None,
    )
    chosen = chosen or next((s for s in result.strategies if s.example_curve is not None), None)
    if chosen is None or chosen.example_curve is None:
        return None
    group, start, curve, price = chosen.example_curve
    fig, ax = plt.subplots(figsize=(7, 4.5))
    floor, cap = result.inputs.market.price_limits(result.inputs.product)
    inner = [
        seg.price_per_mwh
        for seg in curve.discharge + curve.charge
        if floor < seg.price_per_mwh < cap
    ]
    lo, hi = min([price, *inner]), max([price, *inner])
    pad = max(10.0, 0.2 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    grid = np.linspace(lo, hi, 600)
    net = [curve.cleared(p)[0] - curve.cleared(p)[1] for p in grid]
    ax.step(net, grid, where="post", color=COLORS[0], lw=1.8, label="bid curve (net MW)")
    ax.axhline(price, color=COLORS[1], lw=1.2, ls="--", label=f"clearing price {price:.2f}")
    dis, chg = curve.cleared(price)
    ax.plot([dis - chg], [price], "o", color=COLORS[1], label=f"award {dis - chg:+.2f} MW")
    ax.axvline(0, color="#999", lw=0.6)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("MW (+ discharge offered, − charge bid); price-taking parts run off the axis")
    ax.set_ylabel(f"price ({result.inputs.market.currency}/MWh)")
    ax.set_title(
        f"{chosen.name}: {group}, interval {start:%Y-%m-%d %H:%M} UTC", loc="left", fontsize=10
    )
    ax.legend(fontsize=8)
    return _png(fig)


def monthly_plot(result: BacktestResult) -> tuple[str, pd.DataFrame]:
    first = result.strategies[0].intervals
    times = pd.DatetimeIndex(first[first["group"] == first["group"].iloc[0]]["interval_start"])
    months = times.strftime("%Y-%m")
    bound = pd.Series(result.bound_by_interval, index=months).groupby(level=0).sum()
    shares = {}
    for s in result.strategies:
        per = s.intervals.groupby("interval_start")["revenue"].sum()
        by_month = pd.Series(per.to_numpy(), index=pd.DatetimeIndex(per.index).strftime("%Y-%m"))
        shares[s.name] = by_month.groupby(level=0).sum() / bound.where(bound > 0)
    table = pd.DataFrame(shares)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / max(1, len(shares))
    x = np.arange(len(table.index))
    for k, name in enumerate(table.columns):
        ax.bar(
            x + k * width, table[name].to_numpy(), width, color=COLORS[k % len(COLORS)], label=name
        )
    ax.set_xticks(x + width * (len(shares) - 1) / 2, table.index, rotation=0, fontsize=8)
    ax.axhline(1.0, color="#222", lw=0.8)
    ax.set_ylabel("share of perfect foresight")
    ax.legend(fontsize=8, ncols=min(6, len(shares)))
    ax.set_title("Captured share by month", loc="left", fontsize=10)
    return _png(fig), table


def _money(x: Any) -> str:
    return "" if x is None else amount(x, 0)


def _pct(x: Any) -> str:
    return "" if x is None else f"{100 * x:.1f} %"


def _bill_change(m: dict[str, Any]) -> str:
    bills = m.get("tariffs") or {}
    if not bills:
        return ""
    return f"{sum(b['bill_change'] for b in bills.values()):+,.0f}"


def _num(x: Any, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def comparison_rows(result: BacktestResult) -> list[list[str]]:
    rows = []
    for s in result.strategies:
        m = s.summary
        c = m["commands"]
        f = m.get("forecast", {})
        fallbacks = sum((f.get("fallbacks") or {}).values())
        rows.append(
            [
                ("⚠ " if m.get("warnings") else "") + s.name,
                _money(m["net"]),
                _pct(m.get("share_of_perfect_foresight")),
                _pct(m.get("share_of_market_feasible")),
                _money(sum(m["revenue"].values())),
                _money(m["imbalance"]),
                _money(m["degradation"]),
                _money(m["variable_om"]),
                _bill_change(m),
                _num(f.get("mae"), 2) if s.name != "perfect" else "",
                _num(f.get("smape"), 3) if s.name != "perfect" else "",
                str(fallbacks) if s.name != "perfect" else "",
                f"{m['full_cycles']:.1f}",
                _pct(m["delivery"]["accuracy"]),
                f"{c['issued']} / {c['resent']} / {c['timed_out']} / {c['redispatches']}",
            ]
        )
    return rows


HEADERS = [
    "strategy",
    "net",
    "share of PF",
    "share of perfect",
    "energy",
    "imbalance",
    "degradation",
    "O&M",
    "bill change",
    "MAE",
    "sMAPE",
    "fallbacks",
    "cycles",
    "delivery",
    "commands: sent / resent / timed out / re-dispatched",
]


def warning_lines(result: BacktestResult) -> list[str]:
    """Every strategy's warnings, named (negative net, a bill that rises, fallbacks)."""
    return [f"{s.name}: {w}" for s in result.strategies for w in s.summary.get("warnings", [])]


def gap_text(result: BacktestResult) -> str | None:
    """How much of the gap to the bound is the market's rules and how much the forecast."""
    bound = result.bound["net"]
    pf = _perfect(result)
    focus = _focus(result)
    if pf is None or bound <= 0 or focus is pf:
        return None
    rules = bound - pf.summary["net"]
    forecast = pf.summary["net"] - focus.summary["net"]
    return (
        f"Of the gap between the bound and {focus.name}, {rules / bound:.1%} of the bound is "
        "the market's rules (daily windows, gate timing, the quantity step: the bound minus "
        f"the same run's perfect strategy) and {forecast / bound:.1%} is the forecast "
        f"(perfect minus {focus.name})."
    )


def render_html(result: BacktestResult, summary: dict[str, Any]) -> str:
    inputs = result.inputs
    cur = inputs.market.currency
    days = inputs.scenario.backtest.report_days
    monthly_png, monthly = monthly_plot(result)
    curve_png = curve_plot(result)
    rows = comparison_rows(result)
    table = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows
    )
    bound = result.bound
    gap = gap_text(result)
    gap_html = f"<p>{html.escape(gap)}</p>" if gap else ""
    warns = warning_lines(result)
    warn_html = (
        '<h2>Warnings</h2><ul class="warn">'
        + "".join(f"<li>{html.escape(w)}</li>" for w in warns)
        + "</ul>"
        if warns
        else ""
    )
    tariff_html = ""
    for s in result.strategies:
        for site, b in s.summary.get("tariffs", {}).items():
            tariff_html += (
                f"<tr><td>{html.escape(s.name)}</td><td>{html.escape(site)}</td>"
                f"<td>{_money(b['demand_charge_without'])} → {_money(b['demand_charge'])}</td>"
                f"<td>{_money(b['energy_without'])} → {_money(b['energy'])}</td>"
                f"<td>{_money(b['demand_charge_saved'] + b['energy_saved'])}</td></tr>"
            )
    if tariff_html:
        tariff_html = (
            "<h2>Peak shaving: bills with and without the batteries</h2><table><tr>"
            "<th>strategy</th><th>site</th><th>demand charges</th><th>energy</th>"
            f"<th>saved</th></tr>{tariff_html}</table>"
        )
    images = [
        ("Dispatch over a window", window_plot(result, days)),
        ("Cumulative revenue", cumulative_plot(result)),
        ("Captured share by month", monthly_png),
    ]
    if curve_png:
        images.append(("One interval's bid curve", curve_png))
    figures = "".join(
        f'<figure><img src="{src}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}'
        "</figcaption></figure>"
        for alt, src in images
    )
    month_rows = "".join(
        f"<tr><td>{m}</td>"
        + "".join(f"<td>{_pct(v) if pd.notna(v) else ''}</td>" for v in monthly.loc[m])
        + "</tr>"
        for m in monthly.index
    )
    month_head = "".join(f"<th>{html.escape(c)}</th>" for c in monthly.columns)
    title = f"Backtest {summary['scenario']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; color: #1a1a1a; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.15rem; margin-top: 2rem; }}
table {{ border-collapse: collapse; margin: .5rem 0; }}
td, th {{ border: 1px solid #bbb; padding: .25rem .6rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
th {{ background: #eef2f6; }}
figure {{ margin: 1.2rem 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: .85rem; }}
.meta {{ color: #444; }}
.warn li {{ color: #8a1c1c; }}
.wide {{ overflow-x: auto; max-width: 100%; }}
.wide td {{ white-space: nowrap; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">{html.escape(inputs.market.name)}, {html.escape(summary["product"])},
{html.escape(summary["start"])} to {html.escape(summary["end"])}
({summary["intervals"]} intervals), seed {summary["seed"]}. {_imbalance_words(inputs, cur)}
Money in {cur}.</p>
<p>Perfect foresight over the whole period (one model): <strong>{_money(bound["net"])}
{cur}</strong> ({html.escape(str(bound["windows"]))}).</p>
<h2>Strategies</h2>
<div class="wide"><table><tr>{"".join(f"<th>{h}</th>" for h in HEADERS)}</tr>{table}</table></div>
{gap_html}
{warn_html}
{tariff_html}
{figures}
<h2>Captured share by month</h2>
<table><tr><th>month</th>{month_head}</tr>{month_rows}</table>
</body></html>
"""


def _imbalance_words(inputs: Any, cur: str) -> str:
    """How deviations were settled, in a sentence."""
    step = int(inputs.step.total_seconds() // 60)
    if inputs.imbalance_pricing == "single":
        return (
            f"Imbalance: single price per {step}-minute interval (the clearing price, both "
            "directions)."
        )
    return f"Imbalance: dual, clearing price ± {inputs.spread_per_mwh:g} {cur}/MWh."
