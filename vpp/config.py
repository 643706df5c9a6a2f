"""Effective configuration: defaults < config file (YAML/TOML) < environment (``VPP_*``).

One pydantic-settings class read once at start-up. Nested settings use ``__`` in the
environment (``VPP_BUS__KIND=kafka``, ``VPP_BUS__KAFKA__BOOTSTRAP_SERVERS=...``). A bad value
fails at start-up with the setting's name in both spellings and the reason
(:class:`ConfigError`); nothing starts half-configured.
"""

from __future__ import annotations

import contextvars
import difflib
import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from platformdirs import user_data_dir
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

ENV_PREFIX = "VPP_"
_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "vpp_config_file", default=None
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSpec(_Section):
    """One bus topic: its name, partition count and whether it is log-compacted."""

    name: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: PositiveInt = Field(8, description="partition count (fixed at creation)")
    compacted: bool = Field(False, description="keep only the latest value per key")


class TopicsSettings(_Section):
    """The topics of DESIGN.md's bus contract; names and partition counts are configurable."""

    telemetry: TopicSpec = TopicSpec(name="vpp.telemetry", partitions=8)
    sites: TopicSpec = TopicSpec(name="vpp.sites", partitions=8, compacted=True)
    commands: TopicSpec = TopicSpec(name="vpp.commands", partitions=8)
    acks: TopicSpec = TopicSpec(name="vpp.acks", partitions=8)
    deadletter: TopicSpec = TopicSpec(name="vpp.deadletter", partitions=1)
    # each instance's partial group aggregates, keyed group|instance (vpp.fleet.partials)
    aggregates: TopicSpec = TopicSpec(name="vpp.aggregates", partitions=1, compacted=True)
    # every group and site target, keyed by dispatch id, for every instance to take its
    # share of (vpp.dispatch.shares); a cancelled target's record says so
    targets: TopicSpec = TopicSpec(name="vpp.targets", partitions=1, compacted=True)

    @classmethod
    def renamed(cls, prefix: str, partitions: int) -> TopicsSettings:
        """Every topic as ``{prefix}.{role}`` (tests and benchmarks isolate themselves on a
        shared broker so): the keyed topics with ``partitions``, the single-partition ones
        (dead letters, aggregates, targets) and compaction as shipped."""
        out = {}
        for role, spec in cls().model_dump().items():
            parts = spec["partitions"] if spec["partitions"] == 1 else partitions
            out[role] = TopicSpec(
                name=f"{prefix}.{role}", partitions=parts, compacted=spec["compacted"]
            )
        return cls(**out)

    def environment(self) -> dict[str, str]:
        """These topics as ``VPP_BUS__TOPICS__…`` environment variables, for a child
        process (``vpp serve``, ``vpp simulate``) to use them."""
        env = {}
        for role, spec in self:
            for field, value in spec.model_dump().items():
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"VPP_BUS__TOPICS__{role.upper()}__{field.upper()}"] = text
        return env

    def all(self) -> list[TopicSpec]:
        return [
            self.telemetry,
            self.sites,
            self.commands,
            self.acks,
            self.deadletter,
            self.aggregates,
            self.targets,
        ]


