"""What the API serves from: the stores and the live components, behind one object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from market.adapter import LoggedMarket
from vpp.fleet.hierarchy import FleetSnapshot, NodeAggregate
from vpp.fleet.partials import CombinedView, whole_fleet
from vpp.store.bids import BidStore
from vpp.store.history import AggregateRecorder
from vpp.store.keys import KeyStore
from vpp.twins.store import FleetStore

if TYPE_CHECKING:  # both import the API's stores; typed here, imported where they run
    from vpp.dispatch.service import DispatchService
    from vpp.peak_shaving import PeakShaver


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
    readiness: Callable[[], Awaitable[dict[str, bool]]] = _always_ready
    dispatch: DispatchService | None = None  # once dispatch runs
    peak_shaver: PeakShaver | None = None  # when peak shaving runs
    history: AggregateRecorder | None = None  # when history is recorded
    # every instance's partials combined (vpp.fleet.combined), when the view runs
    combined: Callable[[], CombinedView | None] = lambda: None
    cache: dict[str, Any] = field(default_factory=dict)  # serialized responses

    def groups(self) -> dict[str, NodeAggregate]:
        """The group aggregates every capability check and group page uses: the whole
        fleet's (every instance's partials combined) when instances share the fleet, else
        this instance's snapshot. A check against this instance's own partial would refuse
        what the fleet can do."""
        snap, _ = self.fleet()
        view = whole_fleet(self.combined(), snap)
        return dict(view.groups) if view is not None else {}
