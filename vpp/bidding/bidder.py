"""The engine's market loop: bid, review, submit, collect awards.

Every interval the bidder looks at the intervals whose gates close at least
``review_window_s`` from now (the next ``horizon_intervals`` of them) and, for each group
of the fleet, solves the scenario bidding model:

- the group is one battery sized to its P90 deliverable power and the lower bound of its
  available energy (:func:`vpp.aggregate.battery_from_node`) — the fleet's live health,
  not its nameplate;
- prices are comonotone scenarios around a persistence (or seasonal) forecast, from the
  forecast's own errors over ``history_days`` (:func:`market.forecasts.price_scenarios`);
- energy left at the end of the horizon is valued at the median scenario price times
  the discharge efficiency, so a one-hour look-ahead does not empty the fleet.

The forecast and the curves come from :class:`vpp.bidding.strategies.ScenarioStrategy`, the
same code the backtest replays.

Each interval's monotone curve becomes a draft bid (one per group and interval, id
``<group>-<product>-<start>``) with the solve report attached; operators review them in
the API. Approved bids are submitted ``submit_before_gate_s`` before their gate through
the transaction-logged market; with ``auto_approve`` the engine approves its own
*unedited* drafts first (an operator's edit always waits for an operator's approval). At
each interval start the market's awards are read (also through the log) and stored; award
listeners (dispatch) are told.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import Counter, Gauge, Histogram

from market.adapter import LoggedMarket, SimulatedMarket
from market.bids import Bid, BidCurve, PriceBands, Side
from market.clearing import Award
from market.definitions import MarketDefinition, Product, load_market
from market.forecasts import ForecastError
from market.lifecycle import BidAction, BidStatus
from optimizer.curves import fix_day_bands, snap_curve
from optimizer.report import InfeasibleInputError
from vpp.aggregate import battery_from_node
from vpp.bidding.feed import PriceFeed
from vpp.bidding.strategies import PriceView, ScenarioStrategy
from vpp.config import BiddingSettings, ConfigError
from vpp.fleet.hierarchy import GroupsView, NodeAggregate
from vpp.leader import FencedError
from vpp.logs import ctx
from vpp.store.bids import BidError, BidFilter, BidStore
from vpp.store.keys import SYSTEM, Principal
from vpp.store.txlog import DbTxLog
from vpp.twins.store import FleetStore

# Bids that may still be (or have been) awarded: their energy is promised.
_LIVE = frozenset(
    {
        BidStatus.DRAFT,
        BidStatus.APPROVED,
        BidStatus.SUBMITTED,
        BidStatus.ACCEPTED,
        BidStatus.AWARDED,
        BidStatus.UNKNOWN,
    }
)

log = logging.getLogger(__name__)

SOLVE_SECONDS = Histogram(
    "vpp_optimizer_solve_seconds",
    "Optimizer wall time per solve",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BIDS = Gauge("vpp_bids", "Bids by status", ["status"])
SETTLED = Counter(
    "vpp_bids_settled_total", "Bids the engine closed without a market answer", ["status"]
)
RECONCILED = Counter(
    "vpp_bids_reconciled_total", "Submitted bids reconciled at start-up", ["action"]
)
# Who approves when bidding.auto_approve is on: the policy, named with its limits.
AUTO_APPROVER = Principal(
    "auto-approve",
    "engine policy bidding.auto_approve (the engine's own unedited drafts, sized to the "
    "group's free P90)",
    "operator",
)


def effective_market(settings: BiddingSettings) -> MarketDefinition:
    """The market the engine bids in: the shipped definition, with ``gate_lead_s`` in place
    of its gate for the bid product when set (a demo setting)."""
    definition = load_market(settings.market)
    product = Product(settings.product)
    spec = definition.product(product)
    if settings.gate_lead_s is None:
        return definition
    if spec.gate_closure.kind != "lead":
        raise ConfigError(
            f"bidding.gate_lead_s: {definition.market_id} {product.value} closes at a daily "
            "time, not a lead before each interval; remove the setting"
        )
    gate = spec.gate_closure.model_copy(update={"lead_minutes": settings.gate_lead_s // 60})
    if settings.gate_lead_s % 60:
        raise ConfigError("bidding.gate_lead_s must be whole minutes (a multiple of 60)")
    products = dict(definition.products)
    products[product] = spec.model_copy(update={"gate_closure": gate})
    return definition.model_copy(update={"products": products})


class Bidder:
    """A :class:`vpp.runtime.Component`; its cycles are run by the scheduler."""

    name = "bidding"

    def __init__(
        self,
        settings: BiddingSettings,
        bids: BidStore,
        market: LoggedMarket,
        feed: PriceFeed,
        fleet: Callable[[], tuple[GroupsView | None, FleetStore | None]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.bids = bids
        self.market = market
        self.definition: MarketDefinition = effective_market(settings)
        self.product = Product(settings.product)
        self.step = self.definition.interval(self.product)
        self.feed = feed
        self.fleet = fleet
        self.clock = clock
        self.award_listeners: list[Callable[[Sequence[Award]], None]] = []
        # Whether this instance leads the bidder role (vpp.leader); only the leader makes
        # bids, submits, settles and collects awards. One instance alone always leads.
        self.leading: Callable[[], bool] = lambda: True
        self.strategy = ScenarioStrategy(
            self.definition,
            self.product,
            base=settings.forecast,
            scenarios=settings.scenarios,
            history_days=settings.history_days,
            degradation_per_mwh=settings.degradation_per_mwh,
            vom_per_mwh=settings.vom_per_mwh,
            terminal="value",
        )
        self._collected: set[datetime] = set()
        self.made = 0
        self.fleet_seen = False  # a cycle has found groups to bid for
        self._cycle_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self.submitted = 0
        self.awarded = 0
        self.missed = 0
        self.unawarded = 0
        self.last_error: str | None = None
        bids.listeners.append(self._count_statuses)

    async def start(self) -> None:
        self._count_statuses()
        if self.leading():  # else when elected (take_over, called by the leadership)
            await asyncio.to_thread(self.take_over)

    def take_over(self, term: int | None = None) -> None:
        """Before a leader acts: rebuild the simulated order book and close every bid left
        ``submitted`` (by a crash, or by a predecessor deposed mid-submission) against the
        transaction log."""
        self._restore_market()
        counts = self.bids.reconcile_submitted(self.market, self.clock())
        for action, n in counts.items():
            RECONCILED.labels(action).inc(n)
        if counts.get("lose"):
            log.error(
                "%d submitted bids have an unknown outcome after a crash: check with the market",
                counts["lose"],
            )
        if counts:
            log.warning("reconciled submitted bids at start-up: %s", counts)

    def _restore_market(self) -> None:
        """A simulated market's order book survives a restart: it is rebuilt from the
        transaction log's recent submissions (a real market keeps its own)."""
        adapter, txlog = self.market.adapter, self.market.log
        if isinstance(adapter, SimulatedMarket) and isinstance(txlog, DbTxLog):
            since = self.clock() - timedelta(days=2)
            restored = adapter.restore(txlog.exchanges("submit", since))
            if restored:
                log.info("simulated market: %d accepted bids restored from the log", restored)

    async def stop(self) -> None:
        return None

    def _count_statuses(self) -> None:
        counts = self.bids.counts_by_status()
        for status in BidStatus:
            BIDS.labels(status.value).set(counts.get(status.value, 0))

    # -- the grid --------------------------------------------------------------------------

    def _align(self, t: datetime) -> datetime:
        step_s = self.step.total_seconds()
        return datetime.fromtimestamp(math.ceil(t.timestamp() / step_s) * step_s, UTC)

    def next_intervals(self, now: datetime) -> list[datetime]:
        """The intervals of the next bid: from the first whose gate is ≥ the review window
        away, ``horizon_intervals`` of them where each interval has its own gate (a lead,
        as in real time); where one daily gate closes a whole trading day (day-ahead), that
        trading day's every product at once (23, 24 or 25 hours by the market's clock), as
        the auction takes them."""
        first = self._align(now)
        lead = timedelta(seconds=self.settings.review_window_s)
        definition = self.definition
        if definition.product(self.product).gate_closure.kind == "daily":
            # one gate per trading day: jump day by day, never interval by interval
            while definition.gate_closure(self.product, first) < now + lead:
                day = definition.trading_day(first)
                first = definition.trading_day_start_utc(day + timedelta(days=1))
            end = definition.trading_day_start_utc(
                definition.trading_day(first) + timedelta(days=1)
            )
            count = int((end - first) / self.step)
            return [first + k * self.step for k in range(count)]
        while definition.gate_closure(self.product, first) < now + lead:
            first += self.step
        return [first + k * self.step for k in range(self.settings.horizon_intervals)]

    # -- bidding ---------------------------------------------------------------------------

    def bid_id(self, group: str, start: datetime) -> str:
        return f"{group}-{self.product.value}-{start:%Y%m%dT%H%MZ}"

    def make_bids(self, now: datetime | None = None) -> int:
        """One bidding cycle (blocking: solves run here); returns the new bids stored.
        Cycles run one at a time (a scheduled cycle and a new leader's catch-up may meet):
        each bids only the intervals the store does not hold yet."""
        with self._cycle_lock:
            return self._make_bids(now or self.clock())

    def _make_bids(self, now: datetime) -> int:
        snap, _ = self.fleet()  # one immutable snapshot: never the live store from here
        if snap is None or not snap.groups:
            return 0
        self.fleet_seen = True
        starts = self.next_intervals(now)
        index = pd.DatetimeIndex(starts)
        # Known prices only: the intervals that have ended by now.
        history = self.feed.series(
            starts[0] - timedelta(days=self.settings.history_days + 8),
            now - self.step + timedelta(seconds=1),
        )
        try:
            view = self.strategy.prices(history, index)
        except ForecastError as exc:
            self.last_error = str(exc)
            log.warning("no bids this cycle: %s", exc)
            return 0
        made = 0
        for group, node in sorted(snap.groups.items()):
            wanted = {self.bid_id(group, s): s for s in starts}
            fresh = set(wanted) - self.bids.existing(list(wanted))
            if not fresh:
                continue
            made += self._bid_group(group, node, starts, view, fresh)
        self.made += made
        return made

    def promised_mwh(self, group: str, until: datetime) -> tuple[float, float]:
        """Energy (MWh at the grid) the group's standing bids could still take out and put
        in: every live bid (draft to awarded) for an interval not yet over and starting
        before ``until``, each as if its whole curve cleared.

        Conservative twice over, by choice: the snapshot's energy is measured now, so an
        interval under way counts whole; and the cycle's model still plans the horizon's
        already-bid intervals (its plan there is not offered, but uses energy), so the new
        bids get less than the exact remainder. The alternative — fixing the standing
        curves' awards per scenario inside the model — is exact but not built yet."""
        now = self.clock()
        rows, _ = self.bids.list_bids(
            BidFilter(
                market=self.definition.market_id,
                group=group,
                start_from=now - self.step + timedelta(microseconds=1),
                start_to=until,
            ),
            0,
            10_000,
        )
        hours = self.step.total_seconds() / 3600
        out = inn = 0.0
        for r in rows:
            if r.status in _LIVE and r.product == self.product.value:
                out += sum(s["quantity_mw"] for s in r.discharge) * hours
                inn += sum(s["quantity_mw"] for s in r.charge) * hours
        return out, inn

    def _bid_group(
        self,
        group: str,
        node: NodeAggregate,
        starts: list[datetime],
        view: PriceView,
        fresh: set[str],
    ) -> int:
        eta_c, eta_d = node.eta_charge, node.eta_discharge
        reserve_kwh = self.settings.backup_reserve_fraction * (
            node.free.e_discharge_kwh.lower / eta_d
        )
        promised_out, promised_in = self.promised_mwh(group, starts[-1] + self.step)
        battery = battery_from_node(
            node,
            eff_charge=eta_c,
            eff_discharge=eta_d,
            quantile=self.settings.quantile,
            backup_reserve_kwh=reserve_kwh,
            promised_out_mwh=promised_out,
            promised_in_mwh=promised_in,
        )
        if battery.p_discharge_max_mw <= 0 and battery.p_charge_max_mw <= 0:
            return 0
        smallest = self.definition.curve.min_quantity_mw
        if max(battery.p_discharge_max_mw, battery.p_charge_max_mw) < smallest:
            self.last_error = (
                f"{group}: free power at P{round(self.settings.quantile * 100)} "
                f"{battery.p_discharge_max_mw * 1000:.0f} kW out, "
                f"{battery.p_charge_max_mw * 1000:.0f} kW in is below "
                f"{self.definition.market_id}'s smallest bid ({smallest * 1000:.0f} kW)"
            )
            return 0
        started = time.perf_counter()
        try:
            plan = self.strategy.plan(view, battery, self.step.total_seconds() / 3600, len(starts))
        except InfeasibleInputError as exc:
            self.last_error = f"{group}: {exc}"
            log.warning("group %s: no bids: %s", group, exc, extra=ctx(group_id=group))
            return 0
        SOLVE_SECONDS.labels("scenario").observe(time.perf_counter() - started)
        curves, bands_used = self._on_day_bands(group, starts, plan.curves)
        new = []
        for start, curve in zip(starts, curves, strict=True):
            bid_id = self.bid_id(group, start)
            if bid_id not in fresh or not (curve.discharge or curve.charge):
                continue
            new.append(
                Bid(
                    bid_id=bid_id,
                    market=self.definition.market_id,
                    group=group,
                    product=self.product,
                    interval_start=start,
                    interval_end=start + self.step,
                    curve=curve,
                )
            )
        if not new:
            return 0
        prices = view.scenarios if view.scenarios is not None else view.forecast[None, :]
        report = dict(plan.report)
        report.update(
            {
                "group": group,
                "battery": asdict(battery),
                "quantile": self.settings.quantile,
                "forecast": self.settings.forecast,
                "scenario_prices": {
                    "min": float(prices.min()),
                    "median": float(np.median(prices)),
                    "max": float(prices.max()),
                },
                "currency": self.definition.currency,
                "interval_starts": [s.isoformat() for s in starts],
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
                    sum(i["revenue_expected"] for i in plan.report.get("intervals", [])), 2
                ),
            }
        )
        solve_id = f"solve-{group}-{uuid.uuid4().hex[:12]}"
        self.bids.create(new, solve_id=solve_id, report=report, market=self.definition)
        log.info(
            "group %s: %d draft bids from %s",
            group,
            len(new),
            solve_id,
            extra=ctx(group_id=group, interval_start=new[0].interval_start),
        )
        return len(new)

    def _on_day_bands(
        self, group: str, starts: list[datetime], curves: list[BidCurve]
    ) -> tuple[list[BidCurve], dict[str, dict[str, list[float]]]]:
        """Fixed-band markets (AEMO-like): every curve on its trading day's band prices.

        The day's bands are chosen from the curves of the group's first bidding cycle that
        reaches the day (:func:`optimizer.curves.fix_day_bands`: quantity-weighted price
        quantiles per side) and stored; every later cycle of that day snaps its curves to
        them, offers up and charge bids down, so nothing trades at a price its curve did not
        accept. The trade-off: bands chosen from the first hour's curves fit the rest of the
        day less well than bands chosen from the whole day's plan would, but a market fixes
        them at the first submission, before the rest of the day is known. Returns the
        curves and the bands per trading day (for the solve report); other markets' curves
        pass unchanged."""
        rules = self.definition.curve
        if not rules.fixed_bands_per_trading_day:
            return curves, {}
        by_day: dict[date, list[int]] = {}
        for k, start in enumerate(starts):
            by_day.setdefault(self.definition.trading_day(start), []).append(k)
        out = list(curves)
        used: dict[str, dict[str, list[float]]] = {}
        for day, ks in by_day.items():
            market, product = self.definition.market_id, self.product.value
            bands = self.bids.bands_of(market, group, product, day)
            if bands is None:
                chosen, _ = fix_day_bands([curves[k] for k in ks], rules.max_segments)
                bands = self.bids.fix_bands(
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

    # -- review and submission -------------------------------------------------------------

    def submit_due(self, now: datetime | None = None) -> int:
        """Submit approved bids whose gate closes within ``submit_before_gate_s`` (one pass
        at a time, as :meth:`make_bids`)."""
        with self._submit_lock:
            return self._submit_due(now or self.clock())

    def _submit_due(self, now: datetime) -> int:
        horizon = now + timedelta(seconds=self.settings.submit_before_gate_s)
        if self.settings.auto_approve:
            for row in self.bids.due(BidStatus.DRAFT, now, horizon):
                if row.author != SYSTEM.actor:
                    continue  # an operator's edit waits for an operator's approval
                try:
                    self.bids.review(
                        row.bid_id,
                        row.version,
                        BidAction.APPROVE,
                        AUTO_APPROVER,
                        "auto-approved (bidding.auto_approve)",
                        enforce_four_eyes=False,
                    )
                except BidError as exc:
                    log.info("auto-approve skipped: %s", exc, extra=ctx(bid_id=row.bid_id))
        done = 0
        for row in self.bids.due(BidStatus.APPROVED, now, horizon):
            tx_id = f"submit-{row.bid_id}-v{row.version}"
            try:
                result = self.bids.submit([row.bid_id], SYSTEM, self.market, tx_id)
            except FencedError as exc:  # deposed: the bids went back to approved
                log.error("submissions stopped: %s", exc, extra=ctx(bid_id=row.bid_id))
                break
            except BidError as exc:
                log.info("not submitted: %s", exc, extra=ctx(bid_id=row.bid_id))
                continue
            done += 1
            if result.refused:
                log.warning(
                    "bid %s refused by the market: %s",
                    row.bid_id,
                    result.refused.get(row.bid_id),
                    extra=ctx(bid_id=row.bid_id),
                )
        self.submitted += done
        return done

    def collect_awards(self, now: datetime | None = None) -> int:
        """Read and store the awards of every interval that has started and is not read."""
        now = now or self.clock()
        current = self._align(now - self.step + timedelta(microseconds=1))
        if current > now:
            current -= self.step
        stored = 0
        for k in range(3):  # the current interval and, after a pause, the two before
            start = current - k * self.step
            if start in self._collected:
                continue
            tx_id = f"awards-{self.definition.market_id}-{self.product.value}-{start:%Y%m%dT%H%MZ}"
            awards = self.market.awards(tx_id, start, start + self.step)
            stored += self.bids.record_awards(awards)
            self._collected.add(start)
            if awards:
                for listener in self.award_listeners:
                    listener(awards)
        self.awarded += stored
        if len(self._collected) > 1000:
            self._collected = {s for s in self._collected if s > now - 10 * self.step}
        return stored

    def settle(self, now: datetime | None = None) -> int:
        """Close what would otherwise wait forever: drafts and approved bids whose gate has
        passed (``missed``), accepted bids whose interval ended without an award
        (``unawarded``)."""
        now = now or self.clock()
        missed = self.bids.mark_missed(now)
        unawarded = self.bids.mark_unawarded(now)
        for rows, status in ((missed, "missed"), (unawarded, "unawarded")):
            if rows:
                SETTLED.labels(status).inc(len(rows))
                log.warning("%d bids %s", len(rows), status, extra=ctx(bid_id=rows[0].bid_id))
        self.missed += len(missed)
        self.unawarded += len(unawarded)
        return len(missed) + len(unawarded)

    # -- async wrappers for the scheduler --------------------------------------------------

    async def settle_cycle(self) -> None:
        if self.leading():
            await asyncio.to_thread(self.settle)

    async def cycle(self) -> None:
        if self.leading():
            await asyncio.to_thread(self.make_bids)

    async def submit_cycle(self) -> None:
        if self.leading():
            await asyncio.to_thread(self.submit_due)

    async def awards_cycle(self) -> None:
        if self.leading():
            await asyncio.to_thread(self.collect_awards)

    def status(self) -> dict[str, Any]:
        approval = (
            "auto-approved by the engine's policy"
            if self.settings.auto_approve
            else "waiting for an operator's approval"
        )
        line = (
            f"{self.made} bids made ({approval}), {self.submitted} submitted, "
            f"{self.awarded} awarded, {self.missed} missed, {self.unawarded} unawarded"
            f" ({self.definition.market_id} {self.product.value})"
            + (f"; last problem: {self.last_error}" if self.last_error else "")
        )
        return {
            "line": line,
            "made": self.made,
            "submitted": self.submitted,
            "awarded": self.awarded,
            "missed": self.missed,
            "unawarded": self.unawarded,
            "auto_approve": self.settings.auto_approve,
            "last_error": self.last_error,
        }