class KafkaSettings(_Section):
    """aiokafka client options. Security options are passed through unchanged."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    client_id: str = "vpp"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    enable_idempotence: bool = Field(
        True, description="idempotent producer (exactly-once per partition); needs acks=all"
    )
    linger_ms: int = Field(5, ge=0, le=1000, description="producer batching delay (ms)")
    max_batch_size: PositiveInt = Field(
        256 * 1024, description="producer batch size per partition (bytes)"
    )
    max_in_flight_batches: PositiveInt = Field(
        64, description="producer batches awaiting broker acknowledgement before send() waits"
    )
    request_timeout_ms: PositiveInt = 30_000
    retry_backoff_ms: PositiveInt = 200
    send_retry_deadline_s: PositiveFloat = Field(
        120.0, description="how long a publish keeps retrying while the broker is away (s)"
    )
    session_timeout_ms: PositiveInt = Field(
        6_000,
        description="a consumer-group member silent this long is dropped and its partitions "
        "move (ms): most of an instance's fail-over time; 6 s is the lowest a Kafka broker "
        "accepts by default (group.min.session.timeout.ms), and the event loop must never "
        "stall this long",
    )
    heartbeat_interval_ms: PositiveInt = 1_000
    max_partition_fetch_bytes: PositiveInt = 1024 * 1024
    fetch_max_bytes: PositiveInt = 8 * 1024 * 1024
    replication_factor: PositiveInt = 1
    create_topics: bool = Field(True, description="create missing topics at start-up")

    @model_validator(mode="after")
    def _timeouts_consistent(self) -> KafkaSettings:
        # A JoinGroup request is held by the broker for up to the rebalance timeout (the
        # session timeout here); a shorter request timeout makes every join time out.
        if self.request_timeout_ms <= self.session_timeout_ms:
            raise ValueError(
                f"request_timeout_ms ({self.request_timeout_ms}) must exceed "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(
                    f"security_protocol={self.security_protocol} needs sasl_mechanism "
                    "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
                )
            if not self.sasl_plain_username:
                raise ValueError(
                    f"security_protocol={self.security_protocol} needs sasl_plain_username "
                    "(and sasl_plain_password)"
                )
        return self

    @model_validator(mode="after")
    def _tls_files_exist(self) -> KafkaSettings:
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self


class EmbeddedBusSettings(_Section):
    """The in-process bus: Kafka's semantics without a broker."""

    max_backlog_per_partition: PositiveInt = Field(
        10_000,
        description="records a partition holds beyond the slowest group's commit before "
        "producers wait (backpressure)",
    )


class BusSettings(_Section):
    kind: Literal["embedded", "kafka"] = Field(
        "embedded", description="embedded (in-process, zero set-up) or kafka"
    )
    kafka: KafkaSettings = KafkaSettings()
    embedded: EmbeddedBusSettings = EmbeddedBusSettings()
    topics: TopicsSettings = TopicsSettings()


def default_database_url() -> SecretStr:
    """SQLite in the user's data folder (``$XDG_DATA_HOME/vpp-engine/vpp.db`` on Linux): the
    same database whatever folder `vpp` is started from."""
    folder = Path(user_data_dir("vpp-engine", appauthor=False))
    return SecretStr(f"sqlite:///{folder / 'vpp.db'}")


class DatabaseSettings(_Section):
    url: SecretStr = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db "
        "(default: vpp.db in the user's data folder)",
    )
    schema_name: str | None = Field(
        None, description="PostgreSQL schema to use (search_path); None = the default"
    )
    echo: bool = False

    @model_validator(mode="after")
    def _parsable(self) -> DatabaseSettings:
        try:
            url = make_url(self.url.get_secret_value())
        except Exception as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(
                f"backend {url.get_backend_name()!r} is not supported (sqlite or postgresql)"
            )
        return self

    def masked_url(self) -> str:
        return make_url(self.url.get_secret_value()).render_as_string(hide_password=True)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="0 picks a free port")
    four_eyes: bool = Field(
        True, description="an approver must differ from the bid version's last editor"
    )
    max_body_bytes: PositiveInt = Field(
        1_048_576, description="larger request bodies are refused (413) before they are read"
    )
    db_pool_size: int = Field(
        4,
        ge=1,
        le=100,
        description="database connections of the API and console, a pool apart from the "
        "engine's: readers cannot take the connections ingest, dispatch and bidding need",
    )
    db_pool_timeout_s: PositiveFloat = Field(
        2.0, description="a request waits this long for one of them, then gets 503 (s)"
    )
    secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto",
        description="the console's cookies carry Secure: auto when the request came over "
        "HTTPS (directly, or by X-Forwarded-Proto from a proxy uvicorn trusts), always, or "
        "never (plain-HTTP development only)",
    )
    request_timeout_s: PositiveFloat = Field(
        10.0,
        description="a request (line, headers and body) must arrive whole within this of "
        "its connection opening, or of the previous response, else the connection is closed",
    )
    max_connections: int = Field(
        200,
        ge=1,
        le=100_000,
        description="connections and requests the API holds at once; more get 503 at once "
        "(keep it under the open-file limit the engine shares with its database and Kafka)",
    )
    max_inflight_per_key: int = Field(
        8, ge=1, le=1000, description="requests one API key may have in flight; more get 429"
    )
    worker_threads: int = Field(
        4,
        ge=1,
        le=200,
        description="threads the API and console run their handlers and pages in; more "
        "serve a crowd of readers no faster (they share the interpreter lock) and each one "
        "competes with the control loop for it",
    )
    livez_max_lag_s: PositiveFloat = Field(
        10.0,
        description="/livez answers 503 once the control loop (ingest, dispatch, bidding) "
        "has not run for this long; the API is served from a loop of its own and would "
        "answer even while the engine is wedged",
    )


