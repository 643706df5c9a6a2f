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

Commitment, not co-optimization. A tariffed site's battery is committed to its own bill:
while peak shaving runs for it, the fleet reports it as committed and the bidder offers
only the other sites (:mod:`vpp.fleet.hierarchy`); an operator can pause a site's peak
shaving to offer it to the market. The engine reserves instead of co-optimizing the two
uses (value stacking) because the demand charge is set by the month's single highest
import: a market award that empties the battery an hour before the site's peak can cost a
month of demand charges, a risk a per-interval market price does not carry, and the site
owner — not the market operator — bears it. Co-optimization needs the site's load
uncertainty inside the market model and a settlement split between owner and aggregator;
until both exist, a clean reservation keeps every kW committed once and the owner whole.

Unattended, :class:`PeakShaver` does this for every site whose registry record carries a
tariff: it samples each site's net load into a time-of-day profile (:class:`LoadProfiles`),
tracks the billing month's peak import, and re-plans every ``replan_every_s`` over the
next ``horizon_intervals`` from the live SoC, handing the first
``dispatch_ahead_intervals`` to dispatch (the rest is re-planned before it starts).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from optimizer.peak_model import PeakInputs, PeakPlan, SiteBattery, peak_model
from optimizer.report import InfeasibleInputError
from vpp.config import PeakShavingSettings
from vpp.dispatch.targets import GroupTarget, dispatch_id
from vpp.logs import ctx
from vpp.records import utc_iso
from vpp.store import peak_schedules
from vpp.store.keys import SYSTEM, Principal
from vpp.twins.registry import Tariff
from vpp.twins.states import Connectivity
from vpp.twins.store import FleetStore

if TYPE_CHECKING:  # dispatch imports this module's settings; typed, not imported
    from vpp.dispatch.service import DispatchService

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
SOURCE = "peak_shaving"
_SOLVE_LOCK = threading.Lock()  # the shared models are not thread-safe


def tou_prices(tariff: Tariff, starts: list[datetime]) -> F64:
    """Import price per kWh for each interval start in the tariff's local time: the sum of
    the periods that apply (at most one: a registry tariff's periods may not overlap, see
    :class:`vpp.twins.registry.Tariff`), 0 where none does — DER-VET's meaning of a list
    of billing periods (:mod:`market.tariffs`)."""
    zone = ZoneInfo(tariff.timezone)
    local = pd.DatetimeIndex([s.astimezone(zone) for s in starts])
    prices = np.zeros(len(starts))
    if not len(starts):
        return prices
    month = local.month.to_numpy()
    weekday = local.day_of_week.to_numpy()
    hour = local.hour.to_numpy()
    for period in tariff.tou:
        applies = (
            np.isin(hour, period.hours)
            & np.isin(weekday, period.weekdays)
            & np.isin(month, period.months)
        )
        prices += np.where(applies, period.price_per_kwh, 0.0)
    return prices


