"""Bidding strategies: from the prices known at a decision to one bid curve per interval.

The same code bids in the running engine (:mod:`vpp.bidding.bidder`) and in backtests
(:mod:`vpp.backtest.runner`). A strategy has two steps:

1. :meth:`Strategy.prices` — the forecast of the horizon from the prices known at the
   decision (a point forecast, or comonotone price scenarios), shared by every group;
2. :meth:`Strategy.plan` — one group's battery (sized to the fleet's health) optimized on
   that forecast, read as market-conforming curves for the intervals bid.

The strategies:

- ``perfect``: the actual prices (the bound; only backtests can run it). A deterministic
  schedule submitted as price-taking bids.
- ``persistence_day``, ``persistence_week``, ``seasonal``: a point forecast
  (:func:`market.forecasts.point_forecast`), a deterministic schedule
  (:class:`optimizer.market_model.MarketModel`), submitted as price-taking bids — what a
  schedule-based tool does.
- ``scenarios`` (the engine's default): comonotone price scenarios around a point forecast
  from its own recent errors (:func:`market.forecasts.price_scenarios`), the scenario
  bidding model (:class:`optimizer.scenario_model.ScenarioBidModel`) and its monotone
  price–quantity curves: the fleet offers more the higher the price turns out.
- ``learned``: the same curves from quantile gradient boosting trained walk-forward
  (:mod:`market.learned`).

Terminal state at the end of each horizon (``terminal``): ``free`` (no value, no target),
``initial`` (end no lower than the start), a fraction ``f`` (end at least
``E_min + f·(E_max − E_min)``), or ``value`` (energy left is worth the median forecast
price times the discharge efficiency — the running engine's choice for its short horizon).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.bids import BidCurve
from market.definitions import MarketDefinition, Product
from market.forecasts import ForecastError, Method, point_forecast, price_scenarios
from market.learned import QuantileForecaster, Window
from market.prices import PriceSeries
from optimizer.curves import curve_for_interval, self_schedule
from optimizer.inputs import BatteryAggregate, MarketInputs, ScenarioInputs, Terminal
from optimizer.market_model import MarketModel
from optimizer.scenario_model import ScenarioBidModel
from optimizer.solver import MIP_REL_GAP

F64 = npt.NDArray[np.float64]
StrategyName = Literal[
    "perfect", "persistence_day", "persistence_week", "seasonal", "scenarios", "learned"
]
STRATEGIES: tuple[StrategyName, ...] = (
    "perfect",
    "persistence_day",
    "persistence_week",
    "seasonal",
    "scenarios",
    "learned",
)
TerminalRule = Literal["free", "initial", "value"] | float


@dataclass(frozen=True)
class PriceView:
    """The forecast of a horizon: a point forecast and, for curve strategies, scenarios."""

    forecast: F64  # (T,) the median / point forecast
    scenarios: F64 | None = None  # (S, T) ascending per interval
    note: str | None = None  # a fallback taken, and why


@dataclass
class Plan:
    """One group's decision: a curve per bid interval and what it expects to happen."""

    curves: list[BidCurve]
    expected_mw: F64  # expected net dispatch (+ discharge) of each bid interval
    report: dict[str, Any] = field(default_factory=dict)
    highs_s: float = 0.0
    solve_s: float = 0.0