class LeaderSettings(_Section):
    """One bidder among many instances (:mod:`vpp.leader`)."""

    check_every_s: PositiveFloat = Field(
        2.0,
        description="how often the leader checks its lock and term, and others try to take "
        "over (s): the fail-over time is about this plus the database's session timeout",
    )


class SchedulerSettings(_Section):
    """Periodic jobs (bidding cycles, re-plans, history). Fleet snapshots and command
    timeouts have their own periods: ``ingest.snapshot_every_s``, ``dispatch.tick_s``."""

    misfire_grace_s: PositiveFloat = Field(
        30.0, description="a job that missed its time by more than this is skipped (s)"
    )


class IngestSettings(_Section):
    """Telemetry ingest: validation limits, connectivity thresholds, snapshots, estimates."""

    group_id: str = Field("vpp-ingest", description="consumer group of the ingest members")
    batch_max_records: PositiveInt = Field(20_000, description="records folded per batch")
    poll_timeout_s: PositiveFloat = 0.2
    max_future_skew_s: PositiveFloat = Field(
        30.0, description="a reading stamped further ahead of the engine's clock is refused (s)"
    )
    replay_window_s: PositiveFloat = Field(
        7 * 86_400.0, description="a reading older than this is refused (s)"
    )
    power_tolerance: float = Field(
        1.5, ge=1.0, description="|p_kw| may reach this multiple of the site's rating"
    )
    stale_after_intervals: PositiveFloat = Field(
        3.0, description="stale when telemetry is older than k x the site's own interval"
    )
    offline_after_intervals: PositiveFloat = Field(
        10.0, description="offline when telemetry is older than k x the site's own interval"
    )
    health_window_s: PositiveFloat = Field(
        3_600.0, description="time constant of each site's availability EWMA (s)"
    )
    sustain_h: PositiveFloat = Field(
        0.25, description="an offered power must be sustainable this long (h)"
    )
    stale_availability: float = Field(
        0.5, ge=0, le=1, description="availability of a stale site relative to an online one"
    )
    refresh_min_interval_s: float = Field(
        0.1,
        ge=0,
        description="aggregates are recomputed after a batch at most this often (s); "
        "under a backlog several batches fold into one refresh",
    )
    trace_depth: int = Field(
        48,
        ge=0,
        le=10_000,
        description="recent readings kept per site for operators (0: none); memory is "
        "sites x depth x 20 bytes",
    )
    trace_every_s: float = Field(
        15.0, ge=0, description="a site's reading is kept in its trace at most this often (s)"
    )
    day_trace_depth: int = Field(
        96,
        ge=0,
        le=10_000,
        description="a second, coarse trace per site for its page's day of readings (0: "
        "none); memory is sites x depth x 20 bytes (96 every 15 min: 1.9 kB a site, 190 MB "
        "for 100,000 sites on one instance)",
    )
    day_trace_every_s: PositiveFloat = Field(
        900.0, description="a site's reading is kept in its day trace at most this often (s)"
    )
    snapshot_every_s: PositiveFloat = Field(30.0, description="fleet snapshot period (s)")
    partials_every_s: PositiveFloat = Field(
        5.0,
        description="each instance publishes its partial group aggregates to the aggregates "
        "topic this often, and at every partition assignment (s)",
    )
    partials_max_age_s: PositiveFloat = Field(
        15.0,
        description="the combined fleet view counts a partial at most this old; older ones "
        "only widen the upper bounds (wall seconds, like partials_every_s: under --speed N "
        "a partial may be N times as old on the engine's clock)",
    )
    snapshots_kept: PositiveInt = Field(3, description="snapshots kept per ingest member")
    registry_file: Path | None = Field(
        None, description="YAML/CSV site registry published to vpp.sites at start-up"
    )

    @model_validator(mode="after")
    def _registry_exists(self) -> IngestSettings:
        if self.registry_file is not None and not Path(self.registry_file).is_file():
            raise ValueError(f"registry_file: {self.registry_file} is not a readable file")
        return self

    @model_validator(mode="after")
    def _thresholds(self) -> IngestSettings:
        if self.offline_after_intervals <= self.stale_after_intervals:
            raise ValueError("offline_after_intervals must exceed stale_after_intervals")
        return self


