"""The fleet hierarchy site → group → fleet, recomputed per batch with vectorized sums.

:meth:`FleetHierarchy.refresh` turns the store into an immutable :class:`FleetSnapshot`:
per-site estimates (see :mod:`vpp.fleet.estimates`) summed per group with ``bincount`` and
over the fleet, counts by state, and availability quantiles. A snapshot answers any node
(fleet, a group, a site) and navigates up (``parent``) and down (``children``).

Commitment: every kW of a site is committed at most once per interval. Sites committed
elsewhere now (a peak-shaving plan, an operator's site target) are passed to ``refresh``
as a mask; every node then reports its :attr:`NodeAggregate.committed` capacity and its
:attr:`NodeAggregate.free` capacity — sites neither committed nor unable to take a command
now (unusable, or unresponsive to commands) — each with bounds and P50/P90. The bidder
sizes bids to the free part only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from vpp.fleet.estimates import (
    EstimateSettings,
    SiteEstimates,
    Triple,
    estimate,
    moment_sums,
    quantiles,
    wsum,
)
from vpp.records import plain, utc_iso
from vpp.twins.states import STATE_FAMILIES
from vpp.twins.store import FleetStore

Level = Literal["fleet", "group", "site"]
FLEET_ID = "fleet"
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Bounds:
    expected: float
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class NodeAggregate:
    """What a node of the hierarchy can do now, each figure with its bounds."""

    level: Level
    node_id: str
    parent: str | None
    sites: int
    counts: dict[str, dict[str, int]]
    e_discharge_kwh: Bounds  # deliverable above soc_min, at the grid
    e_charge_kwh: Bounds  # absorbable below soc_max, at the grid
    p_discharge_kw: Bounds  # max discharge power honouring SoC limits
    p_charge_kw: Bounds  # max charge power honouring SoC limits
    p_net_kw: Bounds  # current net battery power, + = discharge
    p_discharge_p50_kw: float
    p_discharge_p90_kw: float
    p_charge_p50_kw: float
    p_charge_p90_kw: float
    eta_charge: float  # capacity-weighted one-way efficiencies of the node's counted sites
    eta_discharge: float
    as_of: datetime
    committed: Capacity  # sites committed elsewhere now (peak shaving, site targets)
    free: Capacity  # what the market may be offered

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (:func:`vpp.records.plain`: no deep copies)."""
        out = plain(self)
        out["as_of"] = utc_iso(self.as_of)
        return out


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a subset of a node's sites (its committed or its free ones) can deliver.

    ``p_*_p50/p90_kw`` are energy-limited (held for the estimates' ``sustain_h``);
    ``p_*_rated_p50/p90_kw`` are ratings of the sites that will be there (availability only),
    for optimizations that constrain energy themselves.
    """

    sites: int
    e_discharge_kwh: Bounds
    e_charge_kwh: Bounds
    p_discharge_kw: Bounds
    p_charge_kw: Bounds
    p_discharge_p50_kw: float
    p_discharge_p90_kw: float
    p_charge_p50_kw: float
    p_charge_p90_kw: float
    p_discharge_rated_p50_kw: float
    p_discharge_rated_p90_kw: float
    p_charge_rated_p50_kw: float
    p_charge_rated_p90_kw: float
    p_discharge_bid_p50_kw: float  # held over the bid horizon (see vpp.fleet.estimates)
    p_discharge_bid_p90_kw: float
    p_charge_bid_p50_kw: float
    p_charge_bid_p90_kw: float

    @classmethod
    def empty(cls) -> Capacity:
        zero = Bounds(0.0, 0.0, 0.0)
        return cls(
            sites=0,
            e_discharge_kwh=zero,
            e_charge_kwh=zero,
            p_discharge_kw=zero,
            p_charge_kw=zero,
            p_discharge_p50_kw=0.0,
            p_discharge_p90_kw=0.0,
            p_charge_p50_kw=0.0,
            p_charge_p90_kw=0.0,
            p_discharge_rated_p50_kw=0.0,
            p_discharge_rated_p90_kw=0.0,
            p_charge_rated_p50_kw=0.0,
            p_charge_rated_p90_kw=0.0,
            p_discharge_bid_p50_kw=0.0,
            p_discharge_bid_p90_kw=0.0,
            p_charge_bid_p50_kw=0.0,
            p_charge_bid_p90_kw=0.0,
        )


_QUANTITIES = ("e_discharge_kwh", "e_charge_kwh", "p_discharge_kw", "p_charge_kw", "p_net_kw")
_QUANTILES = (
    ("p_discharge", "p_discharge_kw"),
    ("p_charge", "p_charge_kw"),
    ("p_discharge_rated", "p_discharge_rated_kw"),
    ("p_charge_rated", "p_charge_rated_kw"),
    ("p_discharge_bid", "p_discharge_bid_kw"),
    ("p_charge_bid", "p_charge_bid_kw"),
)


class FleetSnapshot:
    """The hierarchy at one instant (immutable; safe to share with the API and the bidder's
    worker thread).

    Everything a reader needs is copied at refresh; the only live structures read later
    are the store's id and group indexes, which only grow (a site is registered, never
    removed) and are guarded by the snapshot's own size, so a site registered after the
    snapshot is simply not in it.
    """

    def __init__(
        self,
        store: FleetStore,
        est: SiteEstimates,
        fleet: NodeAggregate,
        groups: dict[str, NodeAggregate],
        as_of: datetime,
        committed: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        self._store = store
        self._est = est
        self._committed = (
            committed.copy() if committed is not None else np.zeros(est.counted.size, dtype=bool)
        )
        self.fleet = fleet
        self.groups = groups
        self.as_of = as_of
        self._ids = list(store.ids)
        self._group_of = store.column("group").copy()
        self._counted = est.counted.copy()
        self._group_names = list(store.groups)
        self._eta_charge = store.column("eff_charge").copy()
        self._eta_discharge = store.column("eff_discharge").copy()
        self._states = {
            fam: store.column(col).copy()
            for fam, col in (("connectivity", "conn"), ("operation", "op"), ("command", "cmd"))
        }

    def node(self, level: Level, node_id: str = FLEET_ID) -> NodeAggregate | None:
        if level == "fleet":
            return self.fleet
        if level == "group":
            return self.groups.get(node_id)
        return self.site(node_id)

    def group_sites(self, group: str) -> list[str]:
        gid = self._store.group_index.get(group)
        if gid is None:
            return []
        rows = np.flatnonzero((self._group_of == gid) & self._counted)
        return [self._ids[i] for i in rows.tolist()]

    def children(self, level: Level, node_id: str = FLEET_ID) -> list[str]:
        if level == "fleet":
            return sorted(self.groups)
        if level == "group":
            return self.group_sites(node_id)
        return []

    def parent(self, level: Level, node_id: str) -> tuple[Level, str] | None:
        if level == "fleet":
            return None
        if level == "group":
            return ("fleet", FLEET_ID)
        site = self.site(node_id)
        return ("group", site.parent) if site and site.parent else None

    def site(self, site_id: str) -> NodeAggregate | None:
        i = self._store.index.get(site_id)
        if i is None or i >= len(self._ids) or not self._counted[i]:
            return None
        est = self._est

        def b(t: Triple) -> Bounds:
            return Bounds(float(t.expected[i]), float(t.lower[i]), float(t.upper[i]))

        a = float(est.availability[i])

        def quantiles(t: Triple) -> tuple[float, float]:
            return (
                float(t.expected[i]) if a >= 0.5 else 0.0,
                float(t.lower[i]) if a >= 0.9 else 0.0,
            )

        p_dis, p_chg = b(est.p_discharge_kw), b(est.p_charge_kw)
        dis50, dis90 = quantiles(est.p_discharge_kw)
        chg50, chg90 = quantiles(est.p_charge_kw)
        rdis50, rdis90 = quantiles(est.p_discharge_rated_kw)
        rchg50, rchg90 = quantiles(est.p_charge_rated_kw)
        bdis50, bdis90 = quantiles(est.p_discharge_bid_kw)
        bchg50, bchg90 = quantiles(est.p_charge_bid_kw)
        mine = Capacity(
            sites=1,
            e_discharge_kwh=b(est.e_discharge_kwh),
            e_charge_kwh=b(est.e_charge_kwh),
            p_discharge_kw=p_dis,
            p_charge_kw=p_chg,
            p_discharge_p50_kw=dis50,
            p_discharge_p90_kw=dis90,
            p_charge_p50_kw=chg50,
            p_charge_p90_kw=chg90,
            p_discharge_rated_p50_kw=rdis50,
            p_discharge_rated_p90_kw=rdis90,
            p_charge_rated_p50_kw=rchg50,
            p_charge_rated_p90_kw=rchg90,
            p_discharge_bid_p50_kw=bdis50,
            p_discharge_bid_p90_kw=bdis90,
            p_charge_bid_p50_kw=bchg50,
            p_charge_bid_p90_kw=bchg90,
        )
        none = Capacity.empty()
        held = bool(self._committed[i]) if i < self._committed.size else False
        offerable = not held and bool(est.dispatchable[i])
        counts = {}
        for fam, members in _MEMBERS.items():
            state = int(self._states[fam][i])
            counts[fam] = {name: int(state == code) for name, code in members}
        return NodeAggregate(
            level="site",
            node_id=site_id,
            parent=self._group_names[int(self._group_of[i])],
            sites=1,
            counts=counts,
            e_discharge_kwh=mine.e_discharge_kwh,
            e_charge_kwh=mine.e_charge_kwh,
            p_discharge_kw=p_dis,
            p_charge_kw=p_chg,
            p_net_kw=b(est.p_net_kw),
            p_discharge_p50_kw=mine.p_discharge_p50_kw,
            p_discharge_p90_kw=mine.p_discharge_p90_kw,
            p_charge_p50_kw=mine.p_charge_p50_kw,
            p_charge_p90_kw=mine.p_charge_p90_kw,
            eta_charge=float(self._eta_charge[i]),
            eta_discharge=float(self._eta_discharge[i]),
            as_of=self.as_of,
            committed=mine if held else none,
            free=mine if offerable else none,
        )


def _sums(est: SiteEstimates, gid: npt.NDArray[np.int64], size: int) -> dict[str, F64]:
    """Bounds sums and availability quantiles per group id (the last id is dropped)."""
    out: dict[str, F64] = {"sites": np.bincount(gid, minlength=size).astype(np.float64)}
    for q in _QUANTITIES:
        t: Triple = getattr(est, q)
        for part in ("expected", "lower", "upper"):
            out[f"{q}.{part}"] = wsum(gid, getattr(t, part), size)
    for name, q in _QUANTILES:
        mean, var, upper = moment_sums(getattr(est, q), est.availability, gid, size)
        out[f"{name}.mean"], out[f"{name}.var"], out[f"{name}.upper"] = mean, var, upper
    return out


def derive(sums: dict[str, F64]) -> dict[str, F64]:
    """The additive sums (one instance's, or several instances' added) with what follows
    from them: P50/P90 from the moment sums, efficiencies from their weighted sums."""
    out = dict(sums)
    for name, _ in _QUANTILES:
        p50, p90 = quantiles(sums[f"{name}.mean"], sums[f"{name}.var"], sums[f"{name}.upper"])
        out[f"{name}_p50_kw"], out[f"{name}_p90_kw"] = p50, p90
    if "eta.weight" in sums:
        w = sums["eta.weight"]
        for key in ("eta_charge", "eta_discharge"):
            out[key] = np.divide(
                sums[f"{key}.num"], w, out=np.full(w.shape, DEFAULT_ETA), where=w > 0
            )
    return out


# (lower-case name, code) of every state, per family: enum attribute access per site is slow.
_MEMBERS = {
    fam: [(name.lower(), int(code)) for name, code in enum.__members__.items()]
    for fam, enum in STATE_FAMILIES.items()
}

DEFAULT_ETA = 0.95  # a node without capacity (none counted) reports this efficiency


def _efficiencies(
    store: FleetStore, gid: npt.NDArray[np.int64], size: int, fleet_id: int
) -> dict[str, F64]:
    """Capacity-weighted sums for one-way efficiencies per group id, and for the fleet
    (:func:`derive` divides them).

    A node's energy model uses one η for all its sites; weighting by capacity keeps the
    energy each site can shift counted at its own loss.
    """
    cap = store.column("capacity_kwh").astype(np.float64)
    weight = np.bincount(gid, weights=cap, minlength=size).astype(np.float64)
    weight[fleet_id] = weight[:fleet_id].sum()
    out: dict[str, F64] = {"eta.weight": weight}
    for key, col in (("eta_charge", "eff_charge"), ("eta_discharge", "eff_discharge")):
        num = np.bincount(gid, weights=cap * store.column(col), minlength=size).astype(np.float64)
        num[fleet_id] = num[:fleet_id].sum()
        out[f"{key}.num"] = num
    return out


def _capacity(sums: dict[str, F64], k: int) -> Capacity:
    def b(q: str) -> Bounds:
        return Bounds(
            float(sums[f"{q}.expected"][k]),
            float(sums[f"{q}.lower"][k]),
            float(sums[f"{q}.upper"][k]),
        )

    q = {
        f"{name}_{p}": float(sums[f"{name}_{p}_kw"][k])
        for name, _ in _QUANTILES
        for p in ("p50", "p90")
    }
    return Capacity(
        sites=int(sums["sites"][k]),
        e_discharge_kwh=b("e_discharge_kwh"),
        e_charge_kwh=b("e_charge_kwh"),
        p_discharge_kw=b("p_discharge_kw"),
        p_charge_kw=b("p_charge_kw"),
        p_discharge_p50_kw=q["p_discharge_p50"],
        p_discharge_p90_kw=q["p_discharge_p90"],
        p_charge_p50_kw=q["p_charge_p50"],
        p_charge_p90_kw=q["p_charge_p90"],
        p_discharge_rated_p50_kw=q["p_discharge_rated_p50"],
        p_discharge_rated_p90_kw=q["p_discharge_rated_p90"],
        p_charge_rated_p50_kw=q["p_charge_rated_p50"],
        p_charge_rated_p90_kw=q["p_charge_rated_p90"],
        p_discharge_bid_p50_kw=q["p_discharge_bid_p50"],
        p_discharge_bid_p90_kw=q["p_discharge_bid_p90"],
        p_charge_bid_p50_kw=q["p_charge_bid_p50"],
        p_charge_bid_p90_kw=q["p_charge_bid_p90"],
    )


class GroupsView(Protocol):
    """What the bidder reads of the fleet: one aggregate per group. A single instance's
    :class:`FleetSnapshot` is one; so is the combined view of every instance's partials
    (:class:`vpp.fleet.partials.CombinedView`)."""

    @property
    def groups(self) -> dict[str, NodeAggregate]: ...


@dataclass(slots=True)
class Sums:
    """The additive sums behind the newest snapshot, indexed like its arrays (the groups in
    ``groups`` order, then the fleet): what an instance publishes as its partial."""

    groups: list[str]
    total: dict[str, F64]
    free: dict[str, F64]
    held: dict[str, F64]
    counts: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)


class FleetHierarchy:
    """Computes :class:`FleetSnapshot` objects from a store; the newest is ``latest``."""

    def __init__(self, store: FleetStore, settings: EstimateSettings | None = None) -> None:
        self.store = store
        self.settings = settings or EstimateSettings()
        self.latest: FleetSnapshot | None = None
        self.sums: Sums | None = None

    def refresh(
        self, now_s: float, committed: npt.NDArray[np.bool_] | None = None
    ) -> FleetSnapshot:
        """The hierarchy now; ``committed`` marks (by store row) sites committed elsewhere."""
        store = self.store
        est = estimate(store, now_s, self.settings)
        counted = est.counted
        n = counted.size
        mask = np.zeros(n, dtype=bool)
        if committed is not None:
            k = min(n, committed.size)
            mask[:k] = committed[:k]
        mask &= counted
        groups = len(store.groups)
        group_col = store.column("group").astype(np.int64)
        size = groups + 2  # group ids, then the fleet, then a bucket that is dropped
        fleet_id, drop = groups, groups + 1

        def by_group(select: npt.NDArray[np.bool_]) -> dict[str, F64]:
            per_group = _sums(est, np.where(select, group_col, drop), size)
            fleet = _sums(est, np.where(select, fleet_id, drop), size)
            return {
                k: np.where(np.arange(size) == fleet_id, fleet[k], v) for k, v in per_group.items()
            }

        total = by_group(counted)
        total.update(_efficiencies(store, np.where(counted, group_col, drop), size, fleet_id))
        offerable = counted & ~mask & est.dispatchable
        free = total if offerable.sum() == counted.sum() else by_group(offerable)
        held = by_group(mask) if mask.any() else {k: np.zeros(size) for k in total}
        self.sums = Sums(list(store.groups), total, free, held)  # additive: see partials
        total, free, held = derive(total), derive(free), derive(held)
        gid = np.where(counted, group_col, drop)
        counts: dict[str, npt.NDArray[np.int64]] = {}
        for fam, col in (("connectivity", "conn"), ("operation", "op"), ("command", "cmd")):
            k = len(STATE_FAMILIES[fam])
            flat = np.bincount(gid * k + store.column(col), minlength=size * k)
            per = flat.reshape(size, k)
            per[fleet_id] = per[:groups].sum(axis=0)
            counts[fam] = per
        self.sums.counts = counts

        as_of = datetime.fromtimestamp(now_s, UTC)
        group_nodes: dict[str, NodeAggregate] = {}
        for g, name in enumerate(store.groups):
            if total["sites"][g] == 0:
                continue
            group_nodes[name] = self.node(
                "group", name, FLEET_ID, g, total, free, held, counts, as_of
            )
        fleet = self.node("fleet", FLEET_ID, None, fleet_id, total, free, held, counts, as_of)
        self.latest = FleetSnapshot(store, est, fleet, group_nodes, as_of, mask)
        return self.latest

    @staticmethod
    def node(
        level: Level,
        node_id: str,
        parent: str | None,
        k: int,
        total: dict[str, F64],
        free: dict[str, F64],
        held: dict[str, F64],
        counts: dict[str, npt.NDArray[np.int64]],
        as_of: datetime,
    ) -> NodeAggregate:
        def b(q: str) -> Bounds:
            return Bounds(
                float(total[f"{q}.expected"][k]),
                float(total[f"{q}.lower"][k]),
                float(total[f"{q}.upper"][k]),
            )

        named = {
            fam: {m.name.lower(): int(counts[fam][k][m.value]) for m in STATE_FAMILIES[fam]}
            for fam in STATE_FAMILIES
        }
        return NodeAggregate(
            level=level,
            node_id=node_id,
            parent=parent,
            sites=int(total["sites"][k]),
            counts=named,
            e_discharge_kwh=b("e_discharge_kwh"),
            e_charge_kwh=b("e_charge_kwh"),
            p_discharge_kw=b("p_discharge_kw"),
            p_charge_kw=b("p_charge_kw"),
            p_net_kw=b("p_net_kw"),
            p_discharge_p50_kw=float(total["p_discharge_p50_kw"][k]),
            p_discharge_p90_kw=float(total["p_discharge_p90_kw"][k]),
            p_charge_p50_kw=float(total["p_charge_p50_kw"][k]),
            p_charge_p90_kw=float(total["p_charge_p90_kw"][k]),
            eta_charge=float(total["eta_charge"][k]),
            eta_discharge=float(total["eta_discharge"][k]),
            as_of=as_of,
            committed=_capacity(held, k),
            free=_capacity(free, k),
        )