def interval_outlook(prices: F64, net_mw: F64, interval_h: float) -> list[dict[str, float]]:
    """Per bid interval what an operator decides on: the forecast price's P10/P50/P90 across
    the scenarios, and the revenue the plan expects (mean, P10, P90 across scenarios; each
    scenario's dispatch at its own price)."""
    revenue = prices * net_mw * interval_h  # (S, T)
    q = np.quantile(prices, [0.1, 0.5, 0.9], axis=0)
    r = np.quantile(revenue, [0.1, 0.9], axis=0)
    mean = revenue.mean(axis=0)
    return [
        {
            "price_p10": round(float(q[0, t]), 2),
            "price_p50": round(float(q[1, t]), 2),
            "price_p90": round(float(q[2, t]), 2),
            "expected_mw": round(float(net_mw[:, t].mean()), 4),
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


class Strategy:
    """Base: the models it needs are built once per horizon length and re-solved."""

    name: StrategyName
    curves_from_scenarios = False

    def __init__(
        self,
        market: MarketDefinition,
        product: Product,
        *,
        degradation_per_mwh: float = 0.0,
        vom_per_mwh: float = 0.0,
        terminal: TerminalRule = "free",
        mip_rel_gap: float = MIP_REL_GAP,
    ) -> None:
        self.mip_rel_gap = mip_rel_gap
        self.market = market
        self.product = product
        self.degradation_per_mwh = degradation_per_mwh
        self.vom_per_mwh = vom_per_mwh
        self.terminal = terminal
        self._market_models: dict[int, MarketModel] = {}
        self._scenario_models: dict[tuple[int, int], ScenarioBidModel] = {}

    def prices(
        self, known: PriceSeries, starts: pd.DatetimeIndex, window: Window | None = None
    ) -> PriceView:
        """The forecast of ``starts`` from the known prices (``window``: the decision's
        positions in the whole series, for strategies that learn from past decisions)."""
        raise NotImplementedError

    def plan(
        self, view: PriceView, battery: BatteryAggregate, interval_h: float, kept: int
    ) -> Plan:
        if view.scenarios is not None:
            return self._plan_curves(view, battery, interval_h, kept)
        return self._plan_schedule(view, battery, interval_h, kept)

    def _plan_schedule(
        self, view: PriceView, battery: BatteryAggregate, interval_h: float, kept: int
    ) -> Plan:
        horizon = view.forecast.size
        model = self._market_models.get(horizon)
        if model is None:
            model = self._market_models[horizon] = MarketModel(
                horizon, mip_rel_gap=self.mip_rel_gap
            )
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
        )
        solve_s = time.perf_counter() - started
        curves = [
            self_schedule(float(d), float(c), self.market, self.product)
            for d, c in zip(sched.p_discharge_mw[:kept], sched.p_charge_mw[:kept], strict=True)
        ]
        expected = np.array([c.max_discharge_mw - c.max_charge_mw for c in curves])
        report = sched.report.to_dict() if sched.report else {}
        report["intervals"] = interval_outlook(
            view.forecast[None, :kept], expected[None, :], interval_h
        )
        return Plan(
            curves, expected, report, sched.report.highs_s if sched.report else 0.0, solve_s
        )

    def _plan_curves(
        self, view: PriceView, battery: BatteryAggregate, interval_h: float, kept: int
    ) -> Plan:
        assert view.scenarios is not None
        n, horizon = view.scenarios.shape
        model = self._scenario_models.get((horizon, n))
        if model is None:
            model = self._scenario_models[(horizon, n)] = ScenarioBidModel(
                horizon, n, mip_rel_gap=self.mip_rel_gap
            )
        started = time.perf_counter()
        solution = model.solve(
            battery,
            ScenarioInputs(
                interval_h=interval_h,
                energy_price=view.scenarios,
                degradation_per_mwh=self.degradation_per_mwh,
                vom_per_mwh=self.vom_per_mwh,
                terminal=terminal_for(self.terminal, battery, view.forecast),
            ),
        )
        solve_s = time.perf_counter() - started
        curves = [
            curve_for_interval(
                solution.prices[:, t],
                solution.p_discharge_mw[:, t],
                solution.p_charge_mw[:, t],
                self.market,
                self.product,
            )
            for t in range(kept)
        ]
        cleared = [c.cleared(float(p)) for c, p in zip(curves, view.forecast[:kept], strict=True)]
        expected = np.array([dis - chg for dis, chg in cleared])
        report = solution.report.to_dict()
        report["intervals"] = interval_outlook(
            view.scenarios[:, :kept],
            solution.p_discharge_mw[:, :kept] - solution.p_charge_mw[:, :kept],
            interval_h,
        )
        return Plan(curves, expected, report, solution.report.highs_s, solve_s)


class PointStrategy(Strategy):
    """A point forecast, a deterministic schedule, price-taking bids."""

    def __init__(
        self, name: StrategyName, market: MarketDefinition, product: Product, **kw: Any
    ) -> None:
        super().__init__(market, product, **kw)
        self.name = name
        self.method: Method = "perfect" if name == "perfect" else name  # type: ignore[assignment]

    def prices(
        self, known: PriceSeries, starts: pd.DatetimeIndex, window: Window | None = None
    ) -> PriceView:
        try:
            return PriceView(point_forecast(known, starts, self.method))
        except ForecastError as exc:
            if self.method == "persistence_day":
                raise
            fallback = point_forecast(known, starts, "persistence_day")
            return PriceView(fallback, note=f"{self.name}: {exc}; used persistence_day")


class ScenarioStrategy(Strategy):
    """The engine's default: comonotone scenarios from a point forecast's own errors."""

    name: StrategyName = "scenarios"

    def __init__(
        self,
        market: MarketDefinition,
        product: Product,
        *,
        base: Method = "persistence_day",
        scenarios: int = 10,
        history_days: int = 28,
        **kw: Any,
    ) -> None:
        super().__init__(market, product, **kw)
        self.base: Method = base
        self.n = scenarios
        self.history_days = history_days

    def prices(
        self, known: PriceSeries, starts: pd.DatetimeIndex, window: Window | None = None
    ) -> PriceView:
        base: Method = self.base
        note = None
        try:
            forecast = point_forecast(known, starts, base)
        except ForecastError as exc:
            base, note = "persistence_day", f"scenarios: {exc}; based on persistence_day"
            forecast = point_forecast(known, starts, base)
        sc = price_scenarios(known, starts, base, self.n, window_days=self.history_days)
        return PriceView(forecast, sc, note)


class LearnedStrategy(Strategy):
    """Quantile gradient boosting (walk-forward) → scenarios → the same curves."""

    name: StrategyName = "learned"

    def __init__(
        self,
        market: MarketDefinition,
        product: Product,
        *,
        scenarios: int = 10,
        per_day: int,
        train_days: int = 91,
        retrain_every: timedelta = timedelta(days=7),
        seed: int = 0,
        **kw: Any,
    ) -> None:
        super().__init__(market, product, **kw)
        levels = (np.arange(scenarios) + 0.5) / scenarios
        self.forecaster = QuantileForecaster(
            levels,
            per_day=per_day,
            train_days=train_days,
            retrain_every_days=max(1, round(retrain_every / timedelta(days=1))),
            seed=seed,
        )
        self.past: list[Window] = []  # the decisions taken so far: the training structure
        self._values: F64 | None = None
        self._starts: pd.DatetimeIndex | None = None

    def bind(self, values: F64, starts: pd.DatetimeIndex) -> None:
        """The whole price series by position (the forecaster reads only what a window's
        cutoff allows)."""
        self._values, self._starts = values, starts

    def prices(
        self, known: PriceSeries, starts: pd.DatetimeIndex, window: Window | None = None
    ) -> PriceView:
        if window is None or self._values is None or self._starts is None:
            raise ForecastError("the learned strategy needs the decision's window (backtests)")
        past = self.past
        self.past = [*past, window]
        if not self.forecaster.ready(window.cutoff, past):
            forecast = point_forecast(known, starts, "persistence_day")
            return PriceView(forecast, note="learned: too little history to train; persistence_day")
        sc = self.forecaster.scenarios(self._values, self._starts, window, past)
        return PriceView(np.median(sc, axis=0), sc)


def make_strategy(
    name: StrategyName,
    market: MarketDefinition,
    product: Product,
    *,
    degradation_per_mwh: float,
    terminal: TerminalRule,
    vom_per_mwh: float = 0.0,
    mip_rel_gap: float = MIP_REL_GAP,
    scenarios: int,
    history_days: int,
    base: Method,
    per_day: int,
    train_days: int,
    retrain_every: timedelta,
    seed: int,
) -> Strategy:
    common: dict[str, Any] = {
        "degradation_per_mwh": degradation_per_mwh,
        "vom_per_mwh": vom_per_mwh,
        "terminal": terminal,
        "mip_rel_gap": mip_rel_gap,
    }
    if name == "scenarios":
        return ScenarioStrategy(
            market, product, base=base, scenarios=scenarios, history_days=history_days, **common
        )
    if name == "learned":
        return LearnedStrategy(
            market,
            product,
            scenarios=scenarios,
            per_day=per_day,
            train_days=train_days,
            retrain_every=retrain_every,
            seed=seed,
            **common,
        )
    return PointStrategy(name, market, product, **common)
