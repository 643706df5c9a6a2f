"""The combined fleet view: every instance's partial aggregates, read from the bus.

Each instance reads the whole compacted aggregates topic (its own consumer group, from the
earliest record, so a fresh instance learns every other instance's latest partial at
once) and keeps the newest partial per ``group|instance`` key; :meth:`FleetView.view`
combines them (:func:`vpp.fleet.partials.combine`). A record that does not decode, or
whose key does not name its own group and instance, goes to the dead-letter topic; a
tombstone (no value) forgets its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from vpp.bus.base import Bus, Consumer, Producer
from vpp.bus.deadletter import DeadLetterWriter
from vpp.config import IngestSettings, TopicsSettings
from vpp.fleet.partials import (
    CombinedView,
    GroupPartial,
    combine,
    decode_partial,
    fresh_partials,
    partial_key,
)

log = logging.getLogger(__name__)


class FleetView:
    """A :class:`vpp.runtime.Component` holding the newest partial of every instance."""

    name = "fleet-view"

    def __init__(
        self,
        bus: Bus,
        settings: IngestSettings,
        topics: TopicsSettings,
        *,
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.topics = topics
        self.clock = clock
        # Partials are published on the wall's cadence (``partials_every_s``) but stamped
        # on the engine's clock: under ``--speed N`` a partial ages N engine seconds per
        # wall second, so its freshness bound is N times ``partials_max_age_s`` (else every
        # instance, this one included, reads as stale at x10).
        self.max_age_s = settings.partials_max_age_s * speed
        self.partials: dict[bytes, GroupPartial] = {}
        self.refused = 0
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._dlq: DeadLetterWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._producer = await self.bus.producer()
        self._dlq = DeadLetterWriter(self._producer, self.topics.deadletter.name)
        self._consumer = await self.bus.consumer(
            [self.topics.aggregates.name], f"vpp-fleet-view-{uuid.uuid4().hex[:8]}"
        )
        self._task = asyncio.create_task(self._run(), name="fleet view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for closer in (self._consumer, self._producer):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None and self._dlq is not None
        while True:
            try:
                records = await self._consumer.getmany(max_records=5000, timeout_s=0.5)
                refusals = []
                for r in records:
                    if r.key is None:
                        refusals.append((r, "no_key", "a partial needs its group|instance key"))
                        continue
                    if r.value is None:
                        self.partials.pop(r.key, None)
                        continue
                    try:
                        p = decode_partial(r.value)
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        refusals.append((r, "invalid", str(exc)))
                        continue
                    if partial_key(p) != r.key:
                        refusals.append(
                            (r, "key_mismatch", f"key {r.key!r} is not {partial_key(p)!r}")
                        )
                        continue
                    self.partials[r.key] = p
                if refusals:
                    await self._dlq.refuse(refusals)
                    await self._dlq.flush()
                    self.refused += len(refusals)
                if records:
                    await self._consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fleet view iteration failed")
                await asyncio.sleep(1.0)

    def view(self, now_s: float | None = None) -> CombinedView | None:
        if not self.partials:
            return None
        now = self.clock() if now_s is None else now_s
        return combine(list(self.partials.values()), now, self.max_age_s)

    def fresh(self, now_s: float | None = None) -> list[GroupPartial]:
        """The partials that count now (see :func:`vpp.fleet.partials.fresh_partials`)."""
        now = self.clock() if now_s is None else now_s
        return fresh_partials(list(self.partials.values()), now, self.max_age_s)

    def status(self) -> dict[str, Any]:
        v = self.view()
        if v is None:
            return {"line": "no partial aggregates yet", "partials": 0}
        c = v.coverage
        stale = f", stale: {', '.join(c.stale_instances)}" if c.stale_instances else ""
        return {
            "line": f"{len(self.partials)} partials, partitions {c.partitions_reported}/"
            f"{c.partitions_total} reported{stale}",
            "partials": len(self.partials),
            "refused": self.refused,
        }
