"""The engine's market loop: bid, review, submit, collect awards.

Every interval the bidder looks at the intervals whose gates close at least
``review_window_s`` from now (the next ``horizon_intervals`` of them, or a whole trading
day where one daily gate closes it) and runs the bid cycle (:mod:`vpp.bidding.cycle`) on
them: the same code ``vpp backtest`` replays. The bidder only assembles the cycle's inputs
— the fleet's snapshot, the prices published by now (the intervals that have ended), and
each group's standing commitments read from the bid store (its awards, else the curves of
its live bids) — and stores what comes out.

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
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from market.adapter import LoggedMarket, SimulatedMarket
from market.clearing import Award
from market.definitions import MarketDefinition, Product, load_market
from market.lifecycle import BidAction, BidStatus
from vpp.bidding.cycle import BidCycle, CycleInputs, CycleSettings, GroupInput
from vpp.bidding.feed import FeatureFeed, PriceFeed
from vpp.bidding.strategies import Fixed, make_strategy
from vpp.config import BiddingSettings, ConfigError
from vpp.fleet.hierarchy import GroupsView, NodeAggregate
from vpp.logs import ctx
from vpp.store.bids import BidError, BidFilter, BidStore
from vpp.store.fencing import FencedError
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
    "vpp_bids_reconciled_total",
    "Bids left submitted or unknown, closed against the transaction log and the market",
    ["action"],
)
SUBMIT_FAILED = Counter(
    "vpp_bid_submit_failures_total", "Submissions that failed (retried or reconciled)"
)
# A bid submitted this long ago and still ``submitted`` is in limbo (its answer was lost or
# could not be written): the settle pass closes it.
STUCK_AFTER = timedelta(seconds=60)
# Who approves when bidding.auto_approve is on: the policy, named with its limits.
AUTO_APPROVER = Principal(
    "auto-approve",
    "engine policy bidding.auto_approve (the engine's own unedited drafts, sized to the "
    "group's free P90)",
    "operator",
)


def effective_market(settings: BiddingSettings) -> MarketDefinition:
    """The market the engine bids in: the shipped definition (its product at
    ``interval_minutes`` when set), with ``gate_lead_s`` in place of its gate for the bid
    product when set (a demo setting)."""
    definition = load_market(settings.market)
    product = Product(settings.product)
    if settings.interval_minutes is not None:
        try:
            definition = definition.with_interval(product, settings.interval_minutes)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"bidding.interval_minutes: {exc.args[0]}") from None
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
        features: FeatureFeed | None = None,
    ) -> None:
        self.settings = settings
        self.features = features  # replayed beside the prices (vpp.bidding.feed)
        self.bids = bids
        self.market = market
        definition = effective_market(settings)
        self.product = Product(settings.product)
        self.step = definition.interval(self.product)
        self.feed = feed
        self.fleet = fleet
        self.clock = clock
        self.award_listeners: list[Callable[[Sequence[Award]], None]] = []
        # Whether this instance leads the bidder role (vpp.leader); only the leader makes
        # bids, submits, settles and collects awards. One instance alone always leads.
        self.leading: Callable[[], bool] = lambda: True
        self.strategy = make_strategy(
            "scenarios" if settings.strategy == "scenarios" else settings.forecast,
            definition,
            self.product,
            base=settings.forecast,
            scenarios=settings.scenarios,
            history_days=settings.history_days,
            degradation_per_mwh=settings.degradation_per_mwh,
            vom_per_mwh=settings.vom_per_mwh,
            terminal="value",
            per_day=round(timedelta(days=1) / self.step),
            features=features.names if features is not None else (),
            simultaneous=settings.simultaneous,
        )
        self.bid_cycle = BidCycle(
            definition,
            self.product,
            self.strategy,
            CycleSettings(settings.quantile, settings.backup_reserve_fraction),
            bids,
        )
        self._collected: set[datetime] = set()
        self.made = 0
        self.fleet_seen = False  # a cycle has found groups to bid for
        self._cycle_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self.submitted = 0
        self.submit_failures = 0
        self.awarded = 0
        self.missed = 0
        self.unawarded = 0
        self.last_error: str | None = None
        bids.listeners.append(self._count_statuses)

    @property
    def definition(self) -> MarketDefinition:
        """The market the engine bids in (the bid cycle's: one definition for both)."""
        return self.bid_cycle.market

    @definition.setter
    def definition(self, value: MarketDefinition) -> None:
        self.bid_cycle.market = value
        self.strategy.market = value

    async def start(self) -> None:
        self._count_statuses()
        if self.leading():  # else when elected (take_over, called by the leadership)
            await asyncio.to_thread(self.take_over)

    def take_over(self, term: int | None = None) -> None:
        """Before a leader acts: rebuild the simulated order book and close every bid left
        ``submitted`` (by a crash, or by a predecessor deposed mid-submission) against the
        transaction log."""
        self._restore_market()
        counts = self.bids.reconcile_submitted(self.market, self.clock(), include_unknown=True)
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
        inputs = self.cycle_inputs(now, snap.groups)
        if inputs is None:
            return 0
        result = self.bid_cycle.run(inputs)
        for problem in result.problems:
            self.last_error = problem
            log.warning("bidding: %s", problem)
        made = 0
        for group, g in sorted(result.groups.items()):
            SOLVE_SECONDS.labels("scenario").observe(g.solve_s)
            if not g.bids:
                b = g.battery
                log.info(
                    "group %s: nothing to offer this cycle (%.0f kW out, %.0f kW in free at "
                    "P%d; stored %.3f MWh in [%.3f, %.3f])",
                    group,
                    b.p_discharge_max_mw * 1000,
                    b.p_charge_max_mw * 1000,
                    round(self.settings.quantile * 100),
                    b.e_initial_mwh,
                    b.e_min_mwh,
                    b.e_max_mwh,
                    extra=ctx(group_id=group),
                )
                continue
            solve_id = f"solve-{group}-{uuid.uuid4().hex[:12]}"
            self.bids.create(g.bids, solve_id=solve_id, report=g.report, market=self.definition)
            log.info(
                "group %s: %d draft bids from %s",
                group,
                len(g.bids),
                solve_id,
                extra=ctx(group_id=group, interval_start=g.bids[0].interval_start),
            )
            made += len(g.bids)
        self.made += made
        return made

    def cycle_inputs(
        self, now: datetime, groups: Mapping[str, NodeAggregate]
    ) -> CycleInputs | None:
        """What the bid cycle decides on at ``now``: the next bid window, the prices that
        have been published (intervals ended by now), and per group what it stands
        committed to from the current interval on (its awards, else its live bids' curves)
        and which intervals of the window it does not hold yet."""
        starts = self.next_intervals(now)
        held_ids = self.bids.existing([self.bid_id(g, s) for g in groups for s in starts])
        fresh = {
            g: frozenset(s for s in starts if self.bid_id(g, s) not in held_ids) for g in groups
        }
        if not any(fresh.values()):
            return None
        history = self.feed.series(
            starts[0] - timedelta(days=self.strategy.forecaster.lookback_days),
            self.known_until(now),
        )
        current = self._align(now - self.step + timedelta(microseconds=1))
        if current > now:
            current -= self.step
        feats = None
        if self.features is not None:
            feats = self.features.window(
                self.definition, self.product, history.starts[0], starts[-1] + self.step
            ).known_at(now)
        return CycleInputs(
            now=now,
            horizon=starts,
            kept=len(starts),
            known=history,
            features=feats,
            groups={
                g: GroupInput(node, self.standing(g, current, starts[-1] + self.step), fresh[g])
                for g, node in groups.items()
            },
        )

    def known_until(self, now: datetime) -> datetime:
        """Prices of intervals starting before this instant are published at ``now``: where
        a daily gate closes a trading day, every trading day whose gate has passed (the
        auction publishes the whole day at once); where each interval has its own gate,
        the intervals that have ended. The backtest's decisions know the same
        (:mod:`vpp.decision_windows`)."""
        definition = self.definition
        if definition.product(self.product).gate_closure.kind == "daily":
            day = definition.trading_day(now)
            while (
                definition.gate_closure(self.product, definition.trading_day_start_utc(day)) <= now
            ):
                day += timedelta(days=1)
            return definition.trading_day_start_utc(day)
        return now - self.step + timedelta(microseconds=1)

    def standing(self, group: str, start: datetime, end: datetime) -> dict[datetime, Fixed]:
        """The group's commitments for intervals starting in ``[start, end)``: the awarded
        net MW where an award is stored, else the curve of a live bid (draft to accepted:
        it may still clear)."""
        rows, _ = self.bids.list_bids(
            BidFilter(
                market=self.definition.market_id, group=group, start_from=start, start_to=end
            ),
            0,
            10_000,
        )
        out: dict[datetime, Fixed] = {}
        for r in rows:
            if r.status in _LIVE and r.product == self.product.value:
                out[r.interval_start] = r.to_bid().curve
        awards, _ = self.bids.list_awards(group=group, start_from=start, start_to=end, limit=10_000)
        awarded: dict[datetime, float] = {}
        for a in awards:
            if a["product"] == self.product.value and a["market"] == self.definition.market_id:
                t = a["interval_start"]
                t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
                awarded[t] = awarded.get(t, 0.0) + float(a["p_mw"])
        out.update(awarded)
        return out

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
            except Exception:
                # A transient failure (the database, the market) costs this bid this pass,
                # never the rest of the pass; a bid it left submitted is closed by the next
                # settle pass (reconcile_submitted), and the failure is counted.
                SUBMIT_FAILED.inc()
                self.submit_failures += 1
                log.exception("submitting %s failed", row.bid_id, extra=ctx(bid_id=row.bid_id))
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
        with self._submit_lock:  # no submission of this instance is under way meanwhile
            counts = self.bids.reconcile_submitted(
                self.market, now, older_than=STUCK_AFTER, include_unknown=True
            )
        for action, n in counts.items():
            RECONCILED.labels(action).inc(n)
        if counts:
            log.warning("closed bids left in limbo: %s", counts)
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
            + (f", {self.submit_failures} submissions failed" if self.submit_failures else "")
            + (f"; last problem: {self.last_error}" if self.last_error else "")
        )
        return {
            "line": line,
            "made": self.made,
            "submitted": self.submitted,
            "awarded": self.awarded,
            "missed": self.missed,
            "unawarded": self.unawarded,
            "submit_failures": self.submit_failures,
            "auto_approve": self.settings.auto_approve,
            "last_error": self.last_error,
        }