class SimFaultSettings(_Section):
    """Faults the simulated gateways inject (probabilities unless a unit is given)."""

    offline_per_hour: float = Field(0.5, ge=0, description="a site goes silent, per site-hour")
    offline_s: PositiveFloat = Field(60.0, description="length of a silent period (s)")
    gap: float = Field(0.01, ge=0, le=1, description="a reading is lost")
    duplicate: float = Field(0.005, ge=0, le=1, description="a reading is delivered twice")
    reorder: float = Field(0.005, ge=0, le=1, description="a reading arrives after the next")
    malformed: float = Field(0.001, ge=0, le=1, description="a reading is corrupted")
    ack_loss: float = Field(0.02, ge=0, le=1, description="an ack never arrives")
    ack_delay_s: float = Field(0.2, ge=0, description="acks leave this long after a command")
    reject: float = Field(0.01, ge=0, le=1, description="a site declines a command")
    offline_mid_interval: float = Field(
        0.0, ge=0, le=1, description="after a command, a site drops out before it ends"
    )


class SimulatorSettings(_Section):
    sites: PositiveInt = Field(50, description="simulated site gateways")
    groups: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]+$")]] = Field(
        ["north", "south"], min_length=1
    )
    seed: int = 42
    telemetry_interval_s: PositiveFloat = Field(2.0, description="each site's reporting period")
    tick_s: PositiveFloat = Field(0.25, description="physics and publishing step (s)")
    faults: SimFaultSettings = SimFaultSettings()


class PriceFileSettings(_Section):
    """A price CSV the simulated market clears on instead of the shipped prices (the way
    to bid a market whose currency ships none, AEMO's AUD), replayed by time of year."""

    file: Path = Field(description="CSV file")
    time_column: str = Field(description="column holding the interval label")
    column: str = Field(description="column holding the price")
    unit: str = Field(description="energy price unit, e.g. AUD/MWh")
    interval: Literal["start", "end"] = Field(description="the label names the start or end")
    timezone: str = Field("UTC", description="IANA zone of naive labels")
    time_format: str | None = Field(None, description="strptime format, if not ISO 8601")


class FeatureColumnSettings(_Section):
    """One feature series of a feature file: its column, unit and publication rule."""

    column: str = Field(description="column holding the values")
    unit: str = Field("MW", description="MW, GW, kW or a price unit such as EUR/MWh")
    known: timedelta = Field(
        timedelta(0),
        description="a value is known this long after (negative: before) the gate closure "
        "of its interval's trading day",
    )


class FeatureFileSettings(_Section):
    """Feature series (day-ahead load, wind, solar forecasts) the forecaster reads,
    replayed by time of year beside the prices; the contract of a scenario's
    ``features:`` (docs/scenarios.md)."""

    file: Path = Field(description="CSV file")
    time_column: str = Field(description="column holding the interval label")
    interval: Literal["start", "end"] = Field(description="the label names the start or end")
    timezone: str = Field("UTC", description="IANA zone of naive labels")
    time_format: str | None = Field(None, description="strptime format, if not ISO 8601")
    columns: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")], FeatureColumnSettings] = Field(
        min_length=1, description="feature name -> its column"
    )


