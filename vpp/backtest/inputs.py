"""What a backtest's parts share and return: the prepared inputs of one run, one
strategy's result and the whole run's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.definitions import MarketDefinition, Product
from market.features import FeatureSet
from market.prices import PriceSeries
from vpp.decision_windows import Decision
from vpp.scenario import Scenario
from vpp.twins.registry import SiteConfig

F64 = npt.NDArray[np.float64]


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
