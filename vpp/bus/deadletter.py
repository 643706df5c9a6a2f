"""The dead-letter path: a refused message is kept, explained and counted, never dropped."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from prometheus_client import Counter

from vpp.bus import Producer, Record
from vpp.telemetry.contract import DeadLetter

log = logging.getLogger(__name__)

DEADLETTERS = Counter(
    "vpp_deadletters_total", "Messages refused and sent to the dead-letter topic", ["reason"]
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", errors="backslashreplace")


def dead_letter(record: Record, reason: str, detail: str) -> tuple[bytes | None, bytes]:
    """The (key, value) to publish for a refused record: raw bytes plus where and why."""
    letter = DeadLetter(
        v=1,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
        detail=detail,
        key=record.key,
        value=record.value,
        refused_at=datetime.now(UTC),
    )
    return record.key, _encoder.encode(letter)


def decode_dead_letter(raw: bytes) -> DeadLetter:
    return _decoder.decode(raw)


class DeadLetterWriter:
    """Publishes refusals; :meth:`flush` must complete before the source batch is committed."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self.count = 0

    async def refuse(self, items: Sequence[tuple[Record, str, str]]) -> None:
        if not items:
            return
        await self._producer.send_many(self._topic, [dead_letter(r, why, d) for r, why, d in items])
        reasons: dict[str, int] = {}
        for record, reason, detail in items:
            DEADLETTERS.labels(reason).inc()
            reasons[reason] = reasons.get(reason, 0) + 1
            log.debug(
                "refused %s[%d]@%d: %s (%s)",
                record.topic,
                record.partition,
                record.offset,
                reason,
                detail,
                extra={"site_id": _text(record.key)},
            )
        log.warning("dead-lettered %d messages: %s", len(items), reasons)
        self.count += len(items)

    async def flush(self) -> None:
        await self._producer.flush()