@dataclass(frozen=True, slots=True)
class SitePlan:
    site_id: str
    starts: list[datetime]
    interval_s: int
    plan: PeakPlan
    import_price_per_kwh: F64
    capacity_kwh: float

    def targets(self) -> list[GroupTarget]:
        """One site target per interval (+ discharge)."""
        step = timedelta(seconds=self.interval_s)
        return [
            GroupTarget(
                dispatch_id=dispatch_id(self.site_id, s),
                group=self.site_id,
                interval_start=s,
                interval_end=s + step,
                target_kw=round(p, 3),
                source=SOURCE,
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
    return SitePlan(site_id, starts, interval_s, plan, prices, capacity_kwh)


def battery_of(store: FleetStore, i: int) -> SiteBattery:
    """The dispatchable window of the site at store row ``i``."""
    cap = float(store.capacity_kwh[i])
    return SiteBattery(
        e_min_kwh=float(store.soc_min[i]) * cap,
        e_max_kwh=float(store.soc_max[i]) * cap,
        p_charge_max_kw=float(store.p_charge_max_kw[i]),
        p_discharge_max_kw=float(store.p_discharge_max_kw[i]),
        eff_charge=float(store.eff_charge[i]),
        eff_discharge=float(store.eff_discharge[i]),
    )


def schedule_row(
    site_plan: SitePlan,
    tariff: Tariff,
    *,
    net_load_kw: F64,
    peak_so_far_kw: float,
    created_at: datetime,
    created_by: str,
) -> dict[str, Any]:
    """The stored record of a plan (``peak_schedules``)."""
    plan = site_plan.plan
    return {
        "schedule_id": str(uuid.uuid4()),
        "site_id": site_plan.site_id,
        "created_at": created_at,
        "created_by": created_by,
        "interval_start": site_plan.starts[0],
        "interval_s": site_plan.interval_s,
        "intervals": len(site_plan.starts),
        "currency": tariff.currency,
        "demand_charge_per_kw": tariff.demand_charge_per_kw,
        "peak_so_far_kw": peak_so_far_kw,
        "peak_without_kw": plan.peak_without_kw,
        "peak_kw": plan.peak_kw,
        "cost_without": plan.cost_without,
        "cost": plan.cost,
        "solve_s": plan.solve_s,
        "net_load_kw": [float(x) for x in net_load_kw],
        "p_kw": plan.p_kw.round(3).tolist(),
        "grid_kw": plan.grid_kw.round(3).tolist(),
        "import_price_per_kwh": site_plan.import_price_per_kwh.tolist(),
        "soc": (plan.e_kwh / site_plan.capacity_kwh).round(4).tolist()
        if site_plan.capacity_kwh > 0
        else None,
    }


class LoadProfiles:
    """Each site's net load (load − PV, kW) by time-of-day slot, and its month's peak import.

    ``sample`` is vectorized over the fleet: for every site with a metered load it moves
    the current slot's mean towards the reading by weight ``w`` (``m ← m + w·(x − m)``, the
    first sample sets it), and raises the month's peak import (load − PV − battery) when
    exceeded. A forecast is the profile rolled to the horizon's start; a slot with no
    sample yet takes the site's latest reading (persistence). Slots are UTC times of day;
    the billing month is the UTC month.
    """

    def __init__(self, interval_s: int, weight: float) -> None:
        self.interval_s = interval_s
        self.slots = 86_400 // interval_s
        self.weight = weight
        self.mean_kw = np.full((0, self.slots), np.nan)
        self.latest_kw = np.full(0, np.nan)
        self.peak_kw = np.zeros(0)
        self.first_s = np.full(0, np.nan)  # when each site was first sampled
        self._month: int | None = None

    def _grow(self, n: int) -> None:
        if self.mean_kw.shape[0] >= n:
            return
        extra = n - self.mean_kw.shape[0]
        self.mean_kw = np.vstack([self.mean_kw, np.full((extra, self.slots), np.nan)])
        self.latest_kw = np.concatenate([self.latest_kw, np.full(extra, np.nan)])
        self.peak_kw = np.concatenate([self.peak_kw, np.zeros(extra)])
        self.first_s = np.concatenate([self.first_s, np.full(extra, np.nan)])

    def history_s(self, row: int, now: float) -> float:
        """How long the site's profile has been learning (0 if never sampled)."""
        if row >= self.first_s.size or np.isnan(self.first_s[row]):
            return 0.0
        return float(now - self.first_s[row])

    def sample(self, store: FleetStore, now: float) -> int:
        """Fold the twins' current load readings in; returns the sites sampled."""
        n = store.n
        self._grow(n)
        moment = datetime.fromtimestamp(now, UTC)
        month = moment.year * 12 + moment.month
        if month != self._month:
            self.peak_kw[:] = 0.0
            self._month = month
        load = store.site_load_kw[:n]
        fresh = np.isfinite(load) & store.active[:n] & (store.conn[:n] == Connectivity.ONLINE)
        rows = np.flatnonzero(fresh)
        if not rows.size:
            return 0
        net = load[rows] - np.nan_to_num(store.pv_kw[rows], nan=0.0)
        grid = net - store.p_kw[rows]
        slot = int(now % 86_400) // self.interval_s
        old = self.mean_kw[rows, slot]
        self.mean_kw[rows, slot] = np.where(np.isnan(old), net, old + self.weight * (net - old))
        self.latest_kw[rows] = net
        self.peak_kw[rows] = np.maximum(self.peak_kw[rows], grid)
        first = self.first_s[rows]
        self.first_s[rows] = np.where(np.isnan(first), now, first)
        return int(rows.size)

    def forecast(self, row: int, start: datetime, horizon: int) -> F64 | None:
        """Net load per interval from ``start``; None when the site was never sampled."""
        if row >= self.latest_kw.size or np.isnan(self.latest_kw[row]):
            return None
        first = int(start.timestamp() % 86_400) // self.interval_s
        slots = (first + np.arange(horizon)) % self.slots
        out = self.mean_kw[row, slots]
        return np.where(np.isnan(out), self.latest_kw[row], out)


class PeakShaver:
    """A :class:`vpp.runtime.Component`: the unattended re-planning loop (jobs on the
    scheduler call :meth:`sample` and :meth:`replan`)."""

    name = "peak_shaving"

    def __init__(
        self,
        settings: PeakShavingSettings,
        db: sa.Engine | None,
        store: Callable[[], FleetStore | None],
        dispatch: DispatchService | None,
        *,
        clock: Callable[[], float] = time.time,
        principal: Principal = SYSTEM,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.dispatch = dispatch
        self.clock = clock
        self.principal = principal
        self.profiles = LoadProfiles(settings.interval_s, settings.profile_weight)
        self.paused: dict[str, dict[str, Any]] = {}  # site -> who paused it, when, why
        self.planned: dict[str, dict[str, Any]] = {}  # site -> summary of its latest plan
        self.skipped: dict[str, str] = {}  # site -> why it was not planned last time

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def sample(self) -> None:
        store = self.store()
        if store is not None:
            self.profiles.sample(store, self.clock())

    def plan_all(self, now: float) -> list[tuple[SitePlan, dict[str, Any]]]:
        """Plan every tariffed, online site from its live SoC (blocking: the solves run
        here). Returns each plan with its stored record; sites not planned are in
        :attr:`skipped` with the reason."""
        store = self.store()
        if store is None:
            return []
        cfg = self.settings
        step = cfg.interval_s
        start = datetime.fromtimestamp((int(now) // step + 1) * step, UTC)
        self.skipped = {}
        out = []
        for site_id, tariff in list(store.tariffs.items()):
            i = store.index.get(site_id)
            if i is None or not store.active[i]:
                continue
            if site_id in self.paused:
                self.skipped[site_id] = f"paused by {self.paused[site_id]['by']}"
                continue
            forecast = self.profiles.forecast(i, start, cfg.horizon_intervals)
            soc = float(store.soc[i])
            if store.conn[i] != Connectivity.ONLINE or forecast is None or np.isnan(soc):
                self.skipped[site_id] = "no fresh telemetry"
                continue
            learned = self.profiles.history_s(i, now)
            if learned < cfg.min_history_s:
                # a cold start: the profile and the month's peak so far are not known well
                # enough to shave against; the battery is left to the site until they are
                self.skipped[site_id] = (
                    f"learning the load profile ({learned / 3600:.1f} h of "
                    f"{cfg.min_history_s / 3600:.1f} h)"
                )
                continue
            peak = float(self.profiles.peak_kw[i])
            try:
                site_plan = plan_site(
                    site_id,
                    battery_of(store, i),
                    tariff,
                    interval_start=start,
                    interval_s=step,
                    net_load_kw=forecast,
                    soc=soc,
                    capacity_kwh=float(store.capacity_kwh[i]),
                    peak_so_far_kw=peak,
                    degradation_per_kwh=cfg.degradation_per_kwh,
                )
            except InfeasibleInputError as exc:
                self.skipped[site_id] = str(exc)
                log.warning("peak shaving %s: %s", site_id, exc, extra=ctx(site_id=site_id))
                continue
            row = schedule_row(
                site_plan,
                tariff,
                net_load_kw=forecast,
                peak_so_far_kw=peak,
                created_at=datetime.fromtimestamp(now, UTC),
                created_by=self.principal.actor,
            )
            out.append((site_plan, row))
        return out

    def committed_sites(self) -> list[str]:
        """Sites whose battery is committed to peak shaving (tariffed, not paused)."""
        store = self.store()
        if store is None:
            return []
        return [s for s in store.tariffs if s not in self.paused]

    def pause(self, site_id: str, by: str, reason: str, now: float) -> None:
        """Stop planning ``site_id`` (its battery returns to the market) until resumed."""
        self.paused[site_id] = {
            "by": by,
            "reason": reason,
            "since": utc_iso(datetime.fromtimestamp(now, UTC)),
        }

    def resume(self, site_id: str) -> bool:
        return self.paused.pop(site_id, None) is not None

    def dispatchable(self, site_plan: SitePlan) -> list[GroupTarget]:
        """The plan's first ``dispatch_ahead_intervals`` as site targets."""
        return site_plan.targets()[: self.settings.dispatch_ahead_intervals]

    def planned_site(self, site_id: str, row: dict[str, Any]) -> None:
        self.planned[site_id] = {
            k: row[k] for k in ("schedule_id", "interval_start", "peak_without_kw", "peak_kw")
        }

    async def replan(self) -> int:
        """Plan every tariffed, online site; returns how many plans were dispatched.

        Needs the dispatch service; a backtest (no service) applies :meth:`plan_all` to its
        own dispatch core at simulated instants instead."""
        if self.dispatch is None:
            raise RuntimeError("replan needs a dispatch service")
        now = self.clock()
        done = 0
        for site_plan, row in await asyncio.to_thread(self.plan_all, now):
            site_id = site_plan.site_id
            targets = self.dispatchable(site_plan)
            blocking = self.dispatch.conflicts(targets)
            if blocking:
                self.skipped[site_id] = f"{blocking[0].source} target in the way"
                continue
            if self.db is not None:
                await asyncio.to_thread(peak_schedules.insert, self.db, row, self.principal)
            self.dispatch.replace_targets(targets)  # stored first, then acted upon
            self.planned_site(site_id, row)
            done += 1
        return done

    def site_state(self, site_id: str) -> dict[str, Any]:
        """One site's peak shaving now: planned, paused (by whom, since when, why) or
        skipped (why), and its latest plan's summary."""
        paused = self.paused.get(site_id)
        if paused is not None:
            state, reason = "paused", paused["reason"]
        elif site_id in self.skipped:
            state, reason = "skipped", self.skipped[site_id]
        else:
            state, reason = "planned", None
        return {
            "site_id": site_id,
            "state": state,
            "reason": reason,
            "paused_by": paused["by"] if paused else None,
            "paused_since": paused["since"] if paused else None,
            "latest": self.planned.get(site_id),
        }

    def month_peak_kw(self, row: int) -> float | None:
        """The site's highest import so far this billing month (kW), as the planner shaves
        against it; None before the site's first reading."""
        if row >= self.profiles.peak_kw.size:
            return None
        return float(self.profiles.peak_kw[row])

    def status(self) -> dict[str, Any]:
        cut = sum(p["peak_without_kw"] - p["peak_kw"] for p in self.planned.values())
        line = f"{len(self.planned)} sites planned, peak cut {cut:.0f} kW"
        if self.skipped:
            line += f", {len(self.skipped)} skipped"
        return {"line": line, "sites": len(self.planned), "skipped": dict(self.skipped)}
