"""The message bus: one async interface, an embedded and a Kafka implementation."""

from __future__ import annotations

from vpp.bus.base import Bus, Consumer, Producer, Record, TopicPartition
from vpp.config import BusSettings

__all__ = ["Bus", "Consumer", "Producer", "Record", "TopicPartition", "make_bus"]


def make_bus(settings: BusSettings) -> Bus:
    """The configured bus, not yet started."""
    if settings.kind == "kafka":
        from vpp.bus.kafka import KafkaBus

        return KafkaBus(settings)
    from vpp.bus.embedded import EmbeddedBus

    return EmbeddedBus(settings.embedded)
