"""Request and response models of the API (what goes over the wire, nothing internal)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list: ``data`` and the total ``count`` matching the filters."""

    data: list[T]
    count: int = Field(ge=0, description="items matching the filters, over all pages")


class Problem(BaseModel):
    detail: str


# -- fleet ---------------------------------------------------------------------------------


class Bounds(BaseModel):
    expected: float
    lower: float
    upper: float


class CapacityPublic(BaseModel):
    """What part of a node's sites can deliver: the committed part (peak shaving, site
    targets) or the free part (what the market may be offered)."""

    sites: int
    e_discharge_kwh: Bounds
    e_charge_kwh: Bounds
    p_discharge_kw: Bounds
    p_charge_kw: Bounds
    p_discharge_p50_kw: float
    p_discharge_p90_kw: float
    p_charge_p50_kw: float
    p_charge_p90_kw: float
    p_discharge_rated_p50_kw: float = Field(description="ratings at P50 availability")
    p_discharge_rated_p90_kw: float = Field(description="ratings at P90 availability")
    p_charge_rated_p50_kw: float
    p_charge_rated_p90_kw: float


class NodePublic(BaseModel):
    """An aggregate of the hierarchy (fleet, group or site), each figure with its bounds."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "level": "group",
                "node_id": "north",
                "parent": "fleet",
                "sites": 25,
                "counts": {"connectivity": {"online": 24, "stale": 1, "offline": 0, "unknown": 0}},
                "e_discharge_kwh": {"expected": 761.0, "lower": 752.1, "upper": 770.3},
            }
        }
    )

    level: Literal["fleet", "group", "site"]
    node_id: str
    parent: str | None
    sites: int
    counts: dict[str, dict[str, int]]
    e_discharge_kwh: Bounds = Field(description="deliverable above soc_min, at the grid (kWh)")
    e_charge_kwh: Bounds = Field(description="absorbable below soc_max, at the grid (kWh)")
    p_discharge_kw: Bounds = Field(description="max discharge power honouring SoC limits")
    p_charge_kw: Bounds = Field(description="max charge power honouring SoC limits")
    p_net_kw: Bounds = Field(description="current net battery power, + = discharge")
    p_discharge_p50_kw: float
    p_discharge_p90_kw: float
    p_charge_p50_kw: float
    p_charge_p90_kw: float
    as_of: datetime
    committed: CapacityPublic = Field(description="committed elsewhere now (not for the market)")
    free: CapacityPublic = Field(description="neither committed nor unable to take a command")


class CoveragePublic(BaseModel):
    """How much of the fleet the instances' fresh partial aggregates cover."""

    partitions_reported: int = Field(description="telemetry partitions with a fresh partial")
    partitions_total: int
    stale_instances: list[str] = Field(
        description="instances whose partial is too old: their sites only widen upper bounds"
    )
    instances: list[str] = Field(description="instances whose partials count")


class FleetPublic(BaseModel):
    fleet: NodePublic
    groups: list[NodePublic]
    coverage: CoveragePublic | None = Field(
        None,
        description="this instance's view is its own partitions'; the combined view of "
        "every instance covers this much (null until partials arrive)",
    )


class GroupPublic(BaseModel):
    group: NodePublic
    parent: str
    sites: Page[NodePublic]


class SitePublic(BaseModel):
    """A site twin: registry data, newest reading, states, and its aggregate."""

    site_id: str
    group: str
    active: bool
    capacity_kwh: float
    p_charge_max_kw: float
    p_discharge_max_kw: float
    eff_charge: float
    eff_discharge: float
    soc_min: float
    soc_max: float
    telemetry_interval_s: float
    connectivity: str
    operation: str
    command: str
    last_ts: datetime | None
    age_s: float | None
    seq: int | None
    soc: float | None
    p_kw: float | None
    site_load_kw: float | None
    pv_kw: float | None
    available: bool
    mode: str | None
    health: float
    e_kwh: float | None
    aggregate: NodePublic | None = None


class SiteTracePublic(BaseModel):
    """A site's kept readings, oldest first: one sample per ``day_every_s`` at most over
    the last ``day_depth`` of them, then one per ``every_s`` at most for the last ``depth``
    (``ingest.day_trace_*`` and ``ingest.trace_*``; in memory only, empty after a restart)."""

    site_id: str
    every_s: float | None
    depth: int
    day_every_s: float | None
    day_depth: int
    ts: list[float] = Field(description="reading times, epoch seconds UTC")
    soc: list[float | None]
    p_kw: list[float | None]
    site_load_kw: list[float | None]


