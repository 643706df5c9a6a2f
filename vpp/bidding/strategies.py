"""Bidding strategies: from the prices and features known at a decision to one bid curve
per interval.

The same code bids in the running engine and in backtests — both through the one bid
cycle (:mod:`vpp.bidding.cycle`). A strategy is a *forecaster* and a way to turn its
forecast into curves:

1. :meth:`Strategy.prices` — the forecast of the horizon from what is published by the
   decision: a point forecast and, for the curve strategy, quantiles of the price;
2. :meth:`Strategy.plan` — one group's battery (sized to the fleet's health) optimised on
   that forecast, read as market-conforming curves for the intervals bid, with the
   intervals the group already bid or was awarded held as they are.

Forecasters (:data:`FORECASTERS`): ``perfect`` (the actual prices; backtests only),
``persistence_day``, ``persistence_week``, ``seasonal`` (:func:`market.forecasts.point_forecast`),
``lear`` (a LASSO per delivery slot on lagged prices and the day-ahead load, wind and
solar forecasts, :mod:`market.lear`) and ``learned`` (quantile gradient boosting on the same
information, :mod:`market.learned`). A forecaster that cannot answer (too little history,
a product it does not forecast) falls back to ``seasonal``, then ``persistence_day``; the
fallback is noted, counted and shown.

Strategies (:data:`STRATEGIES`): every forecaster's name is a **schedule** strategy — the
deterministic optimum on its point forecast (:class:`optimizer.market_model.MarketModel`),
bid price-taking, what a schedule-based tool does. ``scenarios`` is the **curve** strategy
on the forecaster ``base_forecast``:

- the forecast's distribution per interval is cut into ``n`` equally likely price buckets
  (:func:`market.forecasts.price_buckets`: edges at the ``k/n`` quantiles, each bucket's
  conditional mean price);
- the scenario model (:class:`optimizer.scenario_model.ScenarioBidModel`) plans one
  dispatch per bucket, monotone in price, maximising the expected net revenue
  ``Σ_k (1/n) Σ_t [π̄_{k,t}(P⁺_{k,t} − P⁻_{k,t}) − c_deg(P⁺+P⁻) − c_vom P⁺]Δt + v·E_{k,T}``;
- bucket ``k``'s discharge increment is offered at the bucket's lower edge and its charge
  increment bid at its upper edge (:func:`optimizer.curves.curve_for_interval`), so any
  price inside the bucket clears exactly the bucket's dispatch: each segment is priced at
  the price from which that megawatt is worth dispatching to the battery — its
  opportunity value in the model, net of degradation and O&M;
- with ``anchor`` (the default) every bucket dispatches at least the schedule of the same
  point forecast: the curve is that schedule plus options that only clear at prices
  where the model expects them to pay.

Why anchor. Any combination of awards must stay within the battery's limits; with curves
per interval that means the two extreme paths (every bucket lowest, every bucket highest)
must be feasible (:func:`optimizer.curves.extreme_paths`). Under that guarantee the
expected revenue of a set of curves depends only on each interval's *marginal* price
distribution: the joint behaviour of a day never enters (each interval's award depends on
its own price only, and the terminal value is linear in the energy left). A day-ahead
forecast's error is mostly the level of the whole day, which a schedule's spread is
immune to and a curve with absolute prices is not: measured on DE 2019, free curves on
LEAR's distribution earned 0.8 points of the bound less than LEAR's own schedule, and the
anchored curves earned at least the schedule (the backtest benchmark quotes both). The
anchor keeps the hedge's upside and removes its downside to that schedule.

Terminal state at the end of each horizon (``terminal``): ``free`` (no value, no target),
``initial`` (end no lower than the start), a fraction ``f`` (end at least
``E_min + f·(E_max − E_min)``), or ``value`` (energy left is worth the median forecast
price times the discharge efficiency — the running engine's choice for its short horizon).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.bids import BidCurve
from market.definitions import MarketDefinition, Product
from market.features import FeatureSet, fill_gaps
from market.forecasts import (
    Buckets,
    Forecast,
    ForecastError,
    Method,
    error_quantiles,
    point_forecast,
    price_buckets,
)
from market.hourly import HourlyForecaster
from market.lear import LearForecaster
from market.learned import QuantileForecaster, Window
from market.prices import PriceSeries
from optimizer.base import DispatchBounds, Simultaneous
from optimizer.curves import curve_for_interval, self_schedule
from optimizer.inputs import BatteryAggregate, MarketInputs, ScenarioInputs, Terminal
from optimizer.market_model import MarketModel
from optimizer.scenario_model import ScenarioBidModel
from optimizer.solver import MIP_REL_GAP

F64 = npt.NDArray[np.float64]
ForecasterName = Literal["persistence_day", "persistence_week", "seasonal", "lear", "learned"]
FORECASTERS: tuple[ForecasterName, ...] = (
    "persistence_day",
    "persistence_week",
    "seasonal",
    "lear",
    "learned",
)
StrategyName = Literal[
    "perfect", "persistence_day", "persistence_week", "seasonal", "lear", "learned", "scenarios"
]
STRATEGIES: tuple[StrategyName, ...] = ("perfect", *FORECASTERS, "scenarios")
TerminalRule = Literal["free", "initial", "value"] | float
# the quantile levels forecasters report (fine enough to cut into buckets)
LEVELS: F64 = np.round(np.linspace(0.025, 0.975, 39), 4)
# a standing commitment inside a plan's horizon: an awarded net MW, or a live bid's curve
Fixed = float | BidCurve | None


@dataclass(frozen=True)
class PriceView:
    """The forecast of a horizon: the point forecast, and for the curve strategy the
    quantiles it came with and the buckets cut from them."""

    forecast: F64  # (T,) the point forecast
    levels: F64 | None = None
    quantiles: F64 | None = None  # (L, T) ascending per interval
    buckets: Buckets | None = None
    note: str | None = None  # a fallback taken, and why
    feature_fills: int = 0  # feature values not published by the decision, filled
    forecaster: str = ""

    @property
    def scenarios(self) -> F64 | None:
        """Each bucket's mean price, ``(n, T)`` (the scenario model's prices)."""
        return None if self.buckets is None else self.buckets.price


@dataclass
class Plan:
    """One group's decision: a curve per bid interval and what it expects to happen."""

    curves: list[BidCurve]
    expected_mw: F64  # expected net dispatch (+ discharge) of each bid interval
    report: dict[str, Any] = field(default_factory=dict)
    highs_s: float = 0.0
    solve_s: float = 0.0


