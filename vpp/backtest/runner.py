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

import heapq
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import ValidationError

from market.adapter import LoggedMarket, MemoryTxLog, SimulatedMarket
from market.definitions import MarketDefinition, Product
from market.features import FeatureSet
from market.prices import PriceDataError, PriceSeries, load_price_csv
from vpp.aggregate import KW_PER_MW
from vpp.backtest import pool
from vpp.backtest.executor import FleetExecutor
from vpp.bidding.cycle import (
    BidCycle,
    CycleInputs,
    CycleResult,
    CycleSettings,
    GroupInput,
    MemoryBands,
)
from vpp.bidding.strategies import Fixed, Strategy, StrategyName, make_strategy
from vpp.decision_windows import Decision, WindowError, decisions
from vpp.dispatch.targets import from_awards
from vpp.optimize import optimize
from vpp.peak_shaving import tou_prices
from vpp.scenario import (
    FleetEntry,
    Scenario,
    ScenarioError,
    energy_market,
    load_features,
    load_series,
    replayed,
)
from vpp.sim.fleet import CommandFaults, TelemetryFaults
from vpp.twins.registry import SiteConfig, Tariff

F64 = npt.NDArray[np.float64]

TIMING_KEYS = ("wall_s", "highs_s", "solve_s", "bound_wall_s")


@dataclass
class Inputs:
    """What every strategy of one run shares: prices, the period, the fleet, decisions."""

    scenario: Scenario
    market: MarketDefinition
    product: Product
    series: PriceSeries  # the whole file: history before the period included
    lo: int  # the evaluated period is positions [lo, hi)
    hi: int
    decisions: list[Decision]
    sites: list[SiteConfig]
    site_class: list[int]  # index into scenario.fleet per site
    soc0: F64
    loads: dict[int, tuple[PriceSeries | None, PriceSeries | None]]  # class -> (load, pv)
    spread_per_mwh: float
    features: FeatureSet | None = None  # the strategy's feature series, with publication
    imbalance_pricing: str = "dual"  # single: spread_per_mwh is 0 (one price both ways)

    @property
    def step(self) -> timedelta:
        return self.series.interval

    @property
    def interval_h(self) -> float:
        return self.series.interval.total_seconds() / 3600.0

    @property
    def market_groups(self) -> list[str]:
        return sorted({f.group for f in self.scenario.fleet if f.tariff is None})


@dataclass
class StrategyResult:
    name: str
    summary: dict[str, Any]
    intervals: pd.DataFrame
    bids_by_decision: dict[int, bytes] = field(default_factory=dict)  # when recorded
    # the bid with the most segments, for the report: (group, interval start, curve, price)
    example_curve: tuple[str, datetime, Any, float] | None = None


@dataclass
class BacktestResult:
    scenario: str
    inputs: Inputs
    bound: dict[str, Any]
    bound_by_interval: F64  # the bound's net revenue per evaluated interval
    strategies: list[StrategyResult]

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "market": self.inputs.market.market_id,
            "product": self.inputs.product.value,
            "currency": self.inputs.market.currency,
            "start": self.inputs.series.starts[self.inputs.lo].isoformat(),
            "end": (self.inputs.series.starts[self.inputs.hi - 1] + self.inputs.step).isoformat(),
            "intervals": self.inputs.hi - self.inputs.lo,
            "interval_minutes": int(self.inputs.step.total_seconds() // 60),
            "imbalance": {
                "pricing": self.inputs.imbalance_pricing,
                "spread_per_mwh": self.inputs.spread_per_mwh,
            },
            "seed": self.inputs.scenario.backtest.seed,
            "perfect_foresight": self.bound,
            "strategies": {s.name: s.summary for s in self.strategies},
        }


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


