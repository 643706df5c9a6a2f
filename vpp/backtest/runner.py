"""``vpp backtest``: a scenario's strategies replayed on real prices in simulated time.

For each strategy the runner plays the scenario's period on one simulated clock:

1. **Decide** (:mod:`vpp.decision_windows`): at each decision instant the fleet's twins
   are read (:meth:`FleetExecutor.snapshot`: health P50/P90, free capacity, SoC), each
   group becomes one battery sized to its free capacity at ``strategy.bid_quantile``, its
   energy is carried forward through the intervals already committed (awards, or the
   expected clearing of bids not cleared yet), and the strategy forecasts from the prices
   known then only and plans its curves (:mod:`vpp.bidding.strategies`).
2. **Submit**: the curves become bids, validated by the market's rules (segments,
   quantities, prices, gate closure) in the simulated market, through the transaction log.
3. **Clear**: at the market's clearing instant (a day-ahead auction at its gate; real time
   at each interval's start) each bid clears against the actual price — a segment is
   awarded when the price reaches it — and awards become dispatch targets.
4. **Deliver**: the dispatch core splits targets across the sites, commands them and tracks
   acks on the simulated fleet with the scenario's faults (:mod:`vpp.backtest.executor`).
5. **Settle**: what the market sites really delivered (their meters) settles at the actual
   price: the award at the clearing price, any shortfall or excess at the imbalance price
   (``price + spread`` for a shortfall, ``price − spread`` for an excess under dual pricing;
   the clearing price both ways under single pricing, which is a spread of 0), degradation
   on the delivered throughput and variable O&M on the delivered discharge. Deviations
   settle per market interval: for SDAC's quarter-hour product that is the 15-minute
   imbalance settlement period; an hourly product is settled per hour.

The perfect-foresight optimum of the whole period (one model, :func:`vpp.optimize.optimize`)
is the bound each strategy's net revenue is scored against. Tariffed site classes
peak-shave (the engine's planner) and are committed to it, so they are never offered to
the market; their bills are reported with and without their batteries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from market.prices import PriceDataError, PriceSeries, load_price_csv
from vpp.backtest import pool
from vpp.backtest.inputs import F64, BacktestResult, Inputs, StrategyResult
from vpp.backtest.replay import Inspect, Replay
from vpp.backtest.settlement import settle
from vpp.bidding.strategies import StrategyName
from vpp.decision_windows import WindowError, decisions
from vpp.optimize import optimize
from vpp.scenario import (
    FleetEntry,
    Scenario,
    ScenarioError,
    energy_market,
    load_features,
    load_series,
    replayed,
)
from vpp.twins.registry import SiteConfig

# -- inputs ------------------------------------------------------------------------------


def prepare(
    scenario: Scenario, *, start: datetime | None = None, end: datetime | None = None
) -> Inputs:
    """Load and check everything a run needs, before any work (errors name the key)."""
    market = scenario.market_definition
    if scenario.strategy.reserves:
        raise ScenarioError(
            f"scenario {scenario.name}: strategy.products {scenario.strategy.products}: "
            "vpp backtest bids energy only (reserve bidding is not replayed yet); "
            "`vpp optimize` computes the reserve bound"
        )
    p = scenario.prices
    try:
        series = load_price_csv(
            p.file,
            time_column=p.time_column,
            column=p.column,
            unit=p.unit,
            interval=p.interval,
            timezone=p.timezone,
            time_format=p.time_format,
        )
    except PriceDataError as exc:
        raise ScenarioError(f"scenario {scenario.name}: prices: {exc}") from None
    series = replayed(scenario, series)
    market, product = energy_market(market, series.interval)
    lo_t = start or p.start or series.start
    hi_t = end or p.end or series.end
    if hi_t <= lo_t:
        raise ScenarioError(
            f"scenario {scenario.name}: the period ends ({hi_t}) before it starts ({lo_t})"
        )
    lo = int(np.searchsorted(series.starts, pd.Timestamp(lo_t), side="left"))
    hi = int(np.searchsorted(series.starts, pd.Timestamp(hi_t), side="left"))
    if hi <= lo:
        raise ScenarioError(
            f"scenario {scenario.name}: no prices between {lo_t.isoformat()} and "
            f"{hi_t.isoformat()} (the file covers {series.start.isoformat()} .. "
            f"{series.end.isoformat()})"
        )
    strategy = scenario.strategy
    try:
        found = decisions(
            series.starts,
            lo,
            hi,
            market,
            product,
            horizon=strategy.horizon,
            every=strategy.reoptimize_every,
            lead=scenario.backtest.decision_lead,
            clock=strategy.window_clock,
        )
    except WindowError as exc:
        raise ScenarioError(f"scenario {scenario.name}: strategy: {exc}") from None
    sites, site_class, soc0 = expand_fleet(
        scenario.fleet, scenario.backtest.telemetry_interval_s, validate=False
    )
    loads: dict[int, tuple[PriceSeries | None, PriceSeries | None]] = {}
    first_t = min(found[0].at, series.starts[lo].to_pydatetime()) - timedelta(hours=1)
    last_t = series.starts[hi - 1].to_pydatetime() + series.interval
    for k, entry in enumerate(scenario.fleet):
        pair: list[PriceSeries | None] = []
        for key in ("load", "pv"):
            src = getattr(entry, key)
            if src is None:
                pair.append(None)
                continue
            s = load_series(src, f"scenario {scenario.name}: fleet.{k}.{key}")
            if s.start > first_t or s.end < last_t:
                raise ScenarioError(
                    f"scenario {scenario.name}: fleet.{k}.{key}: the series covers "
                    f"{s.start.isoformat()} .. {s.end.isoformat()}, the backtest needs "
                    f"{first_t.isoformat()} .. {last_t.isoformat()}"
                )
            pair.append(s)
        loads[k] = (pair[0], pair[1])
    for i, cfg in enumerate(sites):  # the registry's plausibility limits, from the data
        load, pv = loads[site_class[i]]
        limits: dict[str, float] = {}
        if load is not None:
            limits["site_load_max_kw"] = max(1.0, 1.5 * float(load.values.max()))
        if pv is not None:
            limits["pv_max_kw"] = max(1.0, 1.5 * float(pv.values.max()))
        try:
            sites[i] = SiteConfig.model_validate({**cfg.model_dump(), **limits})
        except ValidationError as exc:
            raise ScenarioError(
                f"scenario {scenario.name}: fleet.{site_class[i]}: {exc.errors()[0]['msg']}"
            ) from None
    rule = scenario.backtest.imbalance
    spread = rule.spread_per_mwh
    if spread is None:
        spread = market.imbalance_spread_per_mwh  # the market file's documented default
    # a spread the scenario gives asks for dual pricing; else the market's rule
    pricing = rule.pricing or ("dual" if rule.spread_per_mwh is not None else None)
    pricing = pricing or market.imbalance_pricing
    if pricing == "single":
        spread = 0.0  # one price per settlement period, whatever the deviation's direction
    features = load_features(scenario, market, product)
    return Inputs(
        scenario,
        market,
        product,
        series,
        lo,
        hi,
        found,
        sites,
        site_class,
        soc0,
        loads,
        spread,
        features,
        pricing,
    )


def expand_fleet(
    fleet: list[FleetEntry], telemetry_interval_s: float, *, validate: bool = True
) -> tuple[list[SiteConfig], list[int], F64]:
    """One :class:`SiteConfig` per site of each class (ids ``<class>-<n>``); without
    ``validate`` the records are built unchecked (the caller completes them)."""
    make: Any = SiteConfig if validate else SiteConfig.model_construct
    sites, classes, soc0 = [], [], []
    for k, f in enumerate(fleet):
        width = max(4, len(str(f.count)))
        for i in range(f.count):
            sites.append(
                make(
                    site_id=f"{f.name}-{i:0{width}d}",
                    group=f.group,
                    capacity_kwh=f.capacity_kwh,
                    p_charge_max_kw=f.p_charge_max_kw,
                    p_discharge_max_kw=f.p_discharge_max_kw,
                    eff_charge=f.eff_charge,
                    eff_discharge=f.eff_discharge,
                    soc_min=f.soc_min,
                    soc_max=f.soc_max,
                    telemetry_interval_s=telemetry_interval_s,
                    tariff=f.tariff,
                )
            )
            classes.append(k)
            soc0.append(f.soc_initial)
    return sites, classes, np.array(soc0)


# -- one strategy ------------------------------------------------------------------------


def run_strategy(
    inputs: Inputs,
    name: StrategyName,
    *,
    poison_after: datetime | None = None,
    record_bids: bool = False,
    progress: Callable[[int, int], None] | None = None,
    inspect: Inspect | None = None,
) -> StrategyResult:
    """Replay one strategy over the period (:class:`vpp.backtest.replay.Replay`; see the
    module docstring) and settle it (:func:`vpp.backtest.settlement.settle`)."""
    replay = Replay(
        inputs,
        name,
        poison_after=poison_after,
        record_bids=record_bids,
        progress=progress,
        inspect=inspect,
    )
    return settle(replay.run())


# -- the whole run -----------------------------------------------------------------------


def bound(inputs: Inputs) -> tuple[dict[str, Any], F64]:
    """The perfect-foresight optimum of the evaluated period as one model (what
    ``vpp optimize`` prints for the same data), and its net revenue per interval."""
    sc = inputs.scenario
    starts = inputs.series.starts
    whole = sc.model_copy(
        update={
            "prices": sc.prices.model_copy(
                update={
                    "start": starts[inputs.lo].to_pydatetime(),
                    "end": (starts[inputs.hi - 1] + inputs.step).to_pydatetime(),
                }
            ),
            # the bound is one number per period and fleet: no strategy setting moves it
            "strategy": sc.strategy.model_copy(
                update={"horizon": None, "reoptimize_every": None, "terminal": "free"}
            ),
        }
    )
    started = time.perf_counter()
    result = optimize(whole, check=False)
    per = np.zeros(inputs.hi - inputs.lo)
    for g in result.groups:
        if g.net_by_interval:
            per += np.concatenate(g.net_by_interval)
    data = result.to_dict()
    return (
        {
            "net": result.net_revenue,
            "revenue": data["revenue"],
            "degradation": -data["degradation"],
            "variable_om": -data["variable_om"],
            "full_cycles": data["full_cycles"],
            "windows": result.windows,
            "timing": {"bound_wall_s": time.perf_counter() - started},
        },
        per,
    )


def run_backtest(
    inputs: Inputs,
    names: list[StrategyName],
    *,
    progress: Callable[[str, int, int], None] | None = None,
    jobs: int = 1,
) -> BacktestResult:
    """The bound and every strategy of ``names`` on ``inputs``; with ``jobs`` > 1 they run
    in that many worker processes (:mod:`vpp.backtest.pool`), with the same result."""
    if jobs > 1 and names:
        parts = [(inputs, None), *((inputs, n) for n in names)]
        done = pool.run_parts(_part, parts, jobs, progress)
        bound_summary, per = done[0]
        results: list[StrategyResult] = list(done[1:])
    else:
        # (LEAR pins its own fits to one BLAS thread, market.threads: the same bits here,
        # in a worker and in the live bidder)
        bound_summary, per = bound(inputs)
        results = []
        for name in names:

            def step(done: int, total: int, n: str = name) -> None:
                if progress is not None:
                    progress(n, done, total)

            results.append(run_strategy(inputs, name, progress=step))
    for res in results:
        net = res.summary["net"]
        res.summary["share_of_perfect_foresight"] = (
            net / bound_summary["net"] if bound_summary["net"] > 0 else None
        )
    # the same run's perfect strategy is the market-feasible optimum (same gates, windows
    # and quantity step): a forecast strategy's share of it is the forecast's part
    feasible = next((r.summary["net"] for r in results if r.name == "perfect"), None)
    for res in results:
        res.summary["share_of_market_feasible"] = (
            res.summary["net"] / feasible if feasible is not None and feasible > 0 else None
        )
    if feasible is not None:
        bound_summary["market_feasible_net"] = feasible
    return BacktestResult(inputs.scenario.name, inputs, bound_summary, per, results)


def _part(inputs: Inputs, name: StrategyName | None) -> Any:
    """One part of a parallel run (in a worker): the bound, or one strategy's replay."""
    if name is None:
        return bound(inputs)
    return run_strategy(inputs, name, progress=lambda d, t: pool.report(name, d, t))


def without_timing(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary less its wall-clock figures (what a rerun with the same seed repeats)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "timing"}
        return node

    out: dict[str, Any] = strip(summary)
    return out