def interval_outlook(
    prices: F64, net_mw: F64, interval_h: float, probs: F64 | None = None
) -> list[dict[str, float]]:
    """Per bid interval what an operator decides on: the forecast price's P10/P50/P90
    across the scenarios, and the revenue the plan expects (mean, P10, P90 across
    scenarios; each scenario's dispatch at its own price)."""
    revenue = prices * net_mw * interval_h  # (S, T)
    q = np.quantile(prices, [0.1, 0.5, 0.9], axis=0)
    r = np.quantile(revenue, [0.1, 0.9], axis=0)
    w = np.full(prices.shape[0], 1.0 / prices.shape[0]) if probs is None else probs
    mean = (w[:, None] * revenue).sum(axis=0)
    expected = (w[:, None] * net_mw).sum(axis=0)
    return [
        {
            "price_p10": round(float(q[0, t]), 2),
            "price_p50": round(float(q[1, t]), 2),
            "price_p90": round(float(q[2, t]), 2),
            "expected_mw": round(float(expected[t]), 4),
            "revenue_expected": round(float(mean[t]), 2),
            "revenue_p10": round(float(r[0, t]), 2),
            "revenue_p90": round(float(r[1, t]), 2),
        }
        for t in range(prices.shape[1])
    ]


def terminal_for(rule: TerminalRule, battery: BatteryAggregate, forecast: F64) -> Terminal:
    if rule == "free":
        return Terminal()
    if rule == "initial":
        return Terminal(e_target_mwh=battery.e_initial_mwh)
    if rule == "value":
        return Terminal(value_per_mwh=float(np.median(forecast)) * battery.eff_discharge)
    f = float(rule)
    return Terminal(e_target_mwh=battery.e_min_mwh + f * (battery.e_max_mwh - battery.e_min_mwh))