def load_source(inputs: Inputs) -> Callable[[float], tuple[F64, F64]]:
    """(load kW, PV kW) per site at an instant, from each class's series (none: zero, so an
    uncommanded grid battery stands still)."""
    cls = np.asarray(inputs.site_class)
    if not any(a is not None or b is not None for a, b in inputs.loads.values()):
        zero = np.zeros(cls.size)
        return lambda t: (zero, zero)
    n_classes = len(inputs.scenario.fleet)

    def value(s: PriceSeries | None, t: float) -> float:
        if s is None:
            return 0.0
        step = s.interval.total_seconds()
        k = int((t - s.starts[0].timestamp()) // step)
        return float(s.values[min(max(k, 0), len(s.values) - 1)])

    def at(t: float) -> tuple[F64, F64]:
        load = np.array([value(inputs.loads[k][0], t) for k in range(n_classes)])
        pv = np.array([value(inputs.loads[k][1], t) for k in range(n_classes)])
        return load[cls], pv[cls]

    return at


def published_at(inputs: Inputs) -> npt.NDArray[np.int64]:
    """Epoch seconds at which each position's price is published by the market: a
    day-ahead auction's results at its gate, a real-time price at its interval's start."""
    market, product = inputs.market, inputs.product
    starts = inputs.series.starts
    if market.product(product).gate_closure.kind == "daily":
        out = np.empty(len(starts), dtype=np.int64)
        cache: dict[Any, int] = {}
        for i, s in enumerate(starts):
            day = market.trading_day(s.to_pydatetime())
            if day not in cache:
                cache[day] = int(
                    market.gate_closure(product, market.trading_day_start_utc(day)).timestamp()
                )
            out[i] = cache[day]
        return out
    return np.asarray(starts.as_unit("s").asi8, dtype=np.int64)


# -- one strategy ------------------------------------------------------------------------


def strategy_for(inputs: Inputs, name: StrategyName) -> Strategy:
    """The strategy ``name`` with the scenario's settings (the live bidder builds its own
    from ``bidding.*`` through the same :func:`make_strategy`)."""
    st = inputs.scenario.strategy
    return make_strategy(
        name,
        inputs.market,
        inputs.product,
        degradation_per_mwh=st.degradation_per_mwh,
        vom_per_mwh=st.vom_per_mwh,
        mip_rel_gap=st.mip_rel_gap,
        terminal=st.terminal,
        scenarios=st.scenarios,
        history_days=st.history_days,
        base=st.base_forecast,
        per_day=round(timedelta(days=1) / inputs.step),
        features=st.features,
        anchor=st.anchor,
        lear_windows_days=st.lear.windows_days,
        learned_train_days=st.learned.train_days,
        learned_retrain_days=max(1, round(st.learned.retrain_every / timedelta(days=1))),
        seed=inputs.scenario.backtest.seed,
        simultaneous=st.simultaneous,
    )


def run_strategy(
    inputs: Inputs,
    name: StrategyName,
    *,
    poison_after: datetime | None = None,
    record_bids: bool = False,
    progress: Callable[[int, int], None] | None = None,
    inspect: Callable[[int, CycleInputs, CycleResult], None] | None = None,
) -> StrategyResult:
    """Replay one strategy over the period (see the module docstring).

    ``poison_after`` replaces every price and feature value published after that instant
    with garbage (for the no-look-ahead test); ``record_bids`` keeps each decision's
    submitted bids as JSON; ``inspect`` sees each decision's bid-cycle inputs and result
    (the live-bidder equivalence test).
    """
    wall0 = time.perf_counter()
    sc = inputs.scenario
    st = sc.strategy
    bt = sc.backtest
    market, product = inputs.market, inputs.product
    series, starts = inputs.series, inputs.series.starts
    values = series.values.copy()
    if poison_after is not None:
        late = published_at(inputs) > poison_after.timestamp()
        rng = np.random.default_rng(12345)
        values[late] = rng.uniform(-3000.0, 3000.0, int(late.sum()))
    dt_h = inputs.interval_h
    strategy = strategy_for(inputs, name)
    feats = inputs.features
    if feats is not None and poison_after is not None:
        feats = feats.poisoned_after(poison_after)
    cycle = BidCycle(
        market,
        product,
        strategy,
        CycleSettings(st.bid_quantile, st.backup_reserve_fraction),
        MemoryBands(),
    )
    groups = inputs.market_groups
    market_rows = {
        g: np.array([s.group == g and s.tariff is None for s in inputs.sites]) for g in groups
    }
    tariffed = np.array([s.tariff is not None for s in inputs.sites])
    caps = np.array([s.capacity_kwh for s in inputs.sites])
    f = bt.faults
    offline_per_hour = (
        f.offline_fraction / ((1.0 - f.offline_fraction) * f.offline_mean_s / 3600.0)
        if f.offline_fraction > 0
        else 0.0
    )
    d = bt.dispatch
    ps = bt.peak_shaving
    grid = bt.telemetry_interval_s
    first_event = min(inputs.decisions[0].at.timestamp(), starts[inputs.lo].timestamp())
    sim_start = (math.floor(first_event / grid) - 2) * grid
    executor = FleetExecutor(
        inputs.sites,
        start_s=sim_start,
        seed=bt.seed,
        soc0=inputs.soc0,
        loads=load_source(inputs),
        telemetry_faults=TelemetryFaults(
            offline_per_hour=offline_per_hour, offline_s=f.offline_mean_s, gap=f.telemetry_gap
        ),
        command_faults=CommandFaults(
            ack_loss=f.ack_loss,
            ack_delay_s=f.ack_delay_s,
            reject=f.reject,
            offline_mid_interval=f.offline_mid_interval,
        ),
        dispatch=d,
        peak_shaving=ps,
    )
    clearing_prices = {
        (product, starts[i].to_pydatetime()): float(values[i]) for i in range(inputs.lo, inputs.hi)
    }
    sim_market = SimulatedMarket(market, clearing_prices, clock=executor.clock.now)
    exchange = LoggedMarket(sim_market, MemoryTxLog())

    lo, hi = inputs.lo, inputs.hi
    n = hi - lo
    award = {g: np.full(n, np.nan) for g in groups}
    planned = {g: np.full(n, np.nan) for g in groups}
    forecast = np.full(n, np.nan)
    offer_mw = {g: np.zeros(n) for g in groups}
    charge_bid_mw = {g: np.zeros(n) for g in groups}
    segments = {g: np.zeros(n, dtype=np.int64) for g in groups}
    curves_kept: dict[tuple[str, int], Any] = {}
    refused = 0
    notes: dict[str, int] = {}
    fallbacks: dict[str, int] = {}  # decisions whose forecaster fell back, by the one used
    fills = 0  # feature values not published by their decision, filled
    quantiles: dict[float, F64] = {}  # the forecast's quantiles per level (curve strategy)
    trimmed = {g: 0.0 for g in groups}  # MWh cut from plans to keep awards deliverable
    highs_s = solve_s = 0.0
    bids_by_decision: dict[int, bytes] = {}
    # meters at each boundary lo..hi: net (kWh, + out), throughput (kWh), stored (kWh)
    m_net = {g: np.zeros(n + 1) for g in groups}
    m_thru = {g: np.zeros(n + 1) for g in groups}
    m_soc = {g: np.zeros(n + 1) for g in groups}
    bill_slots: list[tuple[float, F64, F64]] = []  # (epoch, import kWh, without kWh) per site

    events: list[tuple[float, int, int, str, Any]] = []
    seq = 0

    def push(t: float, order: int, kind: str, payload: Any) -> None:
        nonlocal seq
        heapq.heappush(events, (t, order, seq, kind, payload))
        seq += 1

    for p in range(lo, hi + 1):
        t = starts[p].timestamp() if p < len(starts) else (starts[-1] + inputs.step).timestamp()
        push(t, 0, "boundary", p)
    if tariffed.any():
        slot = float(ps.interval_s)
        t0 = math.ceil(starts[lo].timestamp() / slot) * slot
        t1 = (starts[hi - 1] + inputs.step).timestamp()
        for t in np.arange(t0, t1 + 1e-6, slot):
            push(float(t), 0, "meter", None)
    daily = market.product(product).gate_closure.kind == "daily"
    for k, dec in enumerate(inputs.decisions):
        push(dec.at.timestamp(), 1, "decide", k)
        if daily:
            push(dec.clears_at.timestamp(), 2, "clear", (dec.first, dec.kept))
    if not daily:
        for p in range(lo, hi):
            push(starts[p].timestamp(), 2, "clear", (p, 1))

    def sample_boundary(p: int) -> None:
        meters = executor.fleet.meters
        stored = executor.fleet.soc * caps
        for g in groups:
            rows = market_rows[g]
            m_net[g][p - lo] = float(meters.discharged[rows].sum() - meters.charged[rows].sum())
            m_thru[g][p - lo] = float(meters.discharged[rows].sum() + meters.charged[rows].sum())
            m_soc[g][p - lo] = float(stored[rows].sum() / caps[rows].sum())

    def decide(k: int) -> None:
        nonlocal refused, highs_s, solve_s, fills
        dec = inputs.decisions[k]
        snap = executor.snapshot()
        now = executor.clock.now()
        cutoff = len(starts) if name == "perfect" else dec.cutoff
        known = PriceSeries(
            series.name, series.currency, series.interval, starts[:cutoff], values[:cutoff]
        )
        horizon = list(starts[dec.first : dec.end].to_pydatetime())
        bid_window = frozenset(horizon[: dec.kept])
        current = max(lo, int(np.searchsorted(starts, pd.Timestamp(now), side="right")) - 1)
        groups_in: dict[str, GroupInput] = {}
        for g in groups:
            node = snap.groups.get(g)
            if node is None:
                continue
            standing: dict[datetime, Fixed] = {}
            for p in range(current, dec.first):
                if not lo <= p < hi:
                    continue
                mw = award[g][p - lo]
                held = curves_kept.get((g, p)) if np.isnan(mw) else float(mw)
                if held is not None:
                    standing[starts[p].to_pydatetime()] = held
            groups_in[g] = GroupInput(node, standing, bid_window)
        cycle_in = CycleInputs(
            now=now,
            horizon=horizon,
            kept=dec.kept,
            known=known,
            features=None if feats is None else feats.known_at(now),
            groups=groups_in,
        )
        result = cycle.run(cycle_in)
        if inspect is not None:
            inspect(k, cycle_in, result)
        for problem in result.problems:
            key = problem[:120]
            notes[key] = notes.get(key, 0) + 1
        view = result.view
        if view is None:
            return
        if view.note:
            notes[view.note] = notes.get(view.note, 0) + 1
            fallbacks[view.forecaster] = fallbacks.get(view.forecaster, 0) + 1
        fills += view.feature_fills
        forecast[dec.first - lo : dec.first - lo + dec.kept] = view.forecast[: dec.kept]
        if view.quantiles is not None and view.levels is not None:
            for j, lev in enumerate(view.levels):
                quantiles.setdefault(round(float(lev), 4), np.full(n, np.nan))[
                    dec.first - lo : dec.first - lo + dec.kept
                ] = view.quantiles[j, : dec.kept]
        submitted = []
        for g, made in sorted(result.groups.items()):
            highs_s += made.highs_s
            solve_s += made.solve_s
            trimmed[g] += made.mwh_trimmed
            for j, curve in enumerate(made.curves):
                p = dec.first + j
                planned[g][p - lo] = made.expected_mw[j]
                offer_mw[g][p - lo] = curve.max_discharge_mw
                charge_bid_mw[g][p - lo] = curve.max_charge_mw
                segments[g][p - lo] = len(curve.discharge) + len(curve.charge)
                curves_kept[(g, p)] = curve
            if made.bids:
                res = exchange.submit(f"{name}-{g}-d{k}", made.bids)
                refused += len(res.refused)
                submitted.extend(made.bids)
        if record_bids:
            bids_by_decision[k] = json.dumps(
                [b.model_dump(mode="json") for b in submitted], sort_keys=True
            ).encode()
        if progress is not None:
            progress(k + 1, len(inputs.decisions))

    def clear(first: int, kept: int) -> None:
        s, e = (
            starts[first].to_pydatetime(),
            (starts[first + kept - 1] + inputs.step).to_pydatetime(),
        )
        awards = exchange.awards(f"awards-{name}-{first}", s, e)
        for a in awards:
            p = int(np.searchsorted(starts, pd.Timestamp(a.interval_start), side="left"))
            if a.group in award and lo <= p < hi:
                award[a.group][p - lo] = a.p_mw
        for g in groups:  # an interval bid nothing (or refused) is awarded nothing
            seg = award[g][first - lo : first - lo + kept]
            seg[np.isnan(seg)] = 0.0
        executor.add_targets(from_awards(awards))
        executor.settle()

    while events:
        t, _, _, kind, payload = heapq.heappop(events)
        executor.advance(t)
        if kind == "boundary":
            sample_boundary(payload)
        elif kind == "meter":
            m = executor.fleet.meters
            bill_slots.append((t, m.grid_import.copy(), m.grid_import_without.copy()))
        elif kind == "decide":
            decide(payload)
        else:
            clear(*payload)
    # let the last commands resolve (acks, retries, timeouts) before counting them
    executor.advance(executor.now + 4 * bt.dispatch.ack_timeout_s * bt.dispatch.max_attempts)

    # -- settlement ----------------------------------------------------------------------
    price = series.values[lo:hi]  # settle at the actual prices (never the poisoned ones)
    if poison_after is not None:
        price = values[lo:hi]
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
    for g in groups:
        aw = np.nan_to_num(award[g], nan=0.0)
        aw_mwh = aw * dt_h
        delivered = np.diff(m_net[g]) / KW_PER_MW
        thru = np.diff(m_thru[g]) / KW_PER_MW
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
                for c in (curves_kept.get((g, p)) for p in range(lo, hi))
            ]
        )
        highest_bid = np.array(
            [
                c.charge[0].price_per_mwh if c is not None and c.charge else np.nan
                for c in (curves_kept.get((g, p)) for p in range(lo, hi))
            ]
        )
        rows.append(
            pd.DataFrame(
                {
                    "strategy": name,
                    "group": g,
                    "interval_start": starts[lo:hi],
                    "price_per_mwh": price,
                    "forecast_per_mwh": forecast,
                    "offer_mw": offer_mw[g],
                    "charge_bid_mw": charge_bid_mw[g],
                    "segments": segments[g],
                    "lowest_offer_per_mwh": lowest_offer,
                    "highest_bid_per_mwh": highest_bid,
                    "expected_mw": planned[g],
                    "award_mw": aw,
                    "target_kw": aw * KW_PER_MW,
                    "delivered_mwh": delivered,
                    "delivered_mw": delivered / dt_h,
                    "soc": m_soc[g][1:],
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
    redispatches = sum(int(r["redispatches"]) for r in executor.closed)
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
        "bids": {"decisions": len(inputs.decisions), "refused": refused, "notes": notes},
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
    if tariffed.any():
        summary["tariffs"] = bills(inputs, bill_slots, tariffed, executor.fleet.soc)
        summary["peak_shaving"] = {
            "plans": executor.stats.peak_plans,
            "skipped": executor.stats.peak_skipped,
        }
    summary["forecast"] = forecast_quality(
        strategy.forecaster.name, series.values[lo:hi], forecast, quantiles
    )
    summary["forecast"]["fallbacks"] = fallbacks
    summary["forecast"]["feature_fills"] = fills
    summary["trimmed_mwh"] = float(sum(trimmed.values()))
    summary["warnings"] = warnings_of(summary)
    summary["timing"] = {
        "wall_s": time.perf_counter() - wall0,
        "highs_s": highs_s,
        "solve_s": solve_s,
    }
    example = None
    if curves_kept:
        floor, cap = market.price_limits(product)

        def priced(c: Any) -> int:  # segments at a price of their own (not price-taking)
            return sum(floor < s.price_per_mwh < cap for s in c.discharge + c.charge)

        (g_best, p_best), best = max(curves_kept.items(), key=lambda kv: (priced(kv[1]), -kv[0][1]))
        if lo <= p_best < hi:
            example = (g_best, starts[p_best].to_pydatetime(), best, float(price[p_best - lo]))
    return StrategyResult(
        name, summary, pd.concat(rows, ignore_index=True), bids_by_decision, example
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
