"""What the API, the console and the CLI act through: the stores and the live components
behind one object, and the one refusal type their operator actions raise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from market.adapter import LoggedMarket
from vpp.fleet.hierarchy import FleetSnapshot, NodeAggregate
from vpp.fleet.partials import CombinedView, whole_fleet
from vpp.heartbeat import Heartbeat
from vpp.store.bids import BidStore
from vpp.store.history import AggregateRecorder
from vpp.store.keys import KeyStore
from vpp.twins.store import FleetStore

if TYPE_CHECKING:  # both import the API's stores; typed here, imported where they run
    from vpp.dispatch.service import DispatchService
    from vpp.peak_shaving import PeakShaver


T = TypeVar("T")


class RefusedError(Exception):
    """An operator action refused, and why: ``status`` is the HTTP status the API answers
    with (404 unknown, 409 conflicts with what exists, 422 invalid, 503 a component not
    running); ``detail`` a sentence, or field errors (``loc``/``type``/``msg``)."""

    def __init__(self, status: int, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(
            detail if isinstance(detail, str) else "; ".join(str(d.get("msg", d)) for d in detail)
        )
        self.status = status
        self.detail = detail


async def _always_ready() -> dict[str, bool]:
    return {"database": True}


@dataclass
class Services:
    db: sa.Engine
    keys: KeyStore
    bids: BidStore
    fleet: Callable[[], tuple[FleetSnapshot | None, FleetStore | None]] = lambda: (None, None)
    market: LoggedMarket | None = None  # every exchange goes through the transaction log
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    readiness: Callable[[], Coroutine[Any, Any, dict[str, bool]]] = _always_ready
    dispatch: DispatchService | None = None  # once dispatch runs
    peak_shaver: PeakShaver | None = None  # when peak shaving runs
    history: AggregateRecorder | None = None  # when history is recorded
    # every instance's partials combined (vpp.fleet.combined), when the view runs
    combined: Callable[[], CombinedView | None] = lambda: None
    cache: dict[str, Any] = field(default_factory=dict)  # serialized responses
    # The engine's event loop (ingest, dispatch, bidding, leadership) when the API is served
    # from a loop of its own; None when both are one loop (tests, embedded apps).
    control_loop: asyncio.AbstractEventLoop | None = None
    heartbeat: Heartbeat | None = None  # the control loop's, which /livez reads
    livez_max_lag_s: float = 10.0

    async def on_control(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the control loop and wait for it from the API's loop.

        The dispatch service's state, its lock, its producer and the ledger writer belong
        to the control loop; an operator's target or plan is applied there, as one step
        with its checks (nothing else of the control loop runs between them). A reader
        never comes here: reads of live state are plain reads from the API's threads."""
        loop = self.control_loop
        if loop is None or loop is asyncio.get_running_loop():
            return await work
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, loop))

    def groups(self) -> dict[str, NodeAggregate]:
        """The group aggregates every capability check and group page uses: the whole
        fleet's (every instance's partials combined) when instances share the fleet, else
        this instance's snapshot. A check against this instance's own partial would refuse
        what the fleet can do."""
        snap, _ = self.fleet()
        view = whole_fleet(self.combined(), snap)
        return dict(view.groups) if view is not None else {}