# -- forecasters ----------------------------------------------------------------------------


class Forecaster(Protocol):
    name: str

    @property
    def lookback_days(self) -> int:
        """Days of history before the decision the forecaster reads."""
        ...

    def forecast(
        self, known: PriceSeries, feats: FeatureSet | None, starts: pd.DatetimeIndex
    ) -> Forecast: ...


class MethodForecaster:
    """A rule of thumb (:func:`market.forecasts.point_forecast`), with quantiles of its own
    recent errors by time of day when asked (:func:`market.forecasts.error_quantiles`)."""

    def __init__(self, method: Method, *, levels: F64 | None, history_days: int) -> None:
        self.name: str = method
        self.method = method
        self.levels = levels
        self.history_days = history_days

    @property
    def lookback_days(self) -> int:
        # error quantiles backcast history_days of forecasts, each reading up to 28 days
        # (the seasonal profile) before it, plus a week of slack
        return self.history_days + 28 + 8

    def forecast(
        self, known: PriceSeries, feats: FeatureSet | None, starts: pd.DatetimeIndex
    ) -> Forecast:
        point = point_forecast(known, starts, self.method)
        if self.levels is None or self.method == "perfect":
            return Forecast(point)
        q = error_quantiles(known, starts, self.method, self.levels, window_days=self.history_days)
        return Forecast(point, self.levels, q)


class GbmForecaster:
    """:class:`market.learned.QuantileForecaster` on the prices and features known at the
    decision (positions: the known prices, then the targets)."""

    name = "learned"

    def __init__(self, model: QuantileForecaster) -> None:
        self.model = model

    @property
    def lookback_days(self) -> int:
        return self.model.lookback_days

    def forecast(
        self, known: PriceSeries, feats: FeatureSet | None, starts: pd.DatetimeIndex
    ) -> Forecast:
        step = known.interval
        index = pd.date_range(known.starts[0], max(starts[-1], known.starts[-1]), freq=step)
        values = np.full(len(index), np.nan)
        values[: len(known)] = known.values
        first = int(index.get_indexer(starts[:1])[0])
        w = Window(len(known), first, first + len(starts))
        rows: F64 | None = None
        fills = 0
        if self.model.features:
            if feats is None:
                raise ForecastError(
                    f"learned needs the features {', '.join(self.model.features)}; none given"
                )
            raw = feats.select(self.model.features).on(index)
            fills = int(np.isnan(raw[:, w.first : w.end]).sum())
            rows, _ = fill_gaps(raw, self.model.per_day)
        if not self.model.fit(values, rows, index, w):
            raise ForecastError("learned: too little history to train on")
        q = self.model.quantiles(values, rows, index, w)
        levels = self.model.levels
        median = np.array([np.interp(0.5, levels, q[:, t]) for t in range(q.shape[1])])
        note = f"learned: {fills} feature values not published by the decision were filled"
        return Forecast(median, levels, q, note if fills else None, fills)


def make_forecaster(
    name: ForecasterName | Literal["perfect"],
    market: MarketDefinition,
    *,
    per_day: int,
    features: Sequence[str],
    levels: F64 | None,
    history_days: int,
    lear_windows_days: Sequence[int] = (364, 1456),
    learned_train_days: int = 728,
    learned_retrain_days: int = 28,
    seed: int = 0,
    product: Product | None = None,
) -> Forecaster:
    """The forecaster ``name``. A learned one (lear, learned) for a day-ahead product
    shorter than an hour forecasts hours and shapes the quarters (:mod:`market.hourly`):
    SDAC's quarter-hours on hourly history and hourly features."""
    if name in ("lear", "learned") and product is not None and per_day > 24:
        spec = market.product(product)
        if spec.gate_closure.kind == "daily" and 60 in spec.lengths:
            inner = make_forecaster(
                name,
                market.with_interval(product, 60),
                per_day=24,
                features=features,
                levels=levels,
                history_days=history_days,
                lear_windows_days=lear_windows_days,
                learned_train_days=learned_train_days,
                learned_retrain_days=learned_retrain_days,
                seed=seed,
            )
            return HourlyForecaster(inner, market.interval(product))
    if name == "lear":
        return LearForecaster(
            market, features=features, windows_days=lear_windows_days, levels=levels
        )
    if name == "learned":
        return GbmForecaster(
            QuantileForecaster(
                per_day=per_day,
                features=features,
                train_days=learned_train_days,
                retrain_every_days=learned_retrain_days,
                seed=seed,
            )
        )
    return MethodForecaster(name, levels=levels, history_days=history_days)