class BiddingSettings(_Section):
    """The engine's own market loop: scenario bids per group, review, submission, awards."""

    enabled: bool = True
    market: str = Field("caiso", description="a shipped market definition (market/definitions)")
    product: Literal["energy_da", "energy_rt"] = "energy_rt"
    interval_minutes: PositiveInt | None = Field(
        None,
        description="run the product at another interval length it runs or ran (e.g. 60 "
        "for SDAC's hourly design before 2025-10-01); None: as it clears today",
    )
    horizon_intervals: PositiveInt = Field(12, description="intervals bid per cycle")
    review_window_s: PositiveFloat = Field(
        600.0, description="bids are made at least this long before their gate closes (s)"
    )
    strategy: Literal["scenarios", "schedule"] = Field(
        "scenarios",
        description="scenarios: monotone curves on the forecast's price buckets, anchored on "
        "its schedule (bids every cycle: the demo's review loop); schedule: the forecast's "
        "optimal schedule, bid price-taking (the best measured, benchmarks/backtest.py)",
    )
    scenarios: PositiveInt = Field(10, le=100, description="price buckets per curve")
    forecast: Literal["persistence_day", "persistence_week", "seasonal", "lear", "learned"] = Field(
        "seasonal",
        description="the forecaster bids are made on (lear and learned need hourly or "
        "coarser intervals and a year of replayed history; they fall back otherwise)",
    )
    history_days: PositiveInt = Field(14, le=120, description="forecast-error history (days)")
    degradation_per_mwh: float = Field(5.0, ge=0, description="currency per MWh throughput")
    vom_per_mwh: float = Field(0.0, ge=0, description="variable O&M, currency per MWh discharged")
    simultaneous: Literal["forbid", "time_share"] = Field(
        "forbid",
        description="plans may mix charge and discharge within an interval (time_share, "
        "one LP) or not (forbid: exact; sites follow net setpoints, so forbid is what "
        "they do)",
    )
    quantile: float = Field(0.9, description="size bids to P50 (0.5) or P90 (0.9) power")
    backup_reserve_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of each group's energy kept back (backup)"
    )
    auto_approve: bool = Field(
        False, description="the engine approves its own unedited bids before their gate"
    )
    submit_before_gate_s: PositiveFloat = Field(
        60.0, description="approved bids are submitted this long before their gate (s)"
    )
    gate_lead_s: PositiveInt | None = Field(
        None,
        description="replace the market's gate lead for the bid product (s): a demo setting "
        "that closes the loop fast; None keeps the market's own rule",
    )
    prices: PriceFileSettings | None = Field(
        None,
        description="clear on this price file (the market's currency and product interval) "
        "instead of the shipped prices; needed for aemo",
    )
    features: FeatureFileSettings | None = Field(
        None,
        description="feature series for lear and learned (default: the shipped DE 2019 "
        "day-ahead load, wind and solar forecasts where the shipped DE prices are replayed)",
    )

    @field_validator("market")
    @classmethod
    def _known_market(cls, v: str) -> str:
        from market.definitions import MARKETS  # the market files are the one list

        if v not in MARKETS:
            raise ValueError(f"unknown market {v!r}; shipped markets: {', '.join(MARKETS)}")
        return v

    @model_validator(mode="after")
    def _quantile(self) -> BiddingSettings:
        if self.quantile not in (0.5, 0.9):
            raise ValueError("quantile must be 0.5 or 0.9 (the hierarchy reports P50 and P90)")
        return self


class PeakShavingSettings(_Section):
    """Automated peak shaving for every site whose registry record carries a tariff."""

    enabled: bool = True
    interval_s: int = Field(900, ge=60, le=3600, description="plan interval (s)")
    horizon_intervals: PositiveInt = Field(96, le=7 * 96, description="intervals planned ahead")
    replan_every_s: PositiveFloat = Field(900.0, description="re-plan period (s)")
    sample_every_s: PositiveFloat = Field(60.0, description="load-profile sampling period (s)")
    profile_weight: float = Field(
        0.1, gt=0, le=1, description="weight of a new sample in its time-of-day slot's mean"
    )
    dispatch_ahead_intervals: PositiveInt = Field(
        2, description="planned intervals handed to dispatch at each re-plan"
    )
    degradation_per_kwh: float = Field(0.02, ge=0, le=100, description="currency per kWh moved")
    min_history_s: float = Field(
        21_600.0,
        ge=0,
        description="a site is not planned until its load profile has learned this long (s)",
    )

    @model_validator(mode="after")
    def _whole_day(self) -> PeakShavingSettings:
        if 86_400 % self.interval_s:
            raise ValueError(f"interval_s {self.interval_s} must divide a day (86400 s)")
        return self


