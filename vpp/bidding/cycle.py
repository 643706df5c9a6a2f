"""One bid cycle: the engine's market decision as a pure, synchronous function.

The running engine (:class:`vpp.bidding.bidder.Bidder`) and ``vpp backtest``
(:mod:`vpp.backtest.runner`) both call :meth:`BidCycle.run`; each only assembles its
inputs (the engine from its stores and feeds, the backtest from its simulated clock and
market) and does something with the bids (the engine stores them as drafts for review,
the backtest submits them to its simulated market). Everything that decides what is bid
lives here, once:

1. **The forecast** of the horizon from the prices and features published by ``now``
   (:meth:`vpp.bidding.strategies.Strategy.prices`), one per cycle for every group.
2. **Sizing.** Each group is one battery sized to its *free* capacity (sites committed to
   peak shaving or site targets are not offered) at the availability quantile, with the
   backup reserve kept back (:func:`vpp.aggregate.battery_from_node`).
3. **Promised energy.** The snapshot measures stored energy now; the intervals between now
   and the first interval of the horizon carry it forward through what the group stands
   committed to there (:func:`carry_forward`): an award moves it exactly, a live curve not
   cleared yet by anything between "nothing clears" and "all of it clears". The plan starts
   from the lowest outcome ``E_lo`` and its ceiling is lowered by the spread
   ``E_hi − E_lo``, so any outcome keeps the plan inside the battery's limits.
   Intervals of the horizon the group already holds (a standing bid or an award) are fixed
   in the model at what they clear (:meth:`Strategy.plan`, ``fixed``); a held interval with
   nothing standing delivers nothing.
4. **The market's minimum quantity**: a group whose free power is below it bids nothing
   (and says why).
5. **Day bands** (fixed-band markets): the first cycle to reach a trading day fixes its
   bands in the :class:`BandBook`; every later curve of the day snaps to them.
6. **Deliverability on the quantity step** (:func:`optimizer.curves.deliverable`): the
   conformed (and snapped) curves are re-checked on their extreme paths from
   ``[E_lo, E_hi]``, standing curves included and never changed, and trimmed where a
   combination of awards would be undeliverable (quantities only: prices stay on the
   bands).

The result is the bids per group (only for intervals not held yet, and never an empty
curve) and the solve report an operator reviews.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.bids import Bid, BidCurve, PriceBands, Side
from market.definitions import MarketDefinition, Product
from market.features import FeatureSet
from market.forecasts import ForecastError
from market.prices import PriceSeries
from optimizer.curves import deliverable, fix_day_bands, self_schedule, snap_curve
from optimizer.inputs import BatteryAggregate
from optimizer.report import InfeasibleInputError
from vpp.aggregate import battery_from_node
from vpp.bidding.strategies import Fixed, PriceView, Strategy
from vpp.fleet.hierarchy import NodeAggregate
from vpp.records import utc_iso

F64 = npt.NDArray[np.float64]


class BandBook(Protocol):
    """Where a trading day's fixed price bands live (the bid store in the engine, a dict in
    a backtest): the first writer's bands win."""

    def bands_of(self, market: str, group: str, product: str, day: date) -> PriceBands | None: ...

    def fix_bands(
        self, market: str, group: str, product: str, day: date, bands: PriceBands
    ) -> PriceBands: ...


class MemoryBands:
    """A :class:`BandBook` in memory (backtests)."""

    def __init__(self) -> None:
        self.days: dict[tuple[str, str, str, date], PriceBands] = {}

    def bands_of(self, market: str, group: str, product: str, day: date) -> PriceBands | None:
        return self.days.get((market, group, product, day))

    def fix_bands(
        self, market: str, group: str, product: str, day: date, bands: PriceBands
    ) -> PriceBands:
        return self.days.setdefault((market, group, product, day), bands)


@dataclass(frozen=True)
class CycleSettings:
    quantile: float = 0.9  # size to P50 (0.5) or P90 (0.9) availability
    backup_reserve_fraction: float = 0.0  # share of the free energy kept back


