"""Partial group aggregates: what one engine instance knows of each group, and their sum.

With the telemetry topic split among instances (a Kafka consumer group), each instance
holds the twins of the sites on its partitions only. Its aggregate of a group is partial;
the fleet's is the sum over instances. Bounds, counts and moments add up, but P50/P90 and
efficiencies do not (a quantile of a sum is not the sum of quantiles), so an instance's
partial carries the additive sums behind its snapshot (:class:`vpp.fleet.hierarchy.Sums`:
Σμ, Σσ², Σupper per quantity, state counts, capacity-weighted efficiency sums) and the
combined view derives quantiles from the summed moments with the same code a single
instance uses. The sum of the partials of disjoint partitions is therefore the aggregate
one instance holding every site would compute (the test checks it to 1e-9).

Freshness. A partial older than ``max_age_s`` (its instance died, or is cut off) is not
trusted for what it expects: its sites contribute nothing to the expected values and the
lower bounds, but their last known upper bounds stay in the upper bounds — the view widens
instead of pretending the sites are gone. When two partials claim one partition (during
a rebalance both the old and the new owner may have published), the newer one counts and
the older is treated as stale; a stale partial whose partitions all have a fresh owner
again (a dead instance's, after the group moved its partitions) is dropped altogether.
The view says how much of the fleet it covers: partitions with a fresh partial, out of
the total.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from vpp.fleet.hierarchy import FLEET_ID, FleetHierarchy, NodeAggregate, derive
from vpp.twins.states import STATE_FAMILIES

F64 = npt.NDArray[np.float64]
_PARTS = ("total", "free", "held")


class GroupPartial(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One instance's sums for one group (the value on ``vpp.aggregates``, keyed
    ``group|instance``)."""

    group: str
    instance: str
    partitions: list[int]  # the telemetry partitions the instance owned
    partitions_total: int
    ts: float  # epoch seconds of the snapshot the sums come from
    total: dict[str, float]
    free: dict[str, float]
    held: dict[str, float]
    counts: dict[str, list[int]]
    # what this instance could not cover of each group target under way (dispatch id ->
    # kW, signed like the target): the other instances take it over (vpp.dispatch.shares)
    shortfall_kw: dict[str, float] = msgspec.field(default_factory=dict)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(GroupPartial)


def partial_key(p: GroupPartial) -> bytes:
    return f"{p.group}|{p.instance}".encode()


def encode_partial(p: GroupPartial) -> bytes:
    return _encoder.encode(p)


def decode_partial(raw: bytes) -> GroupPartial:
    """A partial from the bus (``msgspec`` errors name the field that is wrong)."""
    return _decoder.decode(raw)