class DispatchSettings(_Section):
    """Turning targets into per-site commands, and tracking them."""

    consumer_group: str = "vpp-dispatch"
    tick_s: PositiveFloat = Field(1.0, description="re-evaluation period (s)")
    ack_timeout_s: PositiveFloat = Field(3.0, description="wait this long for an ack (s)")
    max_attempts: int = Field(3, ge=1, le=20, description="sends per command, first included")
    backoff_s: float = Field(0.5, ge=0, description="first retry backoff (s), doubling")
    backoff_jitter: float = Field(0.2, ge=0, lt=1, description="± fraction of the backoff")
    deadband_kw: float = Field(0.05, ge=0, description="no new command for a smaller change")
    resolution_kw: float = Field(0.1, ge=0, description="setpoints are multiples of this")
    follow_tolerance: float = Field(
        0.1, gt=0, description="a site follows if |p - setpoint| <= this x its rating"
    )
    follow_grace_s: PositiveFloat = Field(
        6.0, description="time a site gets after its ack before it must follow (s)"
    )
    unresponsive_retry_s: PositiveFloat = Field(
        900.0,
        description="an unresponsive site is commanded again after this long (s), or as "
        "soon as it reconnects",
    )
    delivery_tolerance_kw: float = Field(
        1.0,
        ge=0,
        description="a closed interval is delivered if its metered mean power is within "
        "max(this, delivery_tolerance_share x |target|) of the target, either side (kW)",
    )
    delivery_tolerance_share: float = Field(
        0.05, ge=0, lt=1, description="the relative part of the delivery tolerance"
    )


class HistorySettings(_Section):
    enabled: bool = Field(True, description="record group aggregates and prune old history")
    aggregate_every_s: PositiveFloat = Field(
        60.0, description="each group's aggregate is recorded this often (s)"
    )
    retention_days: PositiveFloat = Field(
        90.0,
        description="aggregates, dispatch outcomes, the command ledger, site events and "
        "snapshots are kept this long (days), pruned hourly in batches",
    )
    audit_retention_days: PositiveFloat | None = Field(
        2557.0,
        description="the audit log and the market transaction log are kept this long (days; "
        "7 years by default, a common record-keeping term); null keeps them forever",
    )


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(True, description="one JSON object per line")


class Settings(BaseSettings):
    """Every setting of the engine. See ``vpp config show`` for the effective values."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    bus: BusSettings = BusSettings()
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    leader: LeaderSettings = LeaderSettings()
    ingest: IngestSettings = IngestSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    bidding: BiddingSettings = BiddingSettings()
    dispatch: DispatchSettings = DispatchSettings()
    peak_shaving: PeakShavingSettings = PeakShavingSettings()
    history: HistorySettings = HistorySettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=read_config_file(path)))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, every secret replaced by ``**********``."""
        data = self.model_dump(mode="json")
        data["database"]["url"] = self.database.masked_url()
        return data


class ConfigError(Exception):
    """A configuration that cannot start the engine; the message names every bad setting."""


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file into a mapping."""
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path}: not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: unknown format (use .yaml, .yml or .toml)")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def _setting_name(loc: tuple[int | str, ...]) -> str:
    dotted = ".".join(str(p) for p in loc)
    env = ENV_PREFIX + "__".join(str(p).upper() for p in loc if isinstance(p, str))
    return f"{dotted} ({env})"


def known_variables() -> set[str]:
    """Every ``VPP_*`` environment variable a setting reads (sections and leaves)."""
    from pydantic import BaseModel

    out: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            var = f"{prefix}{name.upper()}"
            out.add(var)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, var + "__")

    walk(Settings, ENV_PREFIX)
    return out


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``VPP_*`` variables that name no setting, each with the closest one (a misspelled
    ``VPP_DATABSE__URL`` would otherwise be ignored and the engine start on SQLite)."""
    known = known_variables()
    # variables that are not settings: the operator CLI's key, the tests' and benchmarks'
    ignored = {"VPP_API_KEY", "VPP_DEBUG", "VPP_TEST_PG_URL", "VPP_BENCH_PROFILE"}
    ignored |= {"VPP_CONSOLE_SHOTS"}
    out = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in known or var in ignored:
            continue
        # inside a setting that is a mapping (or a model that may be None): its keys
        if any(var.startswith(k + "__") for k in known):
            continue
        close = difflib.get_close_matches(var, known, n=1, cutoff=0.6)
        out.append(f"{var}: no such setting" + (f" (did you mean {close[0]}?)" if close else ""))
    return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; raise :class:`ConfigError` naming each bad setting
    (unknown ``VPP_*`` variables included)."""
    unknown = unknown_variables(os.environ)
    if unknown:
        raise ConfigError("unknown environment variables:\n" + "\n".join(f"  {u}" for u in unknown))
    token = _CONFIG_FILE.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"  {_setting_name(err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        source = f" (config file {config_file})" if config_file else ""
        raise ConfigError("invalid configuration" + source + ":\n" + "\n".join(lines)) from None
    finally:
        _CONFIG_FILE.reset(token)