@dataclass(frozen=True)
class GroupInput:
    """One group at the decision: its aggregate now, what it stands committed to from the
    current interval on (interval start → awarded net MW, or a live curve), and the
    intervals of the bid window it does not hold yet."""

    node: NodeAggregate
    standing: Mapping[datetime, Fixed]
    fresh: frozenset[datetime]


@dataclass(frozen=True)
class CycleInputs:
    now: datetime
    horizon: Sequence[datetime]  # interval starts optimised; the first ``kept`` are bid
    kept: int
    known: PriceSeries  # prices published by ``now`` only
    features: FeatureSet | None  # features as published by ``now`` (later ones unknown)
    groups: Mapping[str, GroupInput]


@dataclass
class GroupBids:
    group: str
    bids: list[Bid]
    curves: list[BidCurve]  # one per bid interval (held and empty ones included)
    expected_mw: F64
    battery: BatteryAggregate
    report: dict[str, Any]
    highs_s: float = 0.0
    solve_s: float = 0.0
    mwh_trimmed: float = 0.0


@dataclass
class CycleResult:
    view: PriceView | None
    groups: dict[str, GroupBids] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def bids(self) -> list[Bid]:
        return [b for g in sorted(self.groups) for b in self.groups[g].bids]


def carry_forward(
    e_now_mwh: float,
    standing: Mapping[datetime, Fixed],
    now: datetime,
    until: datetime,
    step: timedelta,
    battery: BatteryAggregate,
    floor: float,
    cap: float,
) -> tuple[float, float]:
    """Stored energy at ``until`` from ``e_now_mwh`` at ``now``: the lowest and highest
    outcome of what stands in the intervals between (the interval under way counts for
    its remaining share). An award moves both bounds alike; a live curve moves them along
    its extreme paths (:func:`optimizer.curves.extreme_paths`): the low bound loses every
    offer and gains only the charge bids priced at the cap (they clear whatever the
    price), the high bound the other way round."""
    eta_c, eta_d = battery.eff_charge, battery.eff_discharge
    h = step.total_seconds() / 3600
    lo = hi = e_now_mwh
    for start, f in sorted(standing.items()):
        end = start + step
        if end <= now or start >= until or f is None:
            continue
        share = min(1.0, (end - max(now, start)) / step) * h
        if isinstance(f, BidCurve):
            taking_ch = sum(s.quantity_mw for s in f.charge if s.price_per_mwh >= cap)
            taking_dis = sum(s.quantity_mw for s in f.discharge if s.price_per_mwh <= floor)
            lo += (taking_ch * eta_c - f.max_discharge_mw / eta_d) * share
            hi += (f.max_charge_mw * eta_c - taking_dis / eta_d) * share
        else:
            delta = (max(-f, 0.0) * eta_c - max(f, 0.0) / eta_d) * share
            lo += delta
            hi += delta
        lo = min(max(lo, battery.e_min_mwh), battery.e_max_mwh)
        hi = min(max(hi, battery.e_min_mwh), battery.e_max_mwh)
    return lo, hi


def _curve_of(f: Fixed, market: MarketDefinition, product: Product) -> BidCurve:
    if isinstance(f, BidCurve):
        return f
    mw = 0.0 if f is None else float(f)
    return self_schedule(max(mw, 0.0), max(-mw, 0.0), market, product)


