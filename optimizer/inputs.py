"""What the optimizer needs, as plain data in market units (MW, MWh, currency/MWh).

The engine converts its fleet aggregate (kW, kWh) into a :class:`BatteryAggregate` in one
place (``vpp.bidding``); the optimizer knows nothing of twins, buses or databases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from market.definitions import Product

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BatteryAggregate:
    """One aggregate battery: a group of sites seen as a single storage unit.

    Energies are stored energy (at the cells), powers are at the grid. ``e_min_mwh`` is the
    floor dispatch may not go below (the sites' ``soc_min`` plus any backup reserve).
    """

    e_min_mwh: float
    e_max_mwh: float
    e_initial_mwh: float
    p_charge_max_mw: float
    p_discharge_max_mw: float
    eff_charge: float = 0.95
    eff_discharge: float = 0.95

    @property
    def round_trip(self) -> float:
        return self.eff_charge * self.eff_discharge


@dataclass(frozen=True, slots=True)
class Terminal:
    """End of horizon: a minimum stored energy, and/or a value per MWh left in store."""

    e_target_mwh: float | None = None
    value_per_mwh: float = 0.0


@dataclass(frozen=True)
class MarketInputs:
    """Prices and economics for one solve over ``T`` intervals of ``interval_h`` hours."""

    interval_h: float
    energy_price: F64  # (T,) currency/MWh
    reserve_price: Mapping[Product, F64] = field(default_factory=dict)  # (T,) currency/MW/h
    deployment: Mapping[Product, float] = field(default_factory=dict)  # expected fraction
    sustain_h: float = 1.0  # reserves must be sustainable this long
    degradation_per_mwh: float = 0.0  # currency per MWh of throughput
    vom_per_mwh: float = 0.0  # variable O&M, currency per MWh discharged
    terminal: Terminal = Terminal()

    @property
    def horizon(self) -> int:
        return len(self.energy_price)


@dataclass(frozen=True)
class ScenarioInputs:
    """Price scenarios for the scenario bidding model: ``(S, T)``, rows ascending."""

    interval_h: float
    energy_price: F64  # (S, T)
    degradation_per_mwh: float = 0.0
    vom_per_mwh: float = 0.0  # variable O&M, currency per MWh discharged
    terminal: Terminal = Terminal()
    probabilities: F64 | None = None  # (S,), default uniform

    @property
    def scenarios(self) -> int:
        return int(self.energy_price.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.energy_price.shape[1])
