"""The columnar fleet store: every site twin as one row across NumPy arrays.

Sites get a dense index on registration (``ids[i]`` ↔ ``index[site_id]``); registry data
(ratings, limits, group) and the newest telemetry live in parallel arrays, so a batch of
telemetry for thousands of sites is folded with a handful of vectorized operations and
the hierarchy sums groups with ``bincount``. :class:`vpp.twins.view.SiteView` gives the
readable single-site face of one row.

Fold rule — newest wins by (``ts``, ``seq``). Within a batch the newest valid reading per
site is found with two ``maximum.at`` scatters (newest ``ts``, then newest ``seq`` at that
``ts``); it is applied only if it is newer than what the twin holds. A duplicate or
out-of-order reading therefore never moves a twin backwards, and folding any permutation
of the same readings gives the same state.

RefusedError readings never touch the arrays: validation produces a reason per row first, and
only the rows with none are folded.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from vpp.bus.base import partition_of
from vpp.telemetry.contract import MODE_CODE
from vpp.telemetry.decode import Refusal, TelemetryColumns
from vpp.twins.ids import SiteIndex
from vpp.twins.registry import SiteConfig, Tariff
from vpp.twins.states import (
    NAMES,
    CommandState,
    Connectivity,
    Operation,
    SiteEvent,
    state_name,
)
from vpp.twins.trace import SiteTrace

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]


# A site's load and PV limits when the registry gives none: this many times its battery's
# rating (a 5 kW home battery: 100 kW of load or PV; a 500 kW C&I one: 10 MW). Generous on
# purpose: it refuses absurd readings, not unusual sites; the registry sets the real ones.
DEFAULT_LIMIT_PER_RATING = 20.0


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """What a reading must satisfy to be folded (see the telemetry contract)."""

    max_future_skew_s: float = 30.0
    replay_window_s: float = 7 * 86_400.0
    power_tolerance: float = 1.5  # |p_kw| may reach this multiple of the site's rating
    idle_band: float = 0.01  # |p_kw| below this fraction of the rating is idle


@dataclass(frozen=True, slots=True)
class ConnectivityRule:
    """Telemetry age thresholds, in multiples of each site's own reporting interval."""

    stale_after_intervals: float = 3.0
    offline_after_intervals: float = 10.0
    health_window_s: float = 3_600.0  # time constant of the availability EWMA


@dataclass(slots=True)
class FoldOutcome:
    applied: int = 0
    superseded: int = 0  # valid but not newer than the twin (duplicate / out of order)
    refusals: list[Refusal] = field(default_factory=list)
    events: list[SiteEvent] = field(default_factory=list)


_REASON_LABELS = (
    "",
    "unknown_site",
    "non_finite",
    "soc_range",
    "power_range",
    "ts_future",
    "ts_too_old",
    "load_range",
    "pv_range",
)
_R = {name: i for i, name in enumerate(_REASON_LABELS)}


_VECTOR_LOOKUP_MIN = 256  # below this a dict lookup per row is cheaper than the vector path


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _iso(epoch_s: float) -> str:
    """ISO 8601 of an epoch, or the number itself when it is outside datetime's range."""
    try:
        return _utc(epoch_s).isoformat()
    except (OverflowError, ValueError, OSError):
        return f"{epoch_s:.3f} s since the epoch"


TRACE_SERIES = ("ts", "soc", "p_kw", "site_load_kw")