class BidCycle:
    """The decision of one bid cycle (see the module docstring)."""

    def __init__(
        self,
        market: MarketDefinition,
        product: Product,
        strategy: Strategy,
        settings: CycleSettings,
        bands: BandBook | None = None,
    ) -> None:
        self.market = market
        self.product = product
        self.strategy = strategy
        self.settings = settings
        self.bands: BandBook = bands if bands is not None else MemoryBands()
        self.step = market.interval(product)

    def bid_id(self, group: str, start: datetime) -> str:
        return f"{group}-{self.product.value}-{start:%Y%m%dT%H%MZ}"

    def forecast(self, inputs: CycleInputs) -> PriceView:
        return self.strategy.prices(inputs.known, pd.DatetimeIndex(inputs.horizon), inputs.features)

    def run(self, inputs: CycleInputs, view: PriceView | None = None) -> CycleResult:
        """The bids and reports of every group (``view``: a forecast already made for
        these inputs)."""
        if not any(g.fresh for g in inputs.groups.values()):
            return CycleResult(view)
        if view is None:
            try:
                view = self.forecast(inputs)
            except ForecastError as exc:
                return CycleResult(None, problems=[f"no forecast: {exc}"])
        out = CycleResult(view)
        for group in sorted(inputs.groups):
            g = inputs.groups[group]
            if not g.fresh:
                continue
            try:
                made = self._group(group, g, inputs, view)
            except InfeasibleInputError as exc:
                out.problems.append(f"{group}: infeasible: {exc}")
                continue
            if isinstance(made, str):
                out.problems.append(made)
            else:
                out.groups[group] = made
        return out

    def _battery(self, group: str, node: NodeAggregate) -> BatteryAggregate | str:
        eta_c, eta_d = node.eta_charge, node.eta_discharge
        reserve_kwh = self.settings.backup_reserve_fraction * (
            node.free.e_discharge_kwh.lower / eta_d
        )
        battery = battery_from_node(
            node,
            eff_charge=eta_c,
            eff_discharge=eta_d,
            quantile=self.settings.quantile,
            backup_reserve_kwh=reserve_kwh,
        )
        if battery.p_discharge_max_mw <= 0 and battery.p_charge_max_mw <= 0:
            return f"{group}: no free power to offer"
        smallest = self.market.curve.min_quantity_mw
        if max(battery.p_discharge_max_mw, battery.p_charge_max_mw) < smallest:
            return (
                f"{group}: free power at P{round(self.settings.quantile * 100)} "
                f"{battery.p_discharge_max_mw * 1000:.0f} kW out, "
                f"{battery.p_charge_max_mw * 1000:.0f} kW in is below "
                f"{self.market.market_id}'s smallest bid ({smallest * 1000:.0f} kW)"
            )
        return battery

    def _group(
        self, group: str, g: GroupInput, inputs: CycleInputs, view: PriceView
    ) -> GroupBids | str:
        sized = self._battery(group, g.node)
        if isinstance(sized, str):
            return sized
        horizon = list(inputs.horizon)
        bid = horizon[: inputs.kept]
        floor, cap = self.market.price_limits(self.product)
        e_lo, e_hi = carry_forward(
            sized.e_initial_mwh, g.standing, inputs.now, horizon[0], self.step, sized, floor, cap
        )
        battery = BatteryAggregate(
            e_min_mwh=sized.e_min_mwh,
            e_max_mwh=max(sized.e_max_mwh - (e_hi - e_lo), e_lo),
            e_initial_mwh=e_lo,
            p_charge_max_mw=sized.p_charge_max_mw,
            p_discharge_max_mw=sized.p_discharge_max_mw,
            eff_charge=sized.eff_charge,
            eff_discharge=sized.eff_discharge,
        )
        # the bid window: a held interval delivers what stands there (nothing if nothing
        # does); past it, the look-ahead is free unless something stands there already
        fixed: list[Fixed] = [
            None if s in g.fresh else g.standing.get(s, 0.0 if k < inputs.kept else None)
            for k, s in enumerate(horizon)
        ]
        interval_h = self.step.total_seconds() / 3600
        plan = self.strategy.plan(
            view,
            battery,
            interval_h,
            inputs.kept,
            fixed if any(f is not None for f in fixed) else None,
        )
        curves = [
            plan.curves[k] if s in g.fresh else _curve_of(fixed[k], self.market, self.product)
            for k, s in enumerate(bid)
        ]
        curves, bands_used = self._on_day_bands(group, bid, curves, g.fresh)
        curves, trimmed = deliverable(
            curves,
            e_low_mwh=e_lo,
            e_high_mwh=e_hi,
            e_min_mwh=sized.e_min_mwh,
            e_max_mwh=sized.e_max_mwh,
            interval_h=interval_h,
            eff_charge=battery.eff_charge,
            eff_discharge=battery.eff_discharge,
            market=self.market,
            product=self.product,
            locked=[s not in g.fresh for s in bid],
        )
        bids = [
            Bid(
                bid_id=self.bid_id(group, s),
                market=self.market.market_id,
                group=group,
                product=self.product,
                interval_start=s,
                interval_end=s + self.step,
                curve=c,
            )
            for s, c in zip(bid, curves, strict=True)
            if s in g.fresh and (c.discharge or c.charge)
        ]
        expected = np.array(
            [float(plan.expected_mw[k]) if s in g.fresh else np.nan for k, s in enumerate(bid)]
        )
        report = self._report(group, g.node, battery, view, plan.report, bid, bands_used)
        report["trimmed_mwh"] = round(trimmed, 6)
        report["energy_carried_mwh"] = {"low": round(e_lo, 6), "high": round(e_hi, 6)}
        return GroupBids(
            group, bids, curves, expected, battery, report, plan.highs_s, plan.solve_s, trimmed
        )

    def _report(
        self,
        group: str,
        node: NodeAggregate,
        battery: BatteryAggregate,
        view: PriceView,
        plan_report: dict[str, Any],
        bid: list[datetime],
        bands_used: dict[str, dict[str, list[float]]],
    ) -> dict[str, Any]:
        prices = view.scenarios if view.scenarios is not None else view.forecast[None, :]
        report = dict(plan_report)
        report.update(
            {
                "group": group,
                "battery": asdict(battery),
                "quantile": self.settings.quantile,
                "strategy": self.strategy.name,
                "forecast": view.forecaster,
                "forecast_note": view.note,
                "feature_fills": view.feature_fills,
                "scenario_prices": {
                    "min": float(prices.min()),
                    "median": float(np.median(prices)),
                    "max": float(prices.max()),
                },
                "currency": self.market.currency,
                "interval_starts": [utc_iso(s) for s in bid],
                "committed_elsewhere": {
                    "sites": node.committed.sites,
                    "p_discharge_kw": round(node.committed.p_discharge_kw.expected, 1),
                    "p_charge_kw": round(node.committed.p_charge_kw.expected, 1),
                    "e_discharge_kwh": round(node.committed.e_discharge_kwh.expected, 1),
                },
                "free": {
                    "sites": node.free.sites,
                    "p_discharge_rated_p90_kw": round(node.free.p_discharge_rated_p90_kw, 1),
                    "p_charge_rated_p90_kw": round(node.free.p_charge_rated_p90_kw, 1),
                },
                "price_bands": bands_used,
                "expected_revenue": round(
                    sum(i["revenue_expected"] for i in plan_report.get("intervals", [])), 2
                ),
            }
        )
        return report

    def _on_day_bands(
        self,
        group: str,
        starts: list[datetime],
        curves: list[BidCurve],
        fresh: frozenset[datetime],
    ) -> tuple[list[BidCurve], dict[str, dict[str, list[float]]]]:
        """Fixed-band markets (AEMO-like): every curve on its trading day's band prices.

        The day's bands are chosen from the curves of the group's first bid cycle that
        reaches the day (:func:`optimizer.curves.fix_day_bands`: quantity-weighted price
        quantiles per side) and stored; every later cycle of that day snaps its curves to
        them, offers up and charge bids down, so nothing trades at a price its curve did not
        accept. The trade-off: bands chosen from the first hour's curves fit the rest of the
        day less well than bands chosen from the whole day's plan would, but a market fixes
        them at the first submission, before the rest of the day is known. Other markets'
        curves pass unchanged."""
        rules = self.market.curve
        if not rules.fixed_bands_per_trading_day:
            return curves, {}
        by_day: dict[date, list[int]] = {}
        for k, start in enumerate(starts):
            if start in fresh:
                by_day.setdefault(self.market.trading_day(start), []).append(k)
        out = list(curves)
        used: dict[str, dict[str, list[float]]] = {}
        market, product = self.market.market_id, self.product.value
        for day, ks in by_day.items():
            bands = self.bands.bands_of(market, group, product, day)
            if bands is None:
                chosen, _ = fix_day_bands([curves[k] for k in ks], rules.max_segments)
                bands = self.bands.fix_bands(
                    market,
                    group,
                    product,
                    day,
                    PriceBands(discharge=chosen[Side.DISCHARGE], charge=chosen[Side.CHARGE]),
                )
            for k in ks:
                out[k] = snap_curve(curves[k], bands.as_day_bands())
            used[day.isoformat()] = bands.model_dump()
        return out, used
