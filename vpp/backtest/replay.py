"""One strategy replayed in simulated time: the events of the period and what each does.

Four kinds of event, in time order on one heap (ties by kind, then by when they were
pushed): a market interval's *boundary* (the market sites' meters are read), a tariff
slot's *meter* reading (the tariffed sites' imports, for their bills), a *decision* (the
engine's bid cycle on the twins' snapshot and the prices known then, its bids submitted to
the simulated market through the transaction log) and a *clearing* (awards become dispatch
targets on the simulated fleet). Between events the fleet executor advances the fleet,
its telemetry and the dispatch core (:mod:`vpp.backtest.executor`). What a replay records
is settled by :func:`vpp.backtest.settlement.settle`.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.adapter import LoggedMarket, MemoryTxLog, SimulatedMarket
from market.prices import PriceSeries
from vpp.backtest.executor import FleetExecutor
from vpp.backtest.inputs import F64, Inputs
from vpp.bidding.cycle import (
    BidCycle,
    CycleInputs,
    CycleResult,
    CycleSettings,
    GroupInput,
    MemoryBands,
)
from vpp.bidding.strategies import Fixed, Strategy, StrategyName, make_strategy
from vpp.dispatch.targets import from_awards
from vpp.sim.fleet import CommandFaults, TelemetryFaults

Inspect = Callable[[int, CycleInputs, CycleResult], None]


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


class Replay:
    """One strategy's run over the period and what it records for settlement.

    ``poison_after`` replaces every price and feature value published after that instant
    with garbage (for the no-look-ahead test); ``record_bids`` keeps each decision's
    submitted bids as JSON; ``inspect`` sees each decision's bid-cycle inputs and result
    (the live-bidder equivalence test)."""

    def __init__(
        self,
        inputs: Inputs,
        name: StrategyName,
        *,
        poison_after: datetime | None = None,
        record_bids: bool = False,
        progress: Callable[[int, int], None] | None = None,
        inspect: Inspect | None = None,
    ) -> None:
        self.wall0 = time.perf_counter()
        self.inputs, self.name = inputs, name
        self.record_bids, self.progress, self.inspect = record_bids, progress, inspect
        sc = inputs.scenario
        st = sc.strategy
        series, starts = inputs.series, inputs.series.starts
        self.values = series.values.copy()
        self.poisoned = poison_after is not None
        if poison_after is not None:
            late = published_at(inputs) > poison_after.timestamp()
            rng = np.random.default_rng(12345)
            self.values[late] = rng.uniform(-3000.0, 3000.0, int(late.sum()))
        self.strategy = strategy_for(inputs, name)
        self.feats = inputs.features
        if self.feats is not None and poison_after is not None:
            self.feats = self.feats.poisoned_after(poison_after)
        self.cycle = BidCycle(
            inputs.market,
            inputs.product,
            self.strategy,
            CycleSettings(st.bid_quantile, st.backup_reserve_fraction),
            MemoryBands(),
        )
        self.groups = groups = inputs.market_groups
        self.market_rows = {
            g: np.array([s.group == g and s.tariff is None for s in inputs.sites]) for g in groups
        }
        self.tariffed = np.array([s.tariff is not None for s in inputs.sites])
        self.caps = np.array([s.capacity_kwh for s in inputs.sites])
        self.executor = self._executor()
        clearing_prices = {
            (inputs.product, starts[i].to_pydatetime()): float(self.values[i])
            for i in range(inputs.lo, inputs.hi)
        }
        sim_market = SimulatedMarket(inputs.market, clearing_prices, clock=self.executor.clock.now)
        self.exchange = LoggedMarket(sim_market, MemoryTxLog())
        n = inputs.hi - inputs.lo
        self.award = {g: np.full(n, np.nan) for g in groups}
        self.planned = {g: np.full(n, np.nan) for g in groups}
        self.forecast = np.full(n, np.nan)
        self.offer_mw = {g: np.zeros(n) for g in groups}
        self.charge_bid_mw = {g: np.zeros(n) for g in groups}
        self.segments = {g: np.zeros(n, dtype=np.int64) for g in groups}
        self.curves_kept: dict[tuple[str, int], Any] = {}
        self.refused = 0
        self.notes: dict[str, int] = {}
        self.fallbacks: dict[str, int] = {}  # decisions whose forecaster fell back, by name
        self.fills = 0  # feature values not published by their decision, filled
        self.quantiles: dict[float, F64] = {}  # the forecast's quantiles per level
        self.trimmed = {g: 0.0 for g in groups}  # MWh cut from plans to keep awards whole
        self.highs_s = self.solve_s = 0.0
        self.bids_by_decision: dict[int, bytes] = {}
        # meters at each boundary lo..hi: net (kWh, + out), throughput (kWh), stored share
        self.m_net = {g: np.zeros(n + 1) for g in groups}
        self.m_thru = {g: np.zeros(n + 1) for g in groups}
        self.m_soc = {g: np.zeros(n + 1) for g in groups}
        self.bill_slots: list[tuple[float, F64, F64]] = []  # (epoch, import, without) kWh

    def _executor(self) -> FleetExecutor:
        inputs = self.inputs
        bt = inputs.scenario.backtest
        f = bt.faults
        offline_per_hour = (
            f.offline_fraction / ((1.0 - f.offline_fraction) * f.offline_mean_s / 3600.0)
            if f.offline_fraction > 0
            else 0.0
        )
        grid = bt.telemetry_interval_s
        starts = inputs.series.starts
        first_event = min(inputs.decisions[0].at.timestamp(), starts[inputs.lo].timestamp())
        return FleetExecutor(
            inputs.sites,
            start_s=(math.floor(first_event / grid) - 2) * grid,
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
            dispatch=bt.dispatch,
            peak_shaving=bt.peak_shaving,
        )

    # -- the events ------------------------------------------------------------------------

    def _events(self) -> list[tuple[float, int, int, str, Any]]:
        inputs = self.inputs
        lo, hi, starts = inputs.lo, inputs.hi, inputs.series.starts
        events: list[tuple[float, int, int, str, Any]] = []

        def push(t: float, order: int, kind: str, payload: Any) -> None:
            heapq.heappush(events, (t, order, len(events), kind, payload))

        for p in range(lo, hi + 1):
            t = starts[p].timestamp() if p < len(starts) else (starts[-1] + inputs.step).timestamp()
            push(t, 0, "boundary", p)
        if self.tariffed.any():
            slot = float(inputs.scenario.backtest.peak_shaving.interval_s)
            t0 = math.ceil(starts[lo].timestamp() / slot) * slot
            t1 = (starts[hi - 1] + inputs.step).timestamp()
            for t in np.arange(t0, t1 + 1e-6, slot):
                push(float(t), 0, "meter", None)
        daily = inputs.market.product(inputs.product).gate_closure.kind == "daily"
        for k, dec in enumerate(inputs.decisions):
            push(dec.at.timestamp(), 1, "decide", k)
            if daily:
                push(dec.clears_at.timestamp(), 2, "clear", (dec.first, dec.kept))
        if not daily:
            for p in range(lo, hi):
                push(starts[p].timestamp(), 2, "clear", (p, 1))
        return events

    def run(self) -> Replay:
        """Every event in time order, then long enough for the last commands to resolve
        (acks, retries, timeouts) before they are counted."""
        events = self._events()
        executor = self.executor
        while events:
            t, _, _, kind, payload = heapq.heappop(events)
            executor.advance(t)
            if kind == "boundary":
                self._boundary(payload)
            elif kind == "meter":
                m = executor.fleet.meters
                self.bill_slots.append((t, m.grid_import.copy(), m.grid_import_without.copy()))
            elif kind == "decide":
                self._decide(payload)
            else:
                self._clear(*payload)
        d = self.inputs.scenario.backtest.dispatch
        executor.advance(executor.now + 4 * d.ack_timeout_s * d.max_attempts)
        return self

    def _boundary(self, p: int) -> None:
        meters = self.executor.fleet.meters
        stored = self.executor.fleet.soc * self.caps
        at = p - self.inputs.lo
        for g in self.groups:
            rows = self.market_rows[g]
            out, into = meters.discharged[rows].sum(), meters.charged[rows].sum()
            self.m_net[g][at] = float(out - into)
            self.m_thru[g][at] = float(out + into)
            self.m_soc[g][at] = float(stored[rows].sum() / self.caps[rows].sum())

    def _decide(self, k: int) -> None:
        inputs, name = self.inputs, self.name
        lo, hi = inputs.lo, inputs.hi
        series, starts = inputs.series, inputs.series.starts
        dec = inputs.decisions[k]
        snap = self.executor.snapshot()
        now = self.executor.clock.now()
        cutoff = len(starts) if name == "perfect" else dec.cutoff
        known = PriceSeries(
            series.name, series.currency, series.interval, starts[:cutoff], self.values[:cutoff]
        )
        horizon = list(starts[dec.first : dec.end].to_pydatetime())
        bid_window = frozenset(horizon[: dec.kept])
        current = max(lo, int(np.searchsorted(starts, pd.Timestamp(now), side="right")) - 1)
        groups_in: dict[str, GroupInput] = {}
        for g in self.groups:
            node = snap.groups.get(g)
            if node is None:
                continue
            standing: dict[datetime, Fixed] = {}
            for p in range(current, dec.first):
                if not lo <= p < hi:
                    continue
                mw = self.award[g][p - lo]
                held = self.curves_kept.get((g, p)) if np.isnan(mw) else float(mw)
                if held is not None:
                    standing[starts[p].to_pydatetime()] = held
            groups_in[g] = GroupInput(node, standing, bid_window)
        cycle_in = CycleInputs(
            now=now,
            horizon=horizon,
            kept=dec.kept,
            known=known,
            features=None if self.feats is None else self.feats.known_at(now),
            groups=groups_in,
        )
        result = self.cycle.run(cycle_in)
        if self.inspect is not None:
            self.inspect(k, cycle_in, result)
        for problem in result.problems:
            key = problem[:120]
            self.notes[key] = self.notes.get(key, 0) + 1
        view = result.view
        if view is None:
            return
        if view.note:
            self.notes[view.note] = self.notes.get(view.note, 0) + 1
            self.fallbacks[view.forecaster] = self.fallbacks.get(view.forecaster, 0) + 1
        self.fills += view.feature_fills
        at = dec.first - lo
        self.forecast[at : at + dec.kept] = view.forecast[: dec.kept]
        if view.quantiles is not None and view.levels is not None:
            n = hi - lo
            for j, lev in enumerate(view.levels):
                self.quantiles.setdefault(round(float(lev), 4), np.full(n, np.nan))[
                    at : at + dec.kept
                ] = view.quantiles[j, : dec.kept]
        submitted = []
        for g, made in sorted(result.groups.items()):
            self.highs_s += made.highs_s
            self.solve_s += made.solve_s
            self.trimmed[g] += made.mwh_trimmed
            for j, curve in enumerate(made.curves):
                p = dec.first + j
                self.planned[g][p - lo] = made.expected_mw[j]
                self.offer_mw[g][p - lo] = curve.max_discharge_mw
                self.charge_bid_mw[g][p - lo] = curve.max_charge_mw
                self.segments[g][p - lo] = len(curve.discharge) + len(curve.charge)
                self.curves_kept[(g, p)] = curve
            if made.bids:
                res = self.exchange.submit(f"{name}-{g}-d{k}", made.bids)
                self.refused += len(res.refused)
                submitted.extend(made.bids)
        if self.record_bids:
            self.bids_by_decision[k] = json.dumps(
                [b.model_dump(mode="json") for b in submitted], sort_keys=True
            ).encode()
        if self.progress is not None:
            self.progress(k + 1, len(inputs.decisions))

    def _clear(self, first: int, kept: int) -> None:
        inputs, lo, hi = self.inputs, self.inputs.lo, self.inputs.hi
        starts = inputs.series.starts
        s = starts[first].to_pydatetime()
        e = (starts[first + kept - 1] + inputs.step).to_pydatetime()
        awards = self.exchange.awards(f"awards-{self.name}-{first}", s, e)
        for a in awards:
            p = int(np.searchsorted(starts, pd.Timestamp(a.interval_start), side="left"))
            if a.group in self.award and lo <= p < hi:
                self.award[a.group][p - lo] = a.p_mw
        for g in self.groups:  # an interval bid nothing (or refused) is awarded nothing
            seg = self.award[g][first - lo : first - lo + kept]
            seg[np.isnan(seg)] = 0.0
        self.executor.add_targets(from_awards(awards))
        self.executor.settle()
