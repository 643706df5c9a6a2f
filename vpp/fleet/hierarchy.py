"""The fleet hierarchy site → group → fleet, recomputed per batch with vectorized sums.

:meth:`FleetHierarchy.refresh` turns the store into an immutable :class:`FleetSnapshot`:
per-site estimates (see :mod:`vpp.fleet.estimates`) summed per group with ``bincount`` and
over the fleet, counts by state, and availability quantiles. A snapshot answers any node
(fleet, a group, a site) and navigates up (``parent``) and down (``children``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vpp.fleet.estimates import (
    EstimateSettings,
    SiteEstimates,
    Triple,
    estimate,
    quantile_sums,
    wsum,
)
from vpp.twins.states import STATE_FAMILIES
from vpp.twins.store import FleetStore

Level = Literal["fleet", "group", "site"]
FLEET_ID = "fleet"


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
    as_of: datetime

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        return out


_QUANTITIES = ("e_discharge_kwh", "e_charge_kwh", "p_discharge_kw", "p_charge_kw", "p_net_kw")


class FleetSnapshot:
    """The hierarchy at one instant (immutable; safe to share with the API)."""

    def __init__(
        self,
        store: FleetStore,
        est: SiteEstimates,
        fleet: NodeAggregate,
        groups: dict[str, NodeAggregate],
        as_of: datetime,
    ) -> None:
        self._store = store
        self._est = est
        self.fleet = fleet
        self.groups = groups
        self.as_of = as_of
        self._ids = list(store.ids)
        self._group_of = store.column("group").copy()
        self._counted = est.counted.copy()
        self._group_names = list(store.groups)
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
        p_dis, p_chg = b(est.p_discharge_kw), b(est.p_charge_kw)
        counts = {
            fam: {
                name.lower(): int(self._states[fam][i] == code)
                for name, code in STATE_FAMILIES[fam].__members__.items()
            }
            for fam in STATE_FAMILIES
        }
        return NodeAggregate(
            "site",
            site_id,
            self._group_names[int(self._group_of[i])],
            1,
            counts,
            b(est.e_discharge_kwh),
            b(est.e_charge_kwh),
            p_dis,
            p_chg,
            b(est.p_net_kw),
            p_dis.expected if a >= 0.5 else 0.0,
            p_dis.lower if a >= 0.9 else 0.0,
            p_chg.expected if a >= 0.5 else 0.0,
            p_chg.lower if a >= 0.9 else 0.0,
            self.as_of,
        )


class FleetHierarchy:
    """Computes :class:`FleetSnapshot` objects from a store; the newest is ``latest``."""

    def __init__(self, store: FleetStore, settings: EstimateSettings | None = None) -> None:
        self.store = store
        self.settings = settings or EstimateSettings()
        self.latest: FleetSnapshot | None = None

    def refresh(self, now_s: float) -> FleetSnapshot:
        store = self.store
        est = estimate(store, now_s, self.settings)
        counted = est.counted
        groups = len(store.groups)
        gid = np.where(counted, store.column("group"), groups).astype(np.int64)
        size = groups + 1  # the last bucket collects uncounted sites and is dropped

        sums: dict[str, npt.NDArray[np.float64]] = {}
        for q in _QUANTITIES:
            t: Triple = getattr(est, q)
            for part in ("expected", "lower", "upper"):
                sums[f"{q}.{part}"] = wsum(gid, getattr(t, part), size)[:groups]
        avail = est.availability
        q_dis = quantile_sums(est.p_discharge_kw, avail, gid, size)
        q_chg = quantile_sums(est.p_charge_kw, avail, gid, size)
        site_counts = np.bincount(gid, minlength=size)[:groups]
        counts: dict[str, npt.NDArray[np.int64]] = {}
        for fam, col in (("connectivity", "conn"), ("operation", "op"), ("command", "cmd")):
            k = len(STATE_FAMILIES[fam])
            flat = np.bincount(gid * k + store.column(col), minlength=size * k)
            counts[fam] = flat.reshape(size, k)[:groups]

        as_of = datetime.fromtimestamp(now_s, UTC)
        group_nodes: dict[str, NodeAggregate] = {}
        for g, name in enumerate(store.groups):
            if site_counts[g] == 0:
                continue
            group_nodes[name] = self._node(
                "group",
                name,
                FLEET_ID,
                int(site_counts[g]),
                {f: c[g] for f, c in counts.items()},
                {k: float(v[g]) for k, v in sums.items()},
                (q_dis[0][g], q_dis[1][g], q_chg[0][g], q_chg[1][g]),
                as_of,
            )
        fleet_q = quantile_sums(est.p_discharge_kw, avail, np.where(counted, 0, 1), 2)
        fleet_qc = quantile_sums(est.p_charge_kw, avail, np.where(counted, 0, 1), 2)
        fleet = self._node(
            "fleet",
            FLEET_ID,
            None,
            int(site_counts.sum()),
            {f: c.sum(axis=0) for f, c in counts.items()},
            {k: float(v.sum()) for k, v in sums.items()},
            (fleet_q[0][0], fleet_q[1][0], fleet_qc[0][0], fleet_qc[1][0]),
            as_of,
        )
        self.latest = FleetSnapshot(store, est, fleet, group_nodes, as_of)
        return self.latest

    @staticmethod
    def _node(
        level: Level,
        node_id: str,
        parent: str | None,
        sites: int,
        counts: dict[str, npt.NDArray[np.int64]],
        sums: dict[str, float],
        quantiles: tuple[float, float, float, float],
        as_of: datetime,
    ) -> NodeAggregate:
        def b(q: str) -> Bounds:
            return Bounds(sums[f"{q}.expected"], sums[f"{q}.lower"], sums[f"{q}.upper"])

        named = {
            fam: {m.name.lower(): int(counts[fam][m.value]) for m in STATE_FAMILIES[fam]}
            for fam in STATE_FAMILIES
        }
        return NodeAggregate(
            level,
            node_id,
            parent,
            sites,
            named,
            b("e_discharge_kwh"),
            b("e_charge_kwh"),
            b("p_discharge_kw"),
            b("p_charge_kw"),
            b("p_net_kw"),
            float(quantiles[0]),
            float(quantiles[1]),
            float(quantiles[2]),
            float(quantiles[3]),
            as_of,
        )
