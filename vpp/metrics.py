"""Prometheus metrics of the engine, all in one place (prefix ``vpp_``, base units).

Metrics live in the process-wide default registry, so the module is imported once and
every component (bus, ingest, optimizer, dispatch, API) updates the same series that
``/metrics`` exposes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

BUS_PUBLISHED = Counter(
    "vpp_bus_published_messages_total", "Records accepted by the bus for delivery", ["topic"]
)
BUS_CONSUMED = Counter(
    "vpp_bus_consumed_messages_total", "Records handed to consumers", ["topic", "group"]
)
BUS_LAG = Gauge(
    "vpp_bus_consumer_lag_messages",
    "Records not yet committed by a consumer group, per topic",
    ["topic", "group"],
)
BUS_PUBLISH_RETRIES = Counter(
    "vpp_bus_publish_retries_total", "Publishes retried after a broker error", ["topic"]
)
BUS_BACKPRESSURE_SECONDS = Counter(
    "vpp_bus_backpressure_seconds_total",
    "Time producers spent waiting for consumers (embedded) or in-flight slots (Kafka)",
    ["topic"],
)
