"""Simulated site gateways: battery physics, real load/PV, telemetry with injected faults.

Physics per site, vectorized over the fleet, for a step ``[t₀, t₁)`` of ``Δt`` hours, with
the state at the step's start (a command valid at ``t₀``, the load at ``t₀``)::

    P_req   = setpoint (while a command is valid) else clip(load - pv, -P_ch, P_dis)
    P       = clip(P_req, -min(P_ch, (E_max - E)/(η_c Δt)), min(P_dis, (E - E_min) η_d/Δt))
    E      += (-max(P, 0)/η_d + max(-P, 0)·η_c)·Δt

(``P`` > 0 discharges; the default behaviour without a command is self-consumption:
cover the site's net load, store its PV surplus.) Load and PV come from real profiles,
scaled and time-shifted per site, or from a :class:`LoadSource` (a backtest's measured
loads). Meters integrate each step exactly: battery energy out and in, and the grid
import with and without the battery (for bills).

Telemetry: each site reports every ``telemetry_interval_s`` (± jitter). Faults, each with
its own probability: offline periods (a site goes silent), gaps (a reading is lost),
duplicates, out-of-order delivery (a reading held back until after the next one) and
malformed messages (several kinds of corruption). Everything random comes from one
seeded generator, so a run with the same seed and the same step times is identical.

Ground truth: for every site the newest valid reading it has sent (by ``ts``, ``seq``),
what a correct ingest must end up holding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import numpy as np
import numpy.typing as npt

from vpp.framing import decode_each
from vpp.sim.profiles import load_profiles
from vpp.telemetry.contract import encode_telemetry_batch
from vpp.twins.registry import SiteConfig, Tariff, TouPeriod

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CommandFaults:
    ack_loss: float = 0.0  # an ack (accepted / rejected / completed) never arrives
    ack_delay_s: float = 0.0  # acks are sent this long after the command arrives
    reject: float = 0.0  # the site declines a command
    offline_mid_interval: float = 0.0  # after a command, the site drops out before it ends


@dataclass(frozen=True, slots=True)
class TelemetryFaults:
    offline_per_hour: float = 0.0  # probability a site goes silent, per site-hour
    offline_s: float = 120.0  # how long a silent period lasts
    gap: float = 0.0  # a reading is lost
    duplicate: float = 0.0  # a reading is delivered twice
    reorder: float = 0.0  # a reading is delivered after the site's next one
    malformed: float = 0.0  # a reading is corrupted


@dataclass(slots=True)
class Truth:
    """The newest valid reading each site has sent (arrays over sites)."""

    ts: F64
    seq: npt.NDArray[np.int64]
    soc: F64
    p_kw: F64


@dataclass(slots=True)
class _Held:
    site: int
    ts: float
    seq: int
    soc: float
    p_kw: float
    payload: bytes


# Loads at an instant: (site load kW, PV kW), one value per site.
LoadSource = Callable[[float], tuple[F64, F64]]


@dataclass(slots=True)
class Meters:
    """Per-site energy since the start (kWh), integrated over every physics step."""

    discharged: F64  # battery energy out, at the meter
    charged: F64  # battery energy in, at the meter
    grid_import: F64  # site import with the battery
    grid_import_without: F64  # site import had the battery stood still


_MALFORMED_KINDS = ("garbage", "truncated", "wrong_type", "soc_range", "unknown_field", "naive_ts")


class SimulatedFleet:
    def __init__(
        self,
        sites: list[SiteConfig],
        *,
        seed: int = 42,
        faults: TelemetryFaults | None = None,
        command_faults: CommandFaults | None = None,
        jitter: float = 0.1,
        loads: LoadSource | None = None,
        soc0: F64 | None = None,
        aligned: bool = False,
    ) -> None:
        self.sites = sites
        self.seed = seed
        self.faults = faults or TelemetryFaults()
        self.command_faults = command_faults or CommandFaults()
        self.jitter = jitter
        n = len(self.sites)
        self.rng = np.random.default_rng(self.seed)
        self.profiles = load_profiles()
        self.index = {s.site_id: i for i, s in enumerate(self.sites)}
        self.ids = [s.site_id for s in self.sites]
        self._key = [s.encode() for s in self.ids]
        cfg = self.sites
        self.capacity = np.array([s.capacity_kwh for s in cfg])
        self.p_ch_max = np.array([s.p_charge_max_kw for s in cfg])
        self.p_dis_max = np.array([s.p_discharge_max_kw for s in cfg])
        self.eta_c = np.array([s.eff_charge for s in cfg])
        self.eta_d = np.array([s.eff_discharge for s in cfg])
        self.soc_min = np.array([s.soc_min for s in cfg])
        self.soc_max = np.array([s.soc_max for s in cfg])
        self.interval = np.array([s.telemetry_interval_s for s in cfg])
        rng = self.rng
        self.soc = rng.uniform(self.soc_min + 0.05, self.soc_max - 0.05)
        if soc0 is not None:
            self.soc = np.asarray(soc0, dtype=np.float64).copy()
        self.loads = loads
        self.aligned = aligned  # report on the grid of each site's interval (backtests)
        self.meters = Meters(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))
        self.p_kw = np.zeros(n)
        self.is_ci = self.capacity >= 100.0
        self.load_scale = np.where(self.is_ci, rng.uniform(0.02, 0.1, n), rng.uniform(0.5, 1.5, n))
        self.pv_kw = np.where(
            self.is_ci, rng.uniform(0.0, 0.6, n) * self.p_dis_max, rng.uniform(0.0, 6.0, n)
        )
        self.shift_s = rng.uniform(0, 7 * 86_400, n)
        self.site_load = np.zeros(n)
        self.site_pv = np.zeros(n)
        self.next_report = np.full(n, -np.inf)
        self.seq = np.zeros(n, dtype=np.int64)
        self.offline_until = np.full(n, -np.inf)
        self.setpoint = np.full(n, np.nan)
        self.setpoint_until = np.full(n, -np.inf)
        self.truth = Truth(
            ts=np.full(n, -np.inf),
            seq=np.full(n, -1, np.int64),
            soc=np.full(n, np.nan),
            p_kw=np.zeros(n),
        )
        self._held: dict[int, _Held] = {}
        self.t: float | None = None
        self.sent = 0
        self.malformed_sent = 0
        # Commands: what each site applies, which command ids it has seen, acks to send.
        self.tripped = np.zeros(n, dtype=bool)  # dropped out: delivers nothing
        # command_id -> (site, first status, valid until): resends are re-acked, not re-applied
        self._applied: dict[str, tuple[int, str, float]] = {}
        self._pruned_at = -np.inf
        self._current: dict[int, str] = {}  # site -> command id being applied
        self._acks: list[tuple[float, bytes, bytes]] = []  # (due, key, value)
        self._drop_at: dict[int, float] = {}  # site -> when it drops out
        self.acks_sent = 0
        self.acks_lost = 0

    # -- physics ---------------------------------------------------------------------------

    def step(self, t_s: float) -> None:
        """Advance the physics to epoch second ``t_s`` (the step runs on the state at its
        start: the command then valid, the load then measured)."""
        if self.t is None:
            self.t = t_s
            self._refresh_load(t_s)
            return
        t0 = self.t
        dt_h = max(0.0, t_s - t0) / 3600.0
        for site, when in list(self._drop_at.items()):
            if t_s >= when:  # drops out mid-interval: silent and delivering nothing
                del self._drop_at[site]
                self.tripped[site] = True
                self.offline_until[site] = max(
                    self.offline_until[site], float(self.setpoint_until[site])
                )
        self.tripped &= self.offline_until > t0
        commanded = (t0 < self.setpoint_until) & ~np.isnan(self.setpoint)
        net_load = self.site_load - self.site_pv
        request = np.where(
            commanded, self.setpoint, np.clip(net_load, -self.p_ch_max, self.p_dis_max)
        )
        request = np.where(self.tripped, 0.0, request)
        if dt_h > 0:
            e = self.soc * self.capacity
            max_dis = np.maximum(e - self.soc_min * self.capacity, 0.0) * self.eta_d / dt_h
            max_ch = np.maximum(self.soc_max * self.capacity - e, 0.0) / self.eta_c / dt_h
            p = np.clip(
                request, -np.minimum(self.p_ch_max, max_ch), np.minimum(self.p_dis_max, max_dis)
            )
            e = e - np.maximum(p, 0.0) / self.eta_d * dt_h + np.maximum(-p, 0.0) * self.eta_c * dt_h
            self.soc = np.clip(e / self.capacity, 0.0, 1.0)
            self.p_kw = p
            m = self.meters
            m.discharged += np.maximum(p, 0.0) * dt_h
            m.charged += np.maximum(-p, 0.0) * dt_h
            m.grid_import += np.maximum(net_load - p, 0.0) * dt_h
            m.grid_import_without += np.maximum(net_load, 0.0) * dt_h
        self.t = t_s
        self._refresh_load(t_s)
        # Silent periods start at random.
        if self.faults.offline_per_hour > 0 and dt_h > 0:
            starts = self.rng.random(len(self.sites)) < self.faults.offline_per_hour * dt_h
            self.offline_until[starts & (self.offline_until < t_s)] = t_s + self.faults.offline_s

    def _refresh_load(self, t_s: float) -> None:
        if self.loads is not None:
            self.site_load, self.site_pv = self.loads(t_s)
            return
        t = t_s + self.shift_s
        base = np.where(self.is_ci, self.profiles.ci_load(t), self.profiles.household(t))
        self.site_load = base * self.load_scale
        self.site_pv = self.profiles.pv(t) * self.pv_kw

    def next_ack_due(self) -> float | None:
        """When the earliest queued ack leaves (None: none queued)."""
        return min(a[0] for a in self._acks) if self._acks else None

    def go_offline(self, sites: npt.NDArray[np.int64], until_s: float) -> None:
        self.offline_until[sites] = until_s

    def drop_out(self, sites: npt.NDArray[np.int64], at_s: float) -> None:
        """These sites drop out at ``at_s``: silent, delivering nothing, until their command
        would have ended."""
        for i in sites.tolist():
            self._drop_at[int(i)] = at_s

    # -- telemetry -------------------------------------------------------------------------

    def readings(self, t_s: float) -> list[tuple[bytes, bytes]]:
        """The (key, value) messages due at ``t_s``, faults applied, in delivery order."""
        due = np.flatnonzero((self.next_report <= t_s) & (self.offline_until <= t_s))
        if not due.size:
            return []
        rng = self.rng
        if self.aligned:  # on each site's own grid: t = k·interval
            iv = self.interval[due]
            self.next_report[due] = (np.floor(t_s / iv + 1e-9) + 1.0) * iv
        else:
            jitter = 1.0 + rng.uniform(-self.jitter, self.jitter, due.size)
            first = np.isinf(self.next_report[due])
            self.next_report[due] = np.where(
                first,
                t_s + rng.uniform(0, 1, due.size) * self.interval[due],
                t_s + self.interval[due] * jitter,
            )
        rolls = rng.random((due.size, 4))
        f = self.faults
        self.seq[due] += 1
        ts_dt = datetime.fromtimestamp(t_s, UTC)
        gap = rolls[:, 0] < f.gap
        malformed = ~gap & (rolls[:, 1] < f.malformed)
        plain = ~gap & ~malformed
        rows = due[plain]
        soc_r = np.round(self.soc[rows], 6)
        p_r = np.round(self.p_kw[rows], 4)
        payloads = encode_telemetry_batch(
            [self.ids[i] for i in rows.tolist()],
            ts_dt,
            self.seq[rows].tolist(),
            soc_r.tolist(),
            p_r.tolist(),
            np.round(self.site_load[rows], 3).tolist(),
            np.round(self.site_pv[rows], 3).tolist(),
        )
        keys = self._key
        if not (f.reorder or f.duplicate or f.malformed or self._held):
            # the common case, vectorized: every reading delivered once, in site order
            out = [(keys[i], v) for i, v in zip(rows.tolist(), payloads, strict=True)]
            tr = self.truth
            newer = (t_s > tr.ts[rows]) | ((t_s == tr.ts[rows]) & (self.seq[rows] > tr.seq[rows]))
            r = rows[newer]
            tr.ts[r], tr.seq[r], tr.soc[r], tr.p_kw[r] = t_s, self.seq[r], soc_r[newer], p_r[newer]
            self.sent += len(out)
            return out
        out = []
        encoded = iter(zip(soc_r.tolist(), p_r.tolist(), payloads, strict=True))
        for k, i in enumerate(due.tolist()):
            if gap[k]:
                continue
            if malformed[k]:
                out.append((keys[i], self._malformed(i, ts_dt)))
                self.malformed_sent += 1
                continue
            soc, p, payload = next(encoded)
            reading = _Held(i, t_s, int(self.seq[i]), soc, p, payload)
            held = self._held.pop(i, None)
            if rolls[k, 2] < f.reorder and held is None:
                self._held[i] = reading  # delivered after the next reading of this site
            else:
                self._deliver(reading, out)
                if rolls[k, 3] < f.duplicate:
                    out.append((keys[i], payload))
            if held is not None:
                self._deliver(held, out)
        self.sent += len(out)
        return out

    def _deliver(self, r: _Held, out: list[tuple[bytes, bytes]]) -> None:
        out.append((self._key[r.site], r.payload))
        tr = self.truth
        if (r.ts, r.seq) > (tr.ts[r.site], tr.seq[r.site]):
            tr.ts[r.site], tr.seq[r.site] = r.ts, r.seq
            tr.soc[r.site], tr.p_kw[r.site] = r.soc, r.p_kw

    def _queue_acks(self, acks: list[tuple[int, str, str, str | None]], now: float) -> None:
        """Queue (site, command id, status, reason) acks, due after ``ack_delay_s``."""
        if not acks:
            return
        f = self.command_faults
        lost = self.rng.random(len(acks)) < f.ack_loss
        self.acks_lost += int(lost.sum())
        due = now + f.ack_delay_s
        stamp = datetime.fromtimestamp(due, UTC)
        ids, keys, encode = self.ids, self._key, _ack_encoder.encode
        self._acks.extend(
            (due, keys[i], encode(_SimAck(1, cid, ids[i], status, stamp, reason)))
            for (i, cid, status, reason), gone in zip(acks, lost.tolist(), strict=True)
            if not gone
        )

    def acks_due(self, now: float) -> list[tuple[bytes, bytes]]:
        """Acks whose time has come, plus ``completed`` for commands whose validity ended."""
        if self._current:
            held = np.zeros(len(self.ids), dtype=bool)
            held[list(self._current)] = True
            ended = np.flatnonzero(held & (now >= self.setpoint_until))
            done: list[tuple[int, str, str, str | None]] = []
            for i in ended.tolist():
                cid = self._current.pop(i)
                if self.offline_until[i] <= now:
                    done.append((i, cid, "completed", None))
            self._queue_acks(done, now)
        if now - self._pruned_at > 60.0:  # forget command ids well past their validity
            self._pruned_at = now
            self._applied = {c: v for c, v in self._applied.items() if v[2] > now - 600.0}
        if not self._acks:
            return []
        ready = [a for a in self._acks if a[0] <= now]
        self._acks = [a for a in self._acks if a[0] > now]
        self.acks_sent += len(ready)
        return [(k, v) for _, k, v in ready]

    def flush_held(self) -> list[tuple[bytes, bytes]]:
        """Deliver every held-back reading (end of a run)."""
        out: list[tuple[bytes, bytes]] = []
        for site in list(self._held):
            self._deliver(self._held.pop(site), out)
        self.sent += len(out)
        return out

    def _malformed(self, i: int, ts: datetime) -> bytes:
        kind = _MALFORMED_KINDS[int(self.rng.integers(len(_MALFORMED_KINDS)))]
        sid, seq = self.ids[i], int(self.seq[i])
        good = {
            "v": 1,
            "site_id": sid,
            "ts": ts.isoformat(),
            "seq": seq,
            "soc": float(self.soc[i]),
            "p_kw": float(self.p_kw[i]),
        }
        if kind == "garbage":
            return bytes(self.rng.integers(0, 256, 24, dtype=np.uint8))
        if kind == "truncated":
            return msgspec.json.encode(good)[:-7]
        if kind == "wrong_type":
            return msgspec.json.encode({**good, "soc": "full"})
        if kind == "soc_range":
            return msgspec.json.encode({**good, "soc": 1.7})
        if kind == "unknown_field":
            return msgspec.json.encode({**good, "temperature_c": 31.5})
        return msgspec.json.encode({**good, "ts": ts.replace(tzinfo=None).isoformat()})


class _SimAck(msgspec.Struct, omit_defaults=True):
    v: int
    command_id: str
    site_id: str
    status: str
    ts: datetime
    reason: str | None = None


_ack_encoder = msgspec.json.Encoder()


class _SimCommand(msgspec.Struct):
    """What a gateway reads from a command (other fields are ignored)."""

    command_id: str
    site_id: str
    setpoint_kw: float
    valid_until: datetime


_command_one = msgspec.json.Decoder(_SimCommand)


def _decode_commands(values: list[bytes]) -> list[_SimCommand]:
    """Each message decoded on its own (:mod:`vpp.framing`); the malformed ones skipped (a
    gateway cannot read them)."""
    try:
        return decode_each(_command_one, values)
    except msgspec.MsgspecError:
        out = []
        for raw in values:
            try:
                out.append(_command_one.decode(raw))
            except msgspec.MsgspecError:
                continue
        return out


def handle_commands(fleet: SimulatedFleet, values: list[bytes], now: float) -> int:
    """Apply commands as site gateways would; queue their acks. Returns commands applied.

    Idempotent per ``command_id``: a resent command is acknowledged again, not re-applied.
    A silent (offline) site neither applies nor answers. A setpoint beyond the site's
    rating is rejected with that reason; ``reject`` declines others at random. Commands
    are applied in order (a later one for the same site wins); the random draws for the
    batch are made up front.
    """
    cmds = _decode_commands(values)
    if not cmds:
        return 0
    f = fleet.command_faults
    n = len(cmds)
    index = fleet.index
    rows = np.fromiter((index.get(c.site_id, -1) for c in cmds), np.int64, n)
    setpoint = np.fromiter((c.setpoint_kw for c in cmds), np.float64, n)
    until = np.fromiter((c.valid_until.timestamp() for c in cmds), np.float64, n)
    known = rows >= 0
    r = np.where(known, rows, 0)
    rating = np.where(setpoint >= 0, fleet.p_dis_max[r], fleet.p_ch_max[r])
    answers = (known & (fleet.offline_until[r] <= now)).tolist()
    beyond = (np.abs(setpoint) > rating * 1.001 + 1e-9).tolist()
    declined = (fleet.rng.random(n) < f.reject).tolist()
    drops = (fleet.rng.random(n) < f.offline_mid_interval).tolist()
    drop_at = (now + fleet.rng.random(n) * np.maximum(until - now, 0.0)).tolist()
    seen_map = fleet._applied
    acks: list[tuple[int, str, str, str | None]] = []
    applied: dict[int, int] = {}  # site -> index of the command it applies (last wins)
    for k, (c, i, u) in enumerate(zip(cmds, rows.tolist(), until.tolist(), strict=True)):
        if not answers[k]:
            continue
        cid = c.command_id
        seen = seen_map.get(cid)
        if seen is not None:
            acks.append((i, cid, seen[1], None))
        elif beyond[k]:
            seen_map[cid] = (i, "rejected", u)
            acks.append((i, cid, "rejected", f"setpoint {c.setpoint_kw} kW beyond rating"))
        elif declined[k]:
            seen_map[cid] = (i, "rejected", u)
            acks.append((i, cid, "rejected", "declined by the site (simulated)"))
        else:
            seen_map[cid] = (i, "accepted", u)
            acks.append((i, cid, "accepted", None))
            applied[i] = k
            fleet._current[i] = cid
            if drops[k] and u > now:
                fleet._drop_at[i] = drop_at[k]
    if applied:
        sites = np.fromiter(applied.keys(), np.int64, len(applied))
        which = np.fromiter(applied.values(), np.int64, len(applied))
        fleet.setpoint[sites] = setpoint[which]
        fleet.setpoint_until[sites] = until[which]
    fleet._queue_acks(acks, now)
    return len(applied)


# A commercial time-of-use tariff with a demand charge (the shape of a US utility's
# medium-general-service schedule): C&I sites peak-shave against it.
CI_TARIFF = Tariff(
    currency="USD",
    timezone="America/Los_Angeles",
    demand_charge_per_kw=18.0,
    tou=[  # one period per hour: weekday peak, weekday off-peak, weekends
        TouPeriod(hours=[16, 17, 18, 19, 20], weekdays=[0, 1, 2, 3, 4], price_per_kwh=0.32),
        TouPeriod(
            hours=[h for h in range(24) if not 16 <= h <= 20],
            weekdays=[0, 1, 2, 3, 4],
            price_per_kwh=0.14,
        ),
        TouPeriod(hours=list(range(24)), weekdays=[5, 6], price_per_kwh=0.14),
    ],
)


def make_sites(
    n: int, groups: list[str], *, seed: int = 42, interval_s: float = 5.0, prefix: str = "site"
) -> list[SiteConfig]:
    """A mixed fleet: ~75 % home batteries (5-15 kWh), ~25 % C&I (200-1000 kWh) on
    :data:`CI_TARIFF`."""
    rng = np.random.default_rng(seed + 1)
    sites: list[SiteConfig] = []
    width = max(4, int(math.log10(max(n, 1))) + 1)
    for i in range(n):
        ci = rng.random() < 0.25
        capacity = float(rng.uniform(200, 1000) if ci else rng.uniform(5, 15))
        c_rate = float(rng.uniform(0.25, 0.5))
        p_max = round(capacity * c_rate, 1) if ci else round(float(rng.uniform(3, 6)), 1)
        sites.append(
            SiteConfig(
                site_id=f"{prefix}-{i:0{width}d}",
                group=groups[i % len(groups)],
                capacity_kwh=round(capacity, 1),
                p_charge_max_kw=p_max,
                p_discharge_max_kw=p_max,
                eff_charge=0.96 if ci else 0.95,
                eff_discharge=0.96 if ci else 0.95,
                soc_min=0.1,
                soc_max=0.95,
                telemetry_interval_s=round(interval_s * float(rng.uniform(1.0, 1.5)), 2),
                tariff=CI_TARIFF if ci else None,
                # what the simulated loads and PV can reach (a C&I profile x at most 0.1,
                # PV at most 0.6 x the battery's rating or 6 kW)
                site_load_max_kw=800.0 if ci else 20.0,
                pv_max_kw=max(p_max, 8.0),
            )
        )
    return sites
