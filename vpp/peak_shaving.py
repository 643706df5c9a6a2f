"""Peak-shaving schedules: one site's load forecast and tariff -> per-interval targets.

The plan comes from :class:`optimizer.peak_model.PeakShavingModel` (demand charge above
the month's peak so far + time-of-use energy − export + degradation, minimised over the
site's battery). Each planned interval becomes a site-level
:class:`~vpp.dispatch.targets.GroupTarget` (``group`` = the site's id, source
``peak_shaving``) that dispatch tracks like any other target: commands, acks, retries,
re-dispatch and delivery.

Time-of-use prices are looked up in the tariff's own zone per interval start (so a
daylight-saving change moves the peak window with local time); an interval no period
covers costs nothing for energy, only for demand. Exported energy earns at most the import
price of its interval (the model's exactness condition).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from optimizer.peak_model import PeakInputs, PeakPlan, SiteBattery, peak_model
from vpp.dispatch.targets import GroupTarget, dispatch_id
from vpp.twins.registry import Tariff

F64 = npt.NDArray[np.float64]
SOURCE = "peak_shaving"
_SOLVE_LOCK = threading.Lock()  # the shared models are not thread-safe


def tou_prices(tariff: Tariff, starts: list[datetime]) -> F64:
    """Import price per kWh for each interval start (first matching period wins)."""
    zone = ZoneInfo(tariff.timezone)
    prices = np.zeros(len(starts))
    for i, start in enumerate(starts):
        local = start.astimezone(zone)
        for period in tariff.tou:
            if local.hour in period.hours and local.weekday() in period.weekdays:
                prices[i] = period.price_per_kwh
                break
    return prices


@dataclass(frozen=True, slots=True)
class SitePlan:
    site_id: str
    starts: list[datetime]
    interval_s: int
    plan: PeakPlan
    import_price_per_kwh: F64

    def targets(self) -> list[GroupTarget]:
        """One site target per interval (+ discharge)."""
        step = timedelta(seconds=self.interval_s)
        return [
            GroupTarget(
                dispatch_id(self.site_id, s), self.site_id, s, s + step, round(p, 3), 0, 0, SOURCE
            )
            for s, p in zip(self.starts, self.plan.p_kw.tolist(), strict=True)
        ]


def plan_site(
    site_id: str,
    battery: SiteBattery,
    tariff: Tariff,
    *,
    interval_start: datetime,
    interval_s: int,
    net_load_kw: F64,
    soc: float,
    capacity_kwh: float,
    peak_so_far_kw: float = 0.0,
    export_price_per_kwh: float = 0.0,
    degradation_per_kwh: float = 0.0,
) -> SitePlan:
    """Solve the site's plan over ``len(net_load_kw)`` intervals from ``interval_start``."""
    horizon = len(net_load_kw)
    step = timedelta(seconds=interval_s)
    starts = [interval_start + k * step for k in range(horizon)]
    prices = tou_prices(tariff, starts)
    inputs = PeakInputs(
        interval_h=interval_s / 3600.0,
        net_load_kw=np.asarray(net_load_kw, dtype=np.float64),
        import_price_per_kwh=prices,
        export_price_per_kwh=np.minimum(prices, export_price_per_kwh),
        demand_charge_per_kw=tariff.demand_charge_per_kw,
        # Telemetry can sit just outside the dispatchable window (a full battery above
        # soc_max): the plan starts from the nearest energy dispatch may use.
        e0_kwh=min(max(soc * capacity_kwh, battery.e_min_kwh), battery.e_max_kwh),
        peak_so_far_kw=peak_so_far_kw,
        degradation_per_kwh=degradation_per_kwh,
    )
    with _SOLVE_LOCK:
        plan = peak_model(horizon).solve(battery, inputs)
    return SitePlan(site_id, starts, interval_s, plan, prices)
