"""Dispatch shares: how the engine instances that share a fleet split one group target.

With the telemetry topic split among instances (one Kafka consumer group), each instance
commands only the sites it owns. Every instance learns every group target (the targets
topic) and the other instances' partial aggregates (the aggregates topic), and from the
same inputs computes the same split, so no coordinator is needed:

- each instance ``i`` has ``h_i ≥ 0`` kW of deliverable headroom in the target's
  direction: the expected discharge (or charge) power of its free sites in the group, from
  its newest fresh partial;
- its base share is ``b_i = T·h_i/H`` with ``H = Σ h_i`` (``T/n`` each when nobody has
  headroom), so a target the group can meet is met with every instance at the same
  fraction of what it can do;
- an instance that cannot allocate its base share reports the difference ``s_j = b_j −
  a_j`` (``a_j``: what it allocated) in its partial. It keeps ``b_j − s_j``; the total
  ``S = Σ s_j`` goes to the instances reporting none, in proportion to their spare
  headroom ``h_k − b_k`` and at most that. What nobody can take stays short.

The report is measured against the *base* share, not the share after re-allocation, so it
is stable: an instance relieved of ``s_j`` allocates ``b_j − s_j`` and still reports
``s_j``. The hand-over takes one partial period (``ingest.partials_every_s``) plus a
dispatch tick, well within a market interval. A partial older than
``ingest.partials_max_age_s`` does not count: a dead instance's base share moves to the
others when its partial goes stale, and its sites' partitions move to the survivors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vpp.dispatch.targets import GroupTarget
from vpp.fleet.partials import GroupPartial


def split_shares(
    target_kw: float, headroom_kw: Mapping[str, float], shortfall_kw: Mapping[str, float]
) -> dict[str, tuple[float, float]]:
    """Each instance's (base share, share) of ``target_kw``, signed like the target.

    ``headroom_kw``: every instance's headroom in the target's direction (≥ 0);
    ``shortfall_kw``: what instances reported they could not allocate of their base share
    (signed like the target; an instance not named reported none)."""
    if not headroom_kw:
        return {}
    sign = -1.0 if target_kw < 0 else 1.0
    need = abs(target_kw)
    h = {i: max(0.0, float(v)) for i, v in headroom_kw.items()}
    total = sum(h.values())
    n = len(h)
    base = {i: need * (h[i] / total if total > 0 else 1.0 / n) for i in h}
    short = {i: min(base[i], max(0.0, sign * float(shortfall_kw.get(i, 0.0)))) for i in h}
    released = sum(short.values())
    spare = {i: max(0.0, h[i] - base[i]) for i in h if short[i] <= 1e-9}
    spare_total = sum(spare.values())
    share = {i: base[i] - short[i] for i in h}
    if released > 0 and spare_total > 0:
        for i, room in spare.items():
            share[i] += min(room, released * room / spare_total)
    return {i: (sign * base[i], sign * share[i]) for i in h}


class ShareSource:
    """This instance's share of a group target, from the fresh partials (``partials``).

    ``None`` when the instance is alone with the group (no other fresh partial names it):
    it then takes the whole target, as a single engine does. A site's own target is never
    split: only the instance owning the site can command it."""

    def __init__(
        self,
        instance: Callable[[], str],
        partials: Callable[[], list[GroupPartial]],
        is_site: Callable[[str], bool],
    ) -> None:
        self.instance = instance
        self.partials = partials
        self.is_site = is_site

    def __call__(self, target: GroupTarget) -> tuple[float, float] | None:
        if self.is_site(target.group):
            return None
        me = self.instance()
        mine = [p for p in self.partials() if p.group == target.group]
        if not any(p.instance != me for p in mine):
            return None
        key = "p_charge.mean" if target.target_kw < 0 else "p_discharge.mean"
        headroom = {p.instance: p.free.get(key, 0.0) for p in mine}
        headroom.setdefault(me, 0.0)  # no partial of ours yet: nothing we can promise
        short = {
            p.instance: p.shortfall_kw[target.dispatch_id]
            for p in mine
            if target.dispatch_id in p.shortfall_kw
        }
        return split_shares(target.target_kw, headroom, short)[me]