class FleetStore:
    """Column-wise twins of every registered site. Not thread-safe; one owner at a time."""

    # (name, dtype, fill) of every per-site column; the arrays grow together.
    COLUMNS: ClassVar[tuple[tuple[str, Any, Any], ...]] = (
        ("group", np.int32, -1),
        ("partition", np.int32, -1),
        ("active", np.bool_, False),
        ("owned", np.bool_, True),
        ("capacity_kwh", np.float64, 0.0),
        ("p_charge_max_kw", np.float64, 0.0),
        ("p_discharge_max_kw", np.float64, 0.0),
        ("eff_charge", np.float64, 1.0),
        ("eff_discharge", np.float64, 1.0),
        ("soc_min", np.float64, 0.0),
        ("soc_max", np.float64, 1.0),
        ("interval_s", np.float64, 5.0),
        ("load_max_kw", np.float64, np.inf),
        ("pv_max_kw", np.float64, np.inf),
        ("ts", np.float64, -np.inf),
        ("seq", np.int64, -1),
        ("soc", np.float64, np.nan),
        ("p_kw", np.float64, 0.0),
        ("site_load_kw", np.float64, np.nan),
        ("pv_kw", np.float64, np.nan),
        ("available", np.bool_, False),
        ("mode", np.int8, 0),
        ("conn", np.int8, int(Connectivity.UNKNOWN)),
        ("op", np.int8, int(Operation.UNAVAILABLE)),
        ("cmd", np.int8, int(CommandState.NONE)),
        ("health", np.float64, 1.0),
    )

    group: npt.NDArray[np.int32]
    partition: npt.NDArray[np.int32]
    active: npt.NDArray[np.bool_]
    owned: npt.NDArray[np.bool_]
    capacity_kwh: F64
    p_charge_max_kw: F64
    p_discharge_max_kw: F64
    eff_charge: F64
    eff_discharge: F64
    soc_min: F64
    soc_max: F64
    interval_s: F64
    load_max_kw: F64
    pv_max_kw: F64
    ts: F64
    seq: I64
    soc: F64
    p_kw: F64
    site_load_kw: F64
    pv_kw: F64
    available: npt.NDArray[np.bool_]
    mode: npt.NDArray[np.int8]
    conn: npt.NDArray[np.int8]
    op: npt.NDArray[np.int8]
    cmd: npt.NDArray[np.int8]
    health: F64

    def __init__(
        self,
        *,
        limits: IngestLimits | None = None,
        rule: ConnectivityRule | None = None,
        partitions: int = 8,
        initial_capacity: int = 1024,
        trace_depth: int = 0,
        trace_every_s: float = 15.0,
        day_trace_depth: int = 0,
        day_trace_every_s: float = 900.0,
    ) -> None:
        self.limits = limits or IngestLimits()
        # Recent readings per site for operators (a sampled ring; see vpp.twins.trace), and
        # a coarse one for the site page's day.
        self.trace = SiteTrace(trace_depth, trace_every_s, 0) if trace_depth > 0 else None
        self.day_trace = (
            SiteTrace(day_trace_depth, day_trace_every_s, 0) if day_trace_depth > 0 else None
        )
        self.rule = rule or ConnectivityRule()
        self.partitions = partitions
        self.ids: list[str] = []
        self._site_index = SiteIndex()
        self.index: dict[str, int] = self._site_index.map
        self.groups: list[str] = []
        self.group_index: dict[str, int] = {}
        self.tariffs: dict[str, Tariff] = {}  # the registry tariffs (for peak shaving)
        self._capacity = 0
        self._evaluated_at: float | None = None
        self._owned_partitions: npt.NDArray[np.int32] | None = None
        self._alloc(max(16, initial_capacity))
        # Scratch for the per-batch "newest per site" scatter; reset only where written.
        self._best_ts = np.full(self._capacity, -np.inf)
        self._best_seq = np.full(self._capacity, -1, dtype=np.int64)

    # -- layout ----------------------------------------------------------------------------

    def _alloc(self, capacity: int) -> None:
        n = len(self.ids)
        for name, dtype, fill in self.COLUMNS:
            new = np.full(capacity, fill, dtype=dtype)
            if n:
                new[:n] = getattr(self, name)[:n]
            setattr(self, name, new)
        self._capacity = capacity
        for trace in (self.trace, self.day_trace):
            if trace is not None:
                trace.grow(capacity)
        self._best_ts = np.full(capacity, -np.inf)
        self._best_seq = np.full(capacity, -1, dtype=np.int64)

    @property
    def n(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> npt.NDArray[Any]:
        """The first ``n`` rows of a column (a view, not a copy)."""
        arr: npt.NDArray[Any] = getattr(self, name)
        return arr[: self.n]

    def _group_id(self, name: str) -> int:
        gid = self.group_index.get(name)
        if gid is None:
            gid = self.group_index[name] = len(self.groups)
            self.groups.append(name)
        return gid

    # -- registry --------------------------------------------------------------------------

    def register(self, cfg: SiteConfig) -> int:
        """Add a site or update its registry data (capacity fade, a move to another group)."""
        i = self.index.get(cfg.site_id)
        if i is None:
            if self.n == self._capacity:
                self._alloc(self._capacity * 2)
            i = self._site_index.add(cfg.site_id)
            self.ids.append(cfg.site_id)
            self.partition[i] = partition_of(cfg.site_id.encode(), self.partitions)
            if self._owned_partitions is not None:
                self.owned[i] = bool(np.isin(self.partition[i], self._owned_partitions))
        self.group[i] = self._group_id(cfg.group)
        self.active[i] = True
        self.capacity_kwh[i] = cfg.capacity_kwh
        self.p_charge_max_kw[i] = cfg.p_charge_max_kw
        self.p_discharge_max_kw[i] = cfg.p_discharge_max_kw
        self.eff_charge[i] = cfg.eff_charge
        self.eff_discharge[i] = cfg.eff_discharge
        self.soc_min[i] = cfg.soc_min
        self.soc_max[i] = cfg.soc_max
        self.interval_s[i] = cfg.telemetry_interval_s
        # Without a limit in the registry, one derived from the battery's rating: no reading
        # is unbounded (a 1e300 kW load would reach the twins, the bills and the plans).
        rating = max(cfg.p_charge_max_kw, cfg.p_discharge_max_kw)
        self.load_max_kw[i] = cfg.site_load_max_kw or DEFAULT_LIMIT_PER_RATING * rating
        self.pv_max_kw[i] = cfg.pv_max_kw or DEFAULT_LIMIT_PER_RATING * rating
        if cfg.tariff is not None:
            self.tariffs[cfg.site_id] = cfg.tariff
        else:
            self.tariffs.pop(cfg.site_id, None)
        return i

    def decommission(self, site_id: str) -> bool:
        """Take a site out of every aggregate; its row stays (ids are stable)."""
        i = self.index.get(site_id)
        if i is None or not self.active[i]:
            return False
        self.active[i] = False
        return True

    def set_owned_partitions(self, partitions: Iterable[int] | None) -> None:
        """Own only the sites whose telemetry lands on these partitions (None = all)."""
        if partitions is None:
            self._owned_partitions = None
            self.owned[:] = True
            return
        wanted = np.fromiter(partitions, dtype=np.int32)
        self._owned_partitions = wanted
        self.owned[: self.n] = np.isin(self.partition[: self.n], wanted)

    # -- telemetry fold --------------------------------------------------------------------

    def validate(self, cols: TelemetryColumns, now_s: float) -> tuple[I64, npt.NDArray[np.int8]]:
        """Site index per row (-1 unknown) and a reason code per row (0 = valid)."""
        n = len(cols)
        if n >= _VECTOR_LOOKUP_MIN:
            idx = self._site_index.lookup(cols.site_id)
        else:
            idx = np.fromiter(map(self.index.get, cols.site_id, itertools.repeat(-1)), np.int64, n)
        reason = np.zeros(n, dtype=np.int8)
        known = idx >= 0
        safe = np.where(known, idx, 0)
        rating = np.maximum(self.p_charge_max_kw[safe], self.p_discharge_max_kw[safe])
        checks = (
            (~known | ~self.active[safe], _R["unknown_site"]),
            (
                ~np.isfinite(cols.soc)
                | ~np.isfinite(cols.p_kw)
                | np.isinf(cols.site_load_kw)
                | np.isinf(cols.pv_kw),
                _R["non_finite"],
            ),
            ((cols.soc < 0.0) | (cols.soc > 1.0), _R["soc_range"]),
            (np.abs(cols.p_kw) > self.limits.power_tolerance * rating, _R["power_range"]),
            (cols.ts > now_s + self.limits.max_future_skew_s, _R["ts_future"]),
            (cols.ts < now_s - self.limits.replay_window_s, _R["ts_too_old"]),
            # NaN (not metered) passes both: comparisons with NaN are false
            (
                (cols.site_load_kw < 0.0)
                | (cols.site_load_kw > self.limits.power_tolerance * self.load_max_kw[safe]),
                _R["load_range"],
            ),
            (
                (cols.pv_kw < 0.0)
                | (cols.pv_kw > self.limits.power_tolerance * self.pv_max_kw[safe]),
                _R["pv_range"],
            ),
        )
        for bad, code in checks:
            reason[(reason == 0) & bad] = code
        return idx, reason

    def _refusal(self, cols: TelemetryColumns, row: int, code: int, now_s: float) -> Refusal:
        label = _REASON_LABELS[code]
        site = cols.site_id[row]
        if label == "unknown_site":
            why = "decommissioned" if site in self.index else "not in the registry"
            detail = f"site {site!r} is {why}"
        elif label == "non_finite":
            detail = f"site {site!r}: a power or SoC value is not finite"
        elif label == "soc_range":
            detail = f"site {site!r}: soc {cols.soc[row]!r} outside [0, 1]"
        elif label == "power_range":
            i = self.index[site]
            rating = max(self.p_charge_max_kw[i], self.p_discharge_max_kw[i])
            detail = (
                f"site {site!r}: |p_kw| {abs(cols.p_kw[row]):.3f} above "
                f"{self.limits.power_tolerance} x rating {rating:.3f} kW"
            )
        elif label in ("load_range", "pv_range"):
            i = self.index[site]
            what, value, limit = (
                ("site_load_kw", cols.site_load_kw[row], self.load_max_kw[i])
                if label == "load_range"
                else ("pv_kw", cols.pv_kw[row], self.pv_max_kw[i])
            )
            detail = (
                f"site {site!r}: {what} {value:.3f} outside [0, {self.limits.power_tolerance} x "
                f"{limit:.3f} kW] (the registry's limit)"
            )
        elif label == "ts_future":
            detail = (
                f"site {site!r}: ts {_iso(cols.ts[row])} is "
                f"{cols.ts[row] - now_s:.1f} s ahead (max skew {self.limits.max_future_skew_s} s)"
            )
        else:
            detail = (
                f"site {site!r}: ts {_iso(cols.ts[row])} is older than the "
                f"replay window ({self.limits.replay_window_s:.0f} s)"
            )
        return Refusal(int(cols.position[row]), label, detail)

    def fold(self, cols: TelemetryColumns, now_s: float) -> FoldOutcome:
        """Validate and fold a decoded batch; refused rows leave every array untouched."""
        out = FoldOutcome()
        if not len(cols):
            return out
        idx, reason = self.validate(cols, now_s)
        bad_rows = np.flatnonzero(reason)
        if bad_rows.size:
            out.refusals = [self._refusal(cols, int(r), int(reason[r]), now_s) for r in bad_rows]
            ok = reason == 0
            idx = idx[ok]
            cols = cols.take(ok)
        if not idx.size:
            return out
        ts, seq = cols.ts, cols.seq
        # Newest (ts, seq) per site within the batch.
        best_ts, best_seq = self._best_ts, self._best_seq
        best_ts[idx] = -np.inf
        np.maximum.at(best_ts, idx, ts)
        at_best = ts == best_ts[idx]
        best_seq[idx] = -1
        np.maximum.at(best_seq, idx[at_best], seq[at_best])
        newest = at_best & (seq == best_seq[idx])
        # ... and only if newer than the twin.
        cur_ts, cur_seq = self.ts[idx], self.seq[idx]
        newer = (ts > cur_ts) | ((ts == cur_ts) & (seq > cur_seq))
        take = newest & newer
        rows = np.flatnonzero(take)
        # Two readings claiming the same identity (site, ts, seq): the first folded wins,
        # within a batch as across batches (the contract) — keep each site's first row.
        sites_all = idx[rows]
        if sites_all.size > 1:
            _, first = np.unique(sites_all, return_index=True)
            if first.size != rows.size:
                rows = rows[np.sort(first)]
        sites = idx[rows]
        out.applied = int(rows.size)
        out.superseded = int(idx.size - rows.size)
        if not rows.size:
            return out
        self.ts[sites] = ts[rows]
        self.seq[sites] = seq[rows]
        self.soc[sites] = cols.soc[rows]
        p = cols.p_kw[rows]
        self.p_kw[sites] = p
        self.site_load_kw[sites] = cols.site_load_kw[rows]
        self.pv_kw[sites] = cols.pv_kw[rows]
        avail = cols.available[rows]
        self.available[sites] = avail
        mode = cols.mode[rows]
        self.mode[sites] = mode
        out.events = self._transitions(sites, ts[rows], p, avail, mode, now_s)
        for trace in (self.trace, self.day_trace):
            if trace is not None:
                trace.record(
                    sites,
                    ts[rows],
                    soc=cols.soc[rows],
                    p_kw=p,
                    site_load_kw=cols.site_load_kw[rows],
                )
        return out

    def _transitions(
        self,
        sites: I64,
        ts: F64,
        p_kw: F64,
        available: npt.NDArray[np.bool_],
        mode: npt.NDArray[np.int8],
        now_s: float,
    ) -> list[SiteEvent]:
        """Operation state of freshly updated sites; a fresh reading means online."""
        band = self.limits.idle_band * np.maximum(
            self.p_charge_max_kw[sites], self.p_discharge_max_kw[sites]
        )
        op = np.where(
            p_kw > band,
            Operation.DISCHARGING,
            np.where(p_kw < -band, Operation.CHARGING, Operation.IDLE),
        ).astype(np.int8)
        op[mode == MODE_CODE["fault"]] = Operation.FAULT
        op[~available] = Operation.UNAVAILABLE
        old_op = self.op[sites]
        self.op[sites] = op
        age = now_s - ts
        fresh = age <= self.rule.stale_after_intervals * self.interval_s[sites]
        old_conn = self.conn[sites]
        new_conn = np.where(fresh, Connectivity.ONLINE, old_conn).astype(np.int8)
        # A reading that is already stale when it arrives (replay) is judged by evaluate().
        self.conn[sites] = new_conn
        events: list[SiteEvent] = []
        notable = {int(Operation.FAULT), int(Operation.UNAVAILABLE)}
        first_contact = old_conn == Connectivity.UNKNOWN
        op_changed = np.flatnonzero(
            (op != old_op)
            & ~first_contact
            & (np.isin(op, list(notable)) | np.isin(old_op, list(notable)))
        )
        # First contact (unknown → online) is not a transition worth an event: a fleet
        # coming up would otherwise emit one per site.
        conn_changed = np.flatnonzero((new_conn != old_conn) & ~first_contact)
        when = _utc(now_s)
        for j in op_changed.tolist():
            events.append(
                SiteEvent(
                    self.ids[sites[j]],
                    when,
                    "operation",
                    state_name(Operation(old_op[j])),
                    state_name(Operation(op[j])),
                )
            )
        for j in conn_changed.tolist():
            events.append(
                SiteEvent(
                    self.ids[sites[j]],
                    when,
                    "connectivity",
                    state_name(Connectivity(old_conn[j])),
                    state_name(Connectivity(new_conn[j])),
                )
            )
        return events

    # -- clock-driven state ----------------------------------------------------------------

    def recent_telemetry(self, row: int) -> dict[str, object]:
        """One site row's kept readings, oldest first, with their sampling: the day trace's
        coarse samples up to where the recent trace begins, then the recent ones (empty
        lists when both are off)."""
        fields = ("ts", *SiteTrace.FIELDS)
        out: dict[str, Any] = {f: [] for f in fields}
        fine = self.trace.series(row) if self.trace is not None else None
        if self.day_trace is not None:
            coarse = self.day_trace.series(row)
            begins = fine["ts"][0] if fine and fine["ts"] else float("inf")
            keep = sum(t < begins for t in coarse["ts"])
            for f in fields:
                out[f] += coarse[f][:keep]
        if fine is not None:
            for f in fields:
                out[f] += fine[f]
        return {
            "every_s": self.trace.every_s if self.trace is not None else None,
            "depth": self.trace.depth if self.trace is not None else 0,
            "day_every_s": self.day_trace.every_s if self.day_trace is not None else None,
            "day_depth": self.day_trace.depth if self.day_trace is not None else 0,
            **out,
        }

    def evaluate(self, now_s: float) -> list[SiteEvent]:
        """Age every site's telemetry: online → stale → offline; update availability health."""
        n = self.n
        if not n:
            return []
        seen = np.isfinite(self.ts[:n])
        age = np.where(seen, now_s - self.ts[:n], np.inf)
        interval = self.interval_s[:n]
        conn = np.full(n, Connectivity.UNKNOWN, dtype=np.int8)
        conn[seen] = Connectivity.OFFLINE
        conn[seen & (age <= self.rule.offline_after_intervals * interval)] = Connectivity.STALE
        conn[seen & (age <= self.rule.stale_after_intervals * interval)] = Connectivity.ONLINE
        old = self.conn[:n].copy()
        self.conn[:n] = conn
        if self._evaluated_at is not None and now_s > self._evaluated_at:
            alpha = min(1.0, (now_s - self._evaluated_at) / self.rule.health_window_s)
            online = (conn == Connectivity.ONLINE).astype(np.float64)
            self.health[:n] += alpha * (online - self.health[:n]) * seen
        self._evaluated_at = now_s
        changed = np.flatnonzero(conn != old)
        when = _utc(now_s)
        names = NAMES["connectivity"]
        ids = self.ids
        return [
            SiteEvent(ids[i], when, "connectivity", names[a], names[b])
            for i, a, b in zip(
                changed.tolist(), old[changed].tolist(), conn[changed].tolist(), strict=True
            )
        ]

    def rows_of(self, site_ids: Sequence[str]) -> I64:
        """Row per site id (vectorized lookup), -1 for ids not registered."""
        return self._site_index.lookup(site_ids)

    def set_command_state(self, rows: I64, state: CommandState) -> tuple[I64, I8]:
        """Dispatch drives the command state machine; returns the rows that changed and
        their previous states (rows < 0 are ignored)."""
        rows = rows[(rows >= 0) & (rows < self.n)]
        old = self.cmd[rows]
        changed = old != state
        rows, old = rows[changed], old[changed]
        self.cmd[rows] = state
        return rows, old

    # -- persistence -----------------------------------------------------------------------

    STATE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "ts",
        "seq",
        "soc",
        "p_kw",
        "site_load_kw",
        "pv_kw",
        "available",
        "mode",
        "conn",
        "op",
        "cmd",
        "health",
    )

    def adopt(self, other: FleetStore, partitions: Iterable[int]) -> int:
        """Take the telemetry state of the sites on ``partitions`` from ``other`` (a snapshot).

        Registry columns stay this store's own (the registry topic is authoritative).
        Returns how many sites were adopted.
        """
        rows = np.flatnonzero(np.isin(other.partition[: other.n], list(partitions)))
        mine = np.fromiter(
            (self.index.get(other.ids[r], -1) for r in rows.tolist()), np.int64, rows.size
        )
        keep = mine >= 0
        dst, src = mine[keep], rows[keep]
        for name in self.STATE_COLUMNS:
            getattr(self, name)[dst] = getattr(other, name)[src]
        if other._evaluated_at is not None:
            self._evaluated_at = max(self._evaluated_at or 0.0, other._evaluated_at)
        return int(dst.size)

    def snapshot(self) -> bytes:
        """All columns and the id maps as one compressed blob (``np.savez_compressed``)."""
        buf = io.BytesIO()
        arrays = {name: getattr(self, name)[: self.n] for name, _, _ in self.COLUMNS}
        meta = {
            "ids": self.ids,
            "groups": self.groups,
            "evaluated_at": self._evaluated_at,
            "partitions": self.partitions,
        }
        arrays["_meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez_compressed(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    @classmethod
    def restore(
        cls,
        blob: bytes,
        *,
        limits: IngestLimits | None = None,
        rule: ConnectivityRule | None = None,
    ) -> FleetStore:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            meta = json.loads(bytes(data["_meta"]).decode())
            store = cls(
                limits=limits,
                rule=rule,
                partitions=int(meta["partitions"]),
                initial_capacity=max(16, 2 * len(meta["ids"])),
            )
            store.ids = list(meta["ids"])
            for site_id in store.ids:
                store._site_index.add(site_id)
            store.groups = list(meta["groups"])
            store.group_index = {g: i for i, g in enumerate(store.groups)}
            store._evaluated_at = meta["evaluated_at"]
            n = len(store.ids)
            for name, _, _ in cls.COLUMNS:
                if name in data.files:  # a column added since the snapshot keeps its fill
                    getattr(store, name)[:n] = data[name]
        return store

    def differences(self, other: FleetStore) -> list[str]:
        """Columns whose per-site state differs from ``other``, compared by site id.

        Dense indices and group numbering depend on registration order (which differs
        between readers of a multi-partition registry), so rows are matched by id.
        """
        if set(self.ids) != set(other.ids):
            return ["ids"]
        perm = np.fromiter((other.index[s] for s in self.ids), np.int64, self.n)
        mine_groups = [self.groups[g] for g in self.column("group").tolist()]
        their_groups = [other.groups[g] for g in other.column("group")[perm].tolist()]
        out = [] if mine_groups == their_groups else ["group"]
        skip = {"owned", "health", "group"}
        out += [
            name
            for name, _, _ in self.COLUMNS
            if name not in skip
            and not np.array_equal(self.column(name), other.column(name)[perm], equal_nan=True)
        ]
        return out

    def state_equal(self, other: FleetStore) -> bool:
        """Same sites, same registry data and same telemetry state."""
        return not self.differences(other)
