"""Interval labels on the wire ↔ the engine's UTC interval-start convention.

Inside the engine an interval is named by its start instant in UTC, half-open
``[start, start + length)``. Markets name intervals their own way: CAISO by hour-ending in
Pacific prevailing time (HE1..HE24, HE25 on the autumn day, HE1..HE23 in spring), AEMO by
interval-ending time in AEST (UTC+10), EU day-ahead by the start in CET/CEST. Two wire forms
are produced and read:

- ``(trading_day, ordinal)``: the interval's 1-based position counted in real elapsed time
  from the trading day's start, so daylight-saving days simply have 23 or 25 hours and no
  label is ever ambiguous;
- ``label``: the labelled instant (start or end, per the market) as market-local ISO 8601
  *with its offset*, e.g. ``2026-11-01T01:00:00-07:00`` and ``2026-11-01T01:00:00-08:00``
  for the two 01:00s of the autumn change.

Reading a local time without an offset is accepted only where it is unambiguous; a time
in the repeated or skipped hour is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from market.definitions import MarketDefinition, Product


class LabelError(ValueError):
    """A wire label that does not name exactly one interval of this market."""


@dataclass(frozen=True, slots=True)
class WireInterval:
    trading_day: date
    ordinal: int
    label: str

    @property
    def code(self) -> str:
        """Compact form, e.g. ``2026-11-21#5`` (HE5 for an hourly market labelled by end)."""
        return f"{self.trading_day.isoformat()}#{self.ordinal}"


class IntervalLabels:
    """Label conversions for one product of one market."""

    def __init__(self, market: MarketDefinition, product: Product | str) -> None:
        self.market = market
        self.product = Product(product)
        self.length = market.interval(product)

    def _check_aligned(self, start: datetime) -> tuple[date, int]:
        if start.tzinfo is None:
            raise LabelError(f"naive datetime {start.isoformat()}: use an aware UTC instant")
        start = start.astimezone(UTC)
        day = self.market.trading_day(start)
        offset = start - self.market.trading_day_start_utc(day)
        steps, rest = divmod(offset, self.length)
        if rest:
            raise LabelError(
                f"{start.isoformat()} is not the start of a {self.length} interval of "
                f"{self.market.market_id} (it is {rest} past one)"
            )
        return day, int(steps) + 1

    def intervals_in_day(self, day: date) -> int:
        span = self.market.trading_day_start_utc(day + timedelta(days=1))
        span_td = span - self.market.trading_day_start_utc(day)
        return int(span_td // self.length)

    def to_wire(self, start: datetime) -> WireInterval:
        day, ordinal = self._check_aligned(start)
        labelled = start.astimezone(UTC)
        if self.market.label == "end":
            labelled += self.length
        local = labelled.astimezone(self.market.tz)
        return WireInterval(day, ordinal, local.isoformat())

    def from_wire(self, trading_day: date, ordinal: int) -> datetime:
        count = self.intervals_in_day(trading_day)
        if not 1 <= ordinal <= count:
            raise LabelError(
                f"{self.market.market_id} trading day {trading_day} has intervals 1..{count}, "
                f"not {ordinal}"
            )
        return self.market.trading_day_start_utc(trading_day) + (ordinal - 1) * self.length

    def from_label(self, label: str) -> datetime:
        """The UTC start of the interval a market-local label names."""
        try:
            ts = datetime.fromisoformat(label)
        except ValueError:
            raise LabelError(f"{label!r} is not an ISO 8601 date-time") from None
        if ts.tzinfo is None:
            ts = self._localize(ts, label)
        start = ts.astimezone(UTC)
        if self.market.label == "end":
            start -= self.length
        self._check_aligned(start)
        return start

    def _localize(self, naive: datetime, label: str) -> datetime:
        tz = self.market.tz
        early, late = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)

        def shown(ts: datetime) -> bool:  # does the local clock ever show this time?
            return ts.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive

        if not (shown(early) or shown(late)):
            raise LabelError(f"{label!r} does not exist in {self.market.timezone} (skipped hour)")
        if shown(early) and shown(late) and early.utcoffset() != late.utcoffset():
            raise LabelError(
                f"{label!r} is ambiguous in {self.market.timezone} (the clock shows it twice); "
                "give the UTC offset"
            )
        return early if shown(early) else late
