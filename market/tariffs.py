"""Retail tariffs in the DER-VET format: seasonal time-of-use energy prices and demand charges.

A DER-VET tariff file is a table of *billing periods*, one row each::

    Billing Period, Start Month, End Month, Start Time, End Time,
    Excluding Start Time, Excluding End Time, Weekday?, Value, Charge, Name

- months ``Start Month..End Month`` (1-12, inclusive);
- hours ``Start Time..End Time`` are *hour-ending* 1-24, inclusive (hour-ending 1 is the
  hour from 00:00 to 01:00), minus the optional ``Excluding`` range, same convention;
- ``Weekday?``: 1 weekdays (Monday-Friday), 0 weekends, 2 every day;
- ``Charge`` is ``Energy`` (``Value`` in currency/kWh) or ``Demand`` (currency/kW of the
  highest import within the period's hours in each month).

Periods of the same kind that overlap add up, as DER-VET bills them (the shipped file has no
overlaps). Times are the site's local clock: labels are read as wall-clock times of the
tariff, with no daylight-saving shift (DER-VET's data are a 8,760-hour year).

:func:`energy_price` gives the price of every interval; :func:`demand_periods` gives, per
demand charge, which intervals it covers — the bill model
(:mod:`optimizer.bill_model`) keeps one peak variable per (charge, month).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

_COLUMNS = (
    "Billing Period",
    "Start Month",
    "End Month",
    "Start Time",
    "End Time",
    "Excluding Start Time",
    "Excluding End Time",
    "Weekday?",
    "Value",
    "Charge",
    "Name",
)


class TariffError(ValueError):
    """A tariff file that cannot be used; the message names the file, row and column."""


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    period: int
    start_month: int
    end_month: int
    start_he: int  # hour-ending, 1-24, inclusive
    end_he: int
    exclude_start_he: int | None
    exclude_end_he: int | None
    weekday: int  # 1 weekdays, 0 weekends, 2 every day
    value: float  # currency/kWh (energy) or currency/kW (demand)
    charge: str  # "energy" | "demand"
    name: str

    def covers(self, local_starts: pd.DatetimeIndex) -> B:
        """Which intervals (labelled by their local start) fall in this period."""
        month = local_starts.month.to_numpy()
        he = local_starts.hour.to_numpy() + 1
        ok = (month >= self.start_month) & (month <= self.end_month)
        ok &= (he >= self.start_he) & (he <= self.end_he)
        if self.exclude_start_he is not None and self.exclude_end_he is not None:
            ok &= ~((he >= self.exclude_start_he) & (he <= self.exclude_end_he))
        if self.weekday != 2:
            weekend = local_starts.day_of_week.to_numpy() >= 5
            ok &= weekend if self.weekday == 0 else ~weekend
        out: B = ok
        return out


@dataclass(frozen=True)
class Tariff:
    periods: tuple[BillingPeriod, ...]
    source: str = ""

    @property
    def energy(self) -> tuple[BillingPeriod, ...]:
        return tuple(p for p in self.periods if p.charge == "energy")

    @property
    def demand(self) -> tuple[BillingPeriod, ...]:
        return tuple(p for p in self.periods if p.charge == "demand")

    def energy_price(self, local_starts: pd.DatetimeIndex) -> F64:
        """Currency per kWh of every interval (0 where no energy period applies)."""
        price = np.zeros(len(local_starts))
        for p in self.energy:
            price += np.where(p.covers(local_starts), p.value, 0.0)
        return price

    def uncovered(self, local_starts: pd.DatetimeIndex) -> int:
        """Intervals no energy period covers (usually a gap in the tariff file)."""
        return int((~self._covered(local_starts)).sum())

    def _covered(self, local_starts: pd.DatetimeIndex) -> B:
        covered = np.zeros(len(local_starts), dtype=bool)
        for p in self.energy:
            covered |= p.covers(local_starts)
        return covered

    def energy_price_checked(self, local_starts: pd.DatetimeIndex) -> F64:
        """:meth:`energy_price`, refusing intervals no energy period covers: a gap in a
        tariff is an error in it, not free energy (every caller bills with this)."""
        covered = self._covered(local_starts)
        if not covered.all():
            first = local_starts[int(np.flatnonzero(~covered)[0])]
            raise TariffError(
                f"{int((~covered).sum())} intervals have no energy price (the first starts "
                f"{first.isoformat()} local time, hour-ending {first.hour + 1}, month "
                f"{first.month}): add a period that covers them"
            )
        return self.energy_price(local_starts)


def _int(row: dict[str, str], col: str, where: str, lo: int, hi: int) -> int:
    text = (row.get(col) or "").strip()
    try:
        value = int(float(text))
    except ValueError:
        raise TariffError(f"{where}: column {col!r}: {text!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise TariffError(f"{where}: column {col!r}: {value} is outside {lo}..{hi}")
    return value


def _optional(row: dict[str, str], col: str, where: str) -> int | None:
    text = (row.get(col) or "").strip()
    return None if text in ("", "nan", "NaN") else _int(row, col, where, 1, 24)


def load_dervet_tariff(path: Path) -> Tariff:
    """Parse a DER-VET tariff CSV; :class:`TariffError` names the row and column at fault."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TariffError(f"{path}: missing columns {missing}")
        periods = []
        for n, row in enumerate(reader, start=2):
            where = f"{path}:{n}"
            charge = (row["Charge"] or "").strip().lower()
            if charge not in ("energy", "demand"):
                raise TariffError(
                    f"{where}: column 'Charge': {row['Charge']!r} is not Energy/Demand"
                )
            try:
                value = float(row["Value"])
            except ValueError:
                raise TariffError(
                    f"{where}: column 'Value': {row['Value']!r} is not a number"
                ) from None
            if not np.isfinite(value) or value < 0:
                raise TariffError(f"{where}: column 'Value': {value} must be finite and >= 0")
            p = BillingPeriod(
                period=_int(row, "Billing Period", where, 1, 10_000),
                start_month=_int(row, "Start Month", where, 1, 12),
                end_month=_int(row, "End Month", where, 1, 12),
                start_he=_int(row, "Start Time", where, 1, 24),
                end_he=_int(row, "End Time", where, 1, 24),
                exclude_start_he=_optional(row, "Excluding Start Time", where),
                exclude_end_he=_optional(row, "Excluding End Time", where),
                weekday=_int(row, "Weekday?", where, 0, 2),
                value=value,
                charge=charge,
                name=(row["Name"] or "").strip(),
            )
            if p.start_month > p.end_month or p.start_he > p.end_he:
                raise TariffError(f"{where}: start after end (months or hours)")
            periods.append(p)
    if not periods:
        raise TariffError(f"{path}: no billing periods")
    return Tariff(tuple(periods), str(path))