FALLBACKS: tuple[Method, ...] = ("seasonal", "persistence_day")


# -- strategies ----------------------------------------------------------------------------


class Strategy:
    """A forecaster and a way to bid it (see the module docstring). The models it needs
    are built once per horizon length and re-solved."""

    def __init__(
        self,
        name: StrategyName,
        market: MarketDefinition,
        product: Product,
        forecaster: Forecaster,
        *,
        curves: bool = False,
        buckets: int = 10,
        anchor: bool = True,
        degradation_per_mwh: float = 0.0,
        vom_per_mwh: float = 0.0,
        terminal: TerminalRule = "free",
        mip_rel_gap: float = MIP_REL_GAP,
        history_days: int = 28,
        cold: bool = True,
        simultaneous: Simultaneous = "forbid",
    ) -> None:
        self.name = name
        self.market = market
        self.product = product
        self.forecaster = forecaster
        self.curves = curves
        self.n_buckets = buckets
        self.anchor = anchor
        self.degradation_per_mwh = degradation_per_mwh
        self.vom_per_mwh = vom_per_mwh
        self.terminal = terminal
        self.mip_rel_gap = mip_rel_gap
        self.history_days = history_days
        # solve every decision from scratch: bids that depend on their inputs only (the
        # live bidder and a backtest agree; a degenerate LP has many optima and a warm
        # start picks the one nearest the last). The price: on 288-interval windows of
        # 2019 US real-time prices a cold solve took 4.2 ms against 2.6 ms warm.
        self.cold = cold
        self.simultaneous = simultaneous
        self._market_models: dict[int, MarketModel] = {}
        self._scenario_models: dict[tuple[int, int], ScenarioBidModel] = {}

    # -- the forecast ----------------------------------------------------------------------

    def prices(
        self,
        known: PriceSeries,
        starts: pd.DatetimeIndex,
        feats: FeatureSet | None = None,
    ) -> PriceView:
        """The forecast of ``starts`` from the prices (and features) known at the
        decision; a forecaster that cannot answer falls back (noted)."""
        note = None
        name = self.forecaster.name
        try:
            answer = self.forecaster.forecast(known, feats, starts)
            note = answer.note
        except ForecastError as exc:
            answer = None
            for method in FALLBACKS:
                if method == name:
                    continue
                fallback = MethodForecaster(
                    method,
                    levels=LEVELS if self.curves else None,
                    history_days=self.history_days,
                )
                try:
                    answer = fallback.forecast(known, feats, starts)
                except ForecastError:
                    continue
                note, name = f"{self.forecaster.name}: {exc}; used {method}", method
                break
            if answer is None:
                raise
        assert answer is not None
        buckets = None
        if self.curves and answer.quantiles is not None and answer.levels is not None:
            floor, cap = self.market.price_limits(self.product)
            buckets = price_buckets(answer.levels, answer.quantiles, self.n_buckets, floor, cap)
        return PriceView(
            answer.point,
            answer.levels,
            answer.quantiles,
            buckets,
            note,
            answer.feature_fills,
            name,
        )

    # -- the plan --------------------------------------------------------------------------

    def plan(
        self,
        view: PriceView,
        battery: BatteryAggregate,
        interval_h: float,
        kept: int,
        fixed: Sequence[Fixed] | None = None,
        first: int = 0,
    ) -> Plan:
        """Curves for the intervals ``[first, first + kept)`` of the view's horizon;
        ``fixed[t]`` holds an interval already awarded (net MW) or bid (its curve)."""
        if view.buckets is not None:
            return self._plan_curves(view, battery, interval_h, kept, fixed, first)
        return self._plan_schedule(view, battery, interval_h, kept, fixed, first)

    def _market_model(self, horizon: int) -> MarketModel:
        model = self._market_models.get(horizon)
        if model is None:
            model = self._market_models[horizon] = MarketModel(
                horizon, mip_rel_gap=self.mip_rel_gap
            )
            model.cold = self.cold  # bids depend on their inputs only (optimizer.base)
            model.simultaneous = self.simultaneous
        return model

    def _fixed_bounds(self, fixed: Sequence[Fixed] | None, prices: F64) -> DispatchBounds | None:
        """``prices`` (blocks, T): each block's price path; a fixed interval delivers in
        each block what its award or curve clears at that block's price."""
        if fixed is None or all(f is None for f in fixed):
            return None
        blocks, horizon = prices.shape
        nan = np.full((blocks, horizon), np.nan)
        lo_d, hi_d, lo_c, hi_c = nan.copy(), nan.copy(), nan.copy(), nan.copy()
        for t, f in enumerate(fixed):
            if f is None:
                continue
            for b in range(blocks):
                if isinstance(f, BidCurve):
                    d, c = f.cleared(float(prices[b, t]))
                else:
                    d, c = max(float(f), 0.0), max(-float(f), 0.0)
                lo_d[b, t] = hi_d[b, t] = d
                lo_c[b, t] = hi_c[b, t] = c
        return DispatchBounds(lo_d, hi_d, lo_c, hi_c)

    def _schedule(
        self,
        view: PriceView,
        battery: BatteryAggregate,
        interval_h: float,
        fixed: Sequence[Fixed] | None,
    ) -> tuple[Any, float]:
        model = self._market_model(view.forecast.size)
        started = time.perf_counter()
        sched = model.solve(
            battery,
            MarketInputs(
                interval_h=interval_h,
                energy_price=view.forecast,
                degradation_per_mwh=self.degradation_per_mwh,
                vom_per_mwh=self.vom_per_mwh,
                terminal=terminal_for(self.terminal, battery, view.forecast),
            ),
            self._fixed_bounds(fixed, view.forecast[None, :]),
        )
        return sched, time.perf_counter() - started

    def _plan_schedule(
        self,
        view: PriceView,
        battery: BatteryAggregate,
        interval_h: float,
        kept: int,
        fixed: Sequence[Fixed] | None,
        first: int,
    ) -> Plan:
        sched, solve_s = self._schedule(view, battery, interval_h, fixed)
        bid = slice(first, first + kept)
        curves = [
            self_schedule(float(d), float(c), self.market, self.product)
            for d, c in zip(sched.p_discharge_mw[bid], sched.p_charge_mw[bid], strict=True)
        ]
        expected = np.array([c.max_discharge_mw - c.max_charge_mw for c in curves])
        report = sched.report.to_dict() if sched.report else {}
        report["intervals"] = interval_outlook(
            view.forecast[None, bid], expected[None, :], interval_h
        )
        return Plan(
            curves, expected, report, sched.report.highs_s if sched.report else 0.0, solve_s
        )

    def _plan_curves(
        self,
        view: PriceView,
        battery: BatteryAggregate,
        interval_h: float,
        kept: int,
        fixed: Sequence[Fixed] | None,
        first: int,
    ) -> Plan:
        b = view.buckets
        assert b is not None
        n, horizon = b.price.shape
        # the extreme buckets meet the floor and the cap: a standing curve is evaluated
        # there, where its price-taking segments alone clear
        floor, cap = self.market.price_limits(self.product)
        edges = b.price.copy()
        edges[0], edges[-1] = floor, cap
        bounds = self._fixed_bounds(fixed, edges)
        highs_s = solve_s = 0.0
        if self.anchor:
            sched, s_s = self._schedule(view, battery, interval_h, fixed)
            solve_s += s_s
            highs_s += sched.report.highs_s if sched.report else 0.0
            nan = np.full((n, horizon), np.nan)
            if bounds is None:
                bounds = DispatchBounds(nan.copy(), nan.copy(), nan.copy(), nan.copy())
            free = np.isnan(bounds.dis_upper)
            dis_lo = np.where(free, sched.p_discharge_mw[None, :], bounds.dis_lower)
            ch_lo = np.where(free, sched.p_charge_mw[None, :], bounds.ch_lower)
            bounds = DispatchBounds(dis_lo, bounds.dis_upper, ch_lo, bounds.ch_upper)
        model = self._scenario_models.get((horizon, n))
        if model is None:
            model = self._scenario_models[(horizon, n)] = ScenarioBidModel(
                horizon, n, mip_rel_gap=self.mip_rel_gap
            )
            model.cold = self.cold
            model.simultaneous = self.simultaneous
        started = time.perf_counter()
        solution = model.solve(
            battery,
            ScenarioInputs(
                interval_h=interval_h,
                energy_price=b.price,
                degradation_per_mwh=self.degradation_per_mwh,
                vom_per_mwh=self.vom_per_mwh,
                terminal=terminal_for(self.terminal, battery, view.forecast),
                probabilities=b.prob,
            ),
            bounds,
        )
        solve_s += time.perf_counter() - started
        highs_s += solution.report.highs_s
        bid = range(first, first + kept)
        curves = [
            curve_for_interval(
                b.lower[:, t],
                solution.p_discharge_mw[:, t],
                solution.p_charge_mw[:, t],
                self.market,
                self.product,
                charge_prices=b.upper[:, t],
            )
            for t in bid
        ]
        cleared = [
            c.cleared(float(p))
            for c, p in zip(curves, view.forecast[first : first + kept], strict=True)
        ]
        expected = np.array([dis - chg for dis, chg in cleared])
        report = solution.report.to_dict()
        report["anchored_on_schedule"] = self.anchor
        report["intervals"] = interval_outlook(
            b.price[:, first : first + kept],
            solution.p_discharge_mw[:, first : first + kept]
            - solution.p_charge_mw[:, first : first + kept],
            interval_h,
            b.prob,
        )
        return Plan(curves, expected, report, highs_s, solve_s)