class SiteEventPublic(BaseModel):
    site_id: str
    ts: datetime
    kind: str
    from_state: str
    to_state: str


# -- bids ----------------------------------------------------------------------------------


class SegmentModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_per_mwh: float = Field(allow_inf_nan=False, ge=-1e6, le=1e6, description="currency/MWh")
    quantity_mw: float = Field(gt=0, le=1e6, allow_inf_nan=False, description="incremental MW")


class BidPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "bid_id": "north-energy_rt-20261121T1405Z",
                "market": "caiso",
                "group": "north",
                "product": "energy_rt",
                "interval_start": "2026-11-21T14:05:00+00:00",
                "status": "draft",
                "version": 1,
                "discharge": [{"price_per_mwh": 42.5, "quantity_mw": 0.12}],
                "charge": [{"price_per_mwh": 18.0, "quantity_mw": 0.08}],
            }
        }
    )

    bid_id: str
    market: str
    group: str
    product: str
    interval_start: datetime
    interval_end: datetime
    gate_closure: datetime
    status: str
    version: int
    solve_id: str | None
    created_at: datetime
    updated_at: datetime
    author: str = Field(description="who made the current version")
    approved_by: str | None = Field(
        None,
        description="who approved the current version: an operator's key or the engine's "
        "auto-approval policy",
    )
    discharge: list[SegmentModel] = Field(description="offers, price ascending")
    charge: list[SegmentModel] = Field(description="charge bids, price descending")


class BidVersionPublic(BaseModel):
    version: int
    discharge: list[SegmentModel]
    charge: list[SegmentModel]
    author: str
    source: str
    comment: str | None
    created_at: datetime


class ReviewPublic(BaseModel):
    version: int
    action: str
    from_status: str
    to_status: str
    actor: str
    comment: str | None
    ts: datetime


class BidDetailPublic(BaseModel):
    bid: BidPublic
    versions: list[BidVersionPublic]
    reviews: list[ReviewPublic]
    solve_report: dict[str, Any] | None = Field(
        description="the optimizer run that produced the bid"
    )


class BidEdit(BaseModel):
    """A new curve for the bid (a new version). ``version`` is the one being edited."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "version": 1,
                "discharge": [{"price_per_mwh": 45.0, "quantity_mw": 0.1}],
                "charge": [],
                "comment": "raise the offer price",
            }
        },
    )

    version: int = Field(ge=1)
    discharge: list[SegmentModel] = Field(default_factory=list, max_length=1000)
    charge: list[SegmentModel] = Field(default_factory=list, max_length=1000)
    comment: str | None = Field(None, max_length=2000)
    override_reason: str | None = Field(
        None,
        min_length=3,
        max_length=2000,
        description="admins only: accept a curve beyond the group's free capability, and why "
        "(audited)",
    )


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"version": 2}})

    version: int = Field(ge=1, description="the version being approved or rejected")
    comment: str | None = Field(None, max_length=2000)


class Resolution(BaseModel):
    """What the market says became of a bid the engine could not find out about."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"version": 1, "outcome": "accepted", "comment": "market portal, 14:02"}
        },
    )

    version: int = Field(ge=1)
    outcome: Literal["accepted", "refused", "missed"] = Field(
        description="accepted or refused by the market, or missed: it never reached it"
    )
    comment: str = Field(min_length=1, max_length=2000, description="where the answer came from")


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)


class Conflict(BaseModel):
    detail: str
    current: BidPublic | None


class Invalid(BaseModel):
    detail: str
    problems: list[str]


class SubmitPublic(BaseModel):
    tx_id: str
    accepted: list[str]
    refused: dict[str, str]
    bid: BidPublic


class AwardPublic(BaseModel):
    award_id: str
    bid_id: str | None
    market: str
    group: str
    product: str
    interval_start: datetime
    interval_end: datetime
    p_mw: float = Field(description="awarded power, + = discharge / reserve capacity")
    price_per_mwh: float
    created_at: datetime


# -- keys ----------------------------------------------------------------------------------


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")
    role: Literal["viewer", "operator", "admin"]


class KeyPublic(BaseModel):
    key_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(BaseModel):
    key_id: str
    name: str
    role: str
    key: str = Field(description="shown once; only its hash is stored")


class AuditPublic(BaseModel):
    audit_id: int
    ts: datetime
    actor: str
    role: str
    action: str
    resource_type: str
    resource_id: str
    before: Any
    after: Any
