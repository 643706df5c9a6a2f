"""Targets: what a group (or a site) must deliver in an interval, in kW.

An energy award of ``p_mw`` becomes ``1000·p_mw`` kW of net discharge for the group (+
discharge, − charge). A reserve award becomes headroom the split must leave free: up
reserves (reg up, spinning) on the discharge side, reg down on the charge side. Several
awards of one group and interval add up. A peak-shaving schedule gives a site its own
target directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from market.clearing import Award
from market.definitions import Product

KW_PER_MW = 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupTarget:
    dispatch_id: str
    group: str
    interval_start: datetime
    interval_end: datetime
    target_kw: float  # + discharge, − charge
    reserve_up_kw: float = 0.0
    reserve_down_kw: float = 0.0
    source: str = "award"

    def covers(self, t: datetime) -> bool:
        return self.interval_start <= t < self.interval_end


def dispatch_id(group: str, start: datetime) -> str:
    return f"{group}-{start:%Y%m%dT%H%M%SZ}"


def from_awards(awards: Iterable[Award]) -> list[GroupTarget]:
    """One target per (group, interval) from all its awards."""
    acc: dict[tuple[str, datetime], list[float]] = {}  # [net kW, up kW, down kW]
    ends: dict[tuple[str, datetime], datetime] = {}
    for a in awards:
        key = (a.group, a.interval_start)
        t = acc.setdefault(key, [0.0, 0.0, 0.0])
        ends[key] = a.interval_end
        if a.product.is_energy:
            t[0] += a.p_mw * KW_PER_MW
        elif a.product == Product.REG_DOWN:
            t[2] += a.discharge_mw * KW_PER_MW
        else:
            t[1] += a.discharge_mw * KW_PER_MW
    return [
        GroupTarget(
            dispatch_id=dispatch_id(g, start),
            group=g,
            interval_start=start,
            interval_end=ends[(g, start)],
            target_kw=net,
            reserve_up_kw=up,
            reserve_down_kw=down,
        )
        for (g, start), (net, up, down) in sorted(acc.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


class TargetRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A target on the targets topic (keyed by dispatch id): what every instance sharing
    the fleet needs to take its share of it, or ``cancelled``."""

    dispatch_id: str
    group: str
    interval_start: Annotated[datetime, msgspec.Meta(tz=True)]
    interval_end: Annotated[datetime, msgspec.Meta(tz=True)]
    target_kw: float
    reserve_up_kw: float = 0.0
    reserve_down_kw: float = 0.0
    source: str = "award"
    cancelled: bool = False

    def target(self) -> GroupTarget:
        return GroupTarget(
            dispatch_id=self.dispatch_id,
            group=self.group,
            interval_start=self.interval_start.astimezone(UTC),
            interval_end=self.interval_end.astimezone(UTC),
            target_kw=self.target_kw,
            reserve_up_kw=self.reserve_up_kw,
            reserve_down_kw=self.reserve_down_kw,
            source=self.source,
        )


_target_encoder = msgspec.json.Encoder()
_target_decoder = msgspec.json.Decoder(TargetRecord)


def encode_target(t: GroupTarget, *, cancelled: bool = False) -> bytes:
    return _target_encoder.encode(TargetRecord(**asdict(t), cancelled=cancelled))


def decode_target(raw: bytes) -> TargetRecord:
    """A target from the bus; a wrong field, a naive time, an empty or inverted interval
    or a non-finite kW raises ``ValueError`` naming it (the record goes to the DLQ)."""
    try:
        r = _target_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(str(exc)) from None
    if not r.dispatch_id or not r.group:
        raise ValueError("dispatch_id and group must not be empty")
    if r.interval_end <= r.interval_start:
        raise ValueError(f"interval_end {r.interval_end} is not after {r.interval_start}")
    for name in ("target_kw", "reserve_up_kw", "reserve_down_kw"):
        if not math.isfinite(getattr(r, name)):
            raise ValueError(f"{name} is not finite")
    return r