def make_strategy(
    name: StrategyName,
    market: MarketDefinition,
    product: Product,
    *,
    degradation_per_mwh: float,
    terminal: TerminalRule,
    vom_per_mwh: float = 0.0,
    mip_rel_gap: float = MIP_REL_GAP,
    scenarios: int = 10,
    history_days: int = 28,
    base: ForecasterName = "seasonal",
    per_day: int = 24,
    features: Sequence[str] = (),
    anchor: bool = True,
    lear_windows_days: Sequence[int] = (364, 1456),
    learned_train_days: int = 728,
    learned_retrain_days: int = 28,
    seed: int = 0,
    simultaneous: Simultaneous = "forbid",
) -> Strategy:
    """The strategy ``name`` (see the module docstring)."""
    curves = name == "scenarios"
    fname: ForecasterName | Literal["perfect"] = base if curves else name  # type: ignore[assignment]
    forecaster = make_forecaster(
        fname,
        market,
        per_day=per_day,
        features=features,
        levels=LEVELS if curves else None,
        history_days=history_days,
        lear_windows_days=lear_windows_days,
        learned_train_days=learned_train_days,
        learned_retrain_days=learned_retrain_days,
        seed=seed,
        product=product,
    )
    return Strategy(
        name,
        market,
        product,
        forecaster,
        curves=curves,
        buckets=scenarios,
        anchor=anchor,
        degradation_per_mwh=degradation_per_mwh,
        vom_per_mwh=vom_per_mwh,
        terminal=terminal,
        mip_rel_gap=mip_rel_gap,
        history_days=history_days,
        simultaneous=simultaneous,
    )