def partials_of(
    hierarchy: FleetHierarchy,
    instance: str,
    partitions: Iterable[int],
    partitions_total: int,
    shortfalls: Mapping[str, Mapping[str, float]] | None = None,
) -> list[GroupPartial]:
    """This instance's partial of every group in its newest snapshot (with ``shortfalls``:
    per group, the dispatch shortfalls it reports)."""
    sums, snap = hierarchy.sums, hierarchy.latest
    if sums is None or snap is None:
        return []
    owned = sorted(int(p) for p in partitions)
    ts = snap.as_of.timestamp()
    out = []
    for g, name in enumerate(sums.groups):
        parts = {part: {k: float(v[g]) for k, v in getattr(sums, part).items()} for part in _PARTS}
        out.append(
            GroupPartial(
                group=name,
                instance=instance,
                partitions=owned,
                partitions_total=partitions_total,
                ts=ts,
                counts={fam: [int(x) for x in c[g]] for fam, c in sums.counts.items()},
                shortfall_kw=dict((shortfalls or {}).get(name, {})),
                **parts,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Coverage:
    partitions_reported: int
    partitions_total: int
    stale_instances: list[str]
    instances: list[str]  # whose partials count

    @property
    def complete(self) -> bool:
        return self.partitions_reported == self.partitions_total and not self.stale_instances


@dataclass(frozen=True, slots=True)
class CombinedView:
    fleet: NodeAggregate
    groups: dict[str, NodeAggregate]
    coverage: Coverage

    def to_dict(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet.to_dict(),
            "groups": {g: n.to_dict() for g, n in self.groups.items()},
            "coverage": {
                "partitions_reported": self.coverage.partitions_reported,
                "partitions_total": self.coverage.partitions_total,
                "stale_instances": self.coverage.stale_instances,
                "instances": self.coverage.instances,
            },
        }


def whole_fleet(view: CombinedView | None, local: Any) -> Any:
    """What to answer for the whole fleet: the combined view when other instances share
    the fleet, else this instance's own snapshot (the same sums, without the publishing
    delay)."""
    if view is not None and len(view.coverage.instances) > 1:
        return view
    return local


def _fresh_and_stale(
    partials: Sequence[GroupPartial], now_s: float, max_age_s: float
) -> tuple[set[str], set[str]]:
    """Instances whose partials count, and those whose only widen the upper bounds."""
    newest: dict[str, GroupPartial] = {}
    for p in partials:
        if p.instance not in newest or p.ts > newest[p.instance].ts:
            newest[p.instance] = p
    fresh = {i for i, p in newest.items() if now_s - p.ts <= max_age_s}
    owner: dict[int, str] = {}
    for i in sorted(fresh, key=lambda i: -newest[i].ts):  # newest first claims a partition
        clash = [q for q in newest[i].partitions if q in owner]
        if clash:
            fresh.discard(i)
            continue
        for q in newest[i].partitions:
            owner[q] = i
    # An old partial whose partitions all have a fresh owner again (its instance died and
    # the group moved them) is superseded: it neither counts nor widens anything.
    stale = {i for i in set(newest) - fresh if any(q not in owner for q in newest[i].partitions)}
    return fresh, stale


def fresh_partials(
    partials: Sequence[GroupPartial], now_s: float, max_age_s: float
) -> list[GroupPartial]:
    """The partials that count now (their instance's newest, fresh, not superseded)."""
    fresh, _ = _fresh_and_stale(partials, now_s, max_age_s)
    newest: dict[tuple[str, str], GroupPartial] = {}
    for p in partials:
        key = (p.group, p.instance)
        if p.instance in fresh and (key not in newest or p.ts > newest[key].ts):
            newest[key] = p
    return list(newest.values())


def combine(partials: Sequence[GroupPartial], now_s: float, max_age_s: float) -> CombinedView:
    """The fleet view from every instance's newest partials (see the module docstring)."""
    if not partials:
        raise ValueError("no partial aggregates to combine")
    fresh, stale = _fresh_and_stale(partials, now_s, max_age_s)
    groups = sorted({p.group for p in partials})
    index = {g: k for k, g in enumerate(groups)}
    size = len(groups) + 1  # the groups, then the fleet
    fleet_id = len(groups)
    sums: dict[str, dict[str, F64]] = {
        part: {k: np.zeros(size) for p in partials for k in getattr(p, part)} for part in _PARTS
    }
    counts = {fam: np.zeros((size, len(e)), dtype=np.int64) for fam, e in STATE_FAMILIES.items()}
    partitions_total = max((p.partitions_total for p in partials), default=0)
    reported: set[int] = set()
    for p in partials:
        if p.instance not in fresh and p.instance not in stale:
            continue
        k = index[p.group]
        if p.instance in fresh:
            reported.update(p.partitions)
            for part in _PARTS:
                for key, v in getattr(p, part).items():
                    sums[part][key][k] += v
            for fam, c in p.counts.items():
                counts[fam][k] += np.asarray(c, dtype=np.int64)
        else:  # stale: only the upper bounds, of what the sites could still do
            for part in _PARTS:
                for key, v in getattr(p, part).items():
                    if key.endswith(".upper"):
                        sums[part][key][k] += v
    for part in _PARTS:
        for arr in sums[part].values():
            arr[fleet_id] = arr[:fleet_id].sum()
    for per in counts.values():
        per[fleet_id] = per[:fleet_id].sum(axis=0)
    total, free, held = (derive(sums[part]) for part in _PARTS)
    as_of = datetime.fromtimestamp(
        max((p.ts for p in partials if p.instance in fresh), default=now_s), UTC
    )
    nodes = {
        g: FleetHierarchy.node("group", g, FLEET_ID, index[g], total, free, held, counts, as_of)
        for g in groups
    }
    fleet = FleetHierarchy.node("fleet", FLEET_ID, None, fleet_id, total, free, held, counts, as_of)
    return CombinedView(
        fleet=fleet,
        groups=nodes,
        coverage=Coverage(len(reported), partitions_total, sorted(stale), sorted(fresh)),
    )
