"""Decode a whole batch of telemetry at once into NumPy columns.

Fast path: the batch's values are joined into one JSON array and decoded by a single
msgspec call (no Python loop per message inside the decoder), then each field is pulled
into a NumPy column with one C-level pass (``np.fromiter`` over ``attrgetter``).

Joining is safe because the array must come back with exactly one element per message
and the contract leaves no free-form place for bytes to hide: unknown fields are
refused, ``mode`` is an enum, ``ts`` must parse as a timestamp and ``site_id`` must be a
registered id. A message that is not one complete object therefore either breaks the
array or produces a value the contract refuses. When the fast path fails for any reason,
the batch is decoded message by message so that each refused message gets its own
reason; the valid ones in the same batch still pass.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import numpy as np
import numpy.typing as npt

from vpp.framing import decode_each
from vpp.telemetry.contract import MODE_CODE, Telemetry

_one_decoder = msgspec.json.Decoder(Telemetry)

_get_site = operator.attrgetter("site_id")
_get_ts = operator.attrgetter("ts")
_get_seq = operator.attrgetter("seq")
_get_soc = operator.attrgetter("soc")
_get_p = operator.attrgetter("p_kw")
_get_load = operator.attrgetter("site_load_kw")
_get_pv = operator.attrgetter("pv_kw")
_get_avail = operator.attrgetter("available")
_get_mode = operator.attrgetter("mode")
_timestamp = datetime.timestamp


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused message: its position in the batch, a reason label and a precise detail."""

    position: int
    reason: str
    detail: str


@dataclass(slots=True)
class TelemetryColumns:
    """Decoded messages, column-wise. ``position`` maps each row back to the batch."""

    position: npt.NDArray[np.int64]
    site_id: list[str]
    ts: npt.NDArray[np.float64]  # epoch seconds, UTC
    seq: npt.NDArray[np.int64]
    soc: npt.NDArray[np.float64]
    p_kw: npt.NDArray[np.float64]
    site_load_kw: npt.NDArray[np.float64]  # NaN = not metered
    pv_kw: npt.NDArray[np.float64]
    available: npt.NDArray[np.bool_]
    mode: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.site_id)

    def take(self, rows: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> TelemetryColumns:
        picked = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        return TelemetryColumns(
            self.position[picked],
            [self.site_id[i] for i in picked.tolist()],
            self.ts[picked],
            self.seq[picked],
            self.soc[picked],
            self.p_kw[picked],
            self.site_load_kw[picked],
            self.pv_kw[picked],
            self.available[picked],
            self.mode[picked],
        )


def _columns(msgs: list[Telemetry], position: npt.NDArray[np.int64]) -> TelemetryColumns:
    n = len(msgs)
    return TelemetryColumns(
        position=position,
        site_id=list(map(_get_site, msgs)),
        ts=np.fromiter(map(_timestamp, map(_get_ts, msgs)), np.float64, n),
        seq=np.fromiter(map(_get_seq, msgs), np.int64, n),
        soc=np.fromiter(map(_get_soc, msgs), np.float64, n),
        p_kw=np.fromiter(map(_get_p, msgs), np.float64, n),
        site_load_kw=np.array(list(map(_get_load, msgs)), dtype=np.float64),
        pv_kw=np.array(list(map(_get_pv, msgs)), dtype=np.float64),
        available=np.fromiter(map(_get_avail, msgs), np.bool_, n),
        mode=np.fromiter(map(MODE_CODE.__getitem__, map(_get_mode, msgs)), np.int8, n),
    )


def _reason(exc: msgspec.MsgspecError) -> str:
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return "undecodable"
    if "Number out of range" in text:
        return "non_finite"
    if text.endswith("at `$.v`"):
        return "version"
    if text.endswith("at `$.ts`"):
        return "bad_timestamp"
    return "schema"


def decode_batch(values: Sequence[bytes | None]) -> tuple[TelemetryColumns, list[Refusal]]:
    """Decode ``values`` (one message each); return the decoded columns and the refusals."""
    n = len(values)
    if n and None not in values:
        try:
            msgs = decode_each(_one_decoder, values)  # type: ignore[arg-type]
            return _columns(msgs, np.arange(n, dtype=np.int64)), []
        except (msgspec.MsgspecError, OverflowError, ValueError):
            pass  # find the culprits one by one below
    good: list[Telemetry] = []
    positions: list[int] = []
    refusals: list[Refusal] = []
    for i, raw in zip(itertools.count(), values, strict=False):
        if raw is None:
            refusals.append(Refusal(i, "undecodable", "empty value (tombstone) on telemetry"))
            continue
        try:
            msg = _one_decoder.decode(raw)
        except msgspec.MsgspecError as exc:
            refusals.append(Refusal(i, _reason(exc), str(exc)))
            continue
        try:
            msg.ts.timestamp()
        except (OverflowError, ValueError, OSError) as exc:
            refusals.append(Refusal(i, "bad_timestamp", f"ts {msg.ts.isoformat()}: {exc}"))
            continue
        good.append(msg)
        positions.append(i)
    return _columns(good, np.asarray(positions, dtype=np.int64)), refusals


def check_keys(
    cols: TelemetryColumns, keys: Sequence[bytes | None]
) -> tuple[TelemetryColumns, list[Refusal]]:
    """A message's bus key must be its body's ``site_id`` (the partitioning contract: one
    site's messages on one partition, in order). ``keys`` is by batch position."""
    bad = [
        k
        for k, (pos, site) in enumerate(zip(cols.position.tolist(), cols.site_id, strict=True))
        if keys[pos] != site.encode()
    ]
    if not bad:
        return cols, []
    refusals = [
        Refusal(
            int(cols.position[k]),
            "key_mismatch",
            f"key {keys[int(cols.position[k])]!r} is not the body's site_id {cols.site_id[k]!r}",
        )
        for k in bad
    ]
    keep = np.ones(len(cols), dtype=bool)
    keep[bad] = False
    return cols.take(keep), refusals
