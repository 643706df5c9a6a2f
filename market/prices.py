"""Price data with an explicit unit, interval convention and time zone.

:func:`load_price_csv` reads one price column of a CSV file and returns a
:class:`PriceSeries`: values in currency/MWh (or currency/MW/h for reserve capacity),
indexed by the UTC *start* of each interval. The caller states how the file labels time
(``interval: start | end`` and the ``timezone`` its clock is in); nothing is guessed.
Unparseable rows, duplicates, gaps and out-of-order rows are refused with the CSV line
number, so a bad file never turns into a quietly wrong backtest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd

# unit -> (currency, factor to per-MWh)
UNITS: dict[str, tuple[str, float]] = {
    "EUR/MWh": ("EUR", 1.0),
    "USD/MWh": ("USD", 1.0),
    "AUD/MWh": ("AUD", 1.0),
    "EUR/kWh": ("EUR", 1000.0),
    "USD/kWh": ("USD", 1000.0),
    "AUD/kWh": ("AUD", 1000.0),
    "EUR/MW/h": ("EUR", 1.0),
    "USD/MW/h": ("USD", 1.0),
    "AUD/MW/h": ("AUD", 1.0),
    # capacity prices quoted per kW per hour (some ISOs and most aggregator contracts)
    "EUR/kW/h": ("EUR", 1000.0),
    "USD/kW/h": ("USD", 1000.0),
    "AUD/kW/h": ("AUD", 1000.0),
}


ENERGY_UNITS = tuple(u for u in UNITS if u.endswith("Wh"))  # per MWh or kWh delivered
CAPACITY_UNITS = tuple(u for u in UNITS if u.endswith("W/h"))  # per MW or kW held an hour


class PriceDataError(ValueError):
    """Price data that cannot be used as given; the message names the file and row."""


@dataclass(frozen=True, slots=True)
class PriceSeries:
    name: str
    currency: str
    interval: timedelta
    starts: pd.DatetimeIndex  # UTC interval starts, regular
    values: npt.NDArray[np.float64]  # currency per MWh (or per MW/h)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def start(self) -> datetime:
        return pd.Timestamp(self.starts[0]).to_pydatetime()

    @property
    def end(self) -> datetime:
        return pd.Timestamp(self.starts[-1]).to_pydatetime() + self.interval

    def window(self, start: datetime, end: datetime) -> PriceSeries:
        """The intervals starting in ``[start, end)``."""
        mask = (self.starts >= start) & (self.starts < end)
        return PriceSeries(
            self.name, self.currency, self.interval, self.starts[mask], self.values[mask]
        )

    def at(self, starts: pd.DatetimeIndex) -> npt.NDArray[np.float64]:
        """Values at the given interval starts (KeyError naming the first missing one)."""
        pos = self._positions(starts)
        if (pos < 0).any():
            missing = starts[int(np.flatnonzero(pos < 0)[0])]
            raise KeyError(f"{self.name}: no price for the interval starting {missing}")
        out: npt.NDArray[np.float64] = self.values[pos]
        return out

    def _positions(self, starts: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
        """Index of each start in this series, -1 where absent. For a regular series (every
        step one interval) the position is arithmetic: one pass, no hash table
        (``get_indexer`` builds one per call, 3 ms per backtest decision on a year of
        5-minute prices). Anything else takes the hash lookup."""
        n = len(self.starts)
        mine = self.starts.as_unit("ns").asi8
        step = int(self.interval / timedelta(microseconds=1)) * 1000
        if not n or not bool(np.all(np.diff(mine) == step)):
            out: npt.NDArray[np.int64] = self.starts.get_indexer(starts).astype(np.int64)
            return out
        delta = pd.DatetimeIndex(starts).as_unit("ns").asi8 - mine[0]
        pos = np.where(delta % step == 0, delta // step, -1)
        pos[(pos < 0) | (pos >= n)] = -1
        return pos.astype(np.int64)

    def to_series(self) -> pd.Series:
        return pd.Series(self.values, index=self.starts, name=self.name)


def held(series: PriceSeries, interval: timedelta) -> PriceSeries:
    """The series on a finer grid, each value held over the ``k`` intervals its own spans
    (``k = series.interval / interval``, a whole number): how hourly history is replayed
    for a market that clears quarter-hours (SDAC since delivery day 2025-10-01). The rule
    keeps every hour's energy-weighted mean and adds no shape inside the hour: a strategy
    can earn nothing from quarter-hours the data does not have."""
    if interval == series.interval:
        return series
    k = series.interval / interval
    if interval <= timedelta(0) or k < 1 or k != int(k):
        raise PriceDataError(
            f"{series.name}: {series.interval} intervals cannot be replayed as {interval} "
            "ones (the finer interval must divide the file's)"
        )
    k = int(k)
    base = series.starts.as_unit("ns").asi8
    step = int(interval / timedelta(microseconds=1)) * 1000
    starts = (base[:, None] + step * np.arange(k, dtype=np.int64)[None, :]).ravel()
    return PriceSeries(
        series.name,
        series.currency,
        interval,
        pd.DatetimeIndex(pd.to_datetime(starts, unit="ns", utc=True)),
        np.repeat(np.asarray(series.values, dtype=np.float64), k),
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PriceDataError(
            f"unknown time zone {name!r} (use an IANA name such as UTC, Europe/Berlin or "
            "Etc/GMT+8 for a fixed UTC-08:00)"
        ) from None


# power unit -> factor to kW (site loads and PV in backtests)
POWER_UNITS: dict[str, float] = {"kW": 1.0, "MW": 1000.0}
# feature unit -> factor to the unit stored (MW for powers, currency/MWh for prices)
FEATURE_UNITS: dict[str, tuple[str, float]] = {
    "MW": ("MW", 1.0),
    "GW": ("MW", 1000.0),
    "kW": ("MW", 0.001),
    **{u: (f"{UNITS[u][0]}/MWh", UNITS[u][1]) for u in ENERGY_UNITS},
}


def load_feature_csv(
    path: Path,
    *,
    time_column: str,
    column: str,
    unit: str,
    interval: Literal["start", "end"],
    timezone: str,
    time_format: str | None = None,
) -> PriceSeries:
    """Load one exogenous feature column (a load, wind or solar forecast in MW, or a
    price) with the price conventions, except that an empty cell is a gap (``NaN``), not
    an error: forecasts published by an operator have holes, and the caller reports and
    fills them (:mod:`market.features`). Text that is not a number is still refused with
    its line. The ``currency`` field names the stored unit (``MW`` or ``EUR/MWh``)."""
    if unit not in FEATURE_UNITS:
        raise PriceDataError(
            f"{path}: unknown feature unit {unit!r}; known: {', '.join(FEATURE_UNITS)}"
        )
    stored, factor = FEATURE_UNITS[unit]
    return _load_series(
        path, time_column, column, stored, factor, interval, timezone, time_format, gaps=True
    )


def load_power_csv(
    path: Path,
    *,
    time_column: str,
    column: str,
    unit: str,
    interval: Literal["start", "end"],
    timezone: str,
    time_format: str | None = None,
) -> PriceSeries:
    """Load one power column (a site's load or PV, in kW) with the price conventions: a
    regular series indexed by UTC interval start; its ``currency`` field reads ``kW``."""
    if unit not in POWER_UNITS:
        raise PriceDataError(f"{path}: unknown power unit {unit!r}; known: kW, MW")
    return _load_series(
        path, time_column, column, "kW", POWER_UNITS[unit], interval, timezone, time_format
    )


def load_price_csv(
    path: Path,
    *,
    time_column: str,
    column: str,
    unit: str,
    interval: Literal["start", "end"],
    timezone: str,
    time_format: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> PriceSeries:
    """Load one price column; see the module docstring for the conventions."""
    if unit not in UNITS:
        raise PriceDataError(f"{path}: unknown unit {unit!r}; known: {', '.join(UNITS)}")
    currency, factor = UNITS[unit]
    series = _load_series(
        path, time_column, column, currency, factor, interval, timezone, time_format
    )
    if start is not None or end is not None:
        lo = start or series.start
        hi = end or series.end
        series = series.window(lo, hi)
        if not len(series):
            raise PriceDataError(f"{path}: no prices between {lo} and {hi}")
    return series


def _load_series(
    path: Path,
    time_column: str,
    column: str,
    currency: str,
    factor: float,
    interval: Literal["start", "end"],
    timezone: str,
    time_format: str | None,
    *,
    gaps: bool = False,
) -> PriceSeries:
    tz = _zone(timezone)
    if path.is_dir():
        raise PriceDataError(f"{path}: is a folder, not a CSV file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PriceDataError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise PriceDataError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise PriceDataError(f"{path}: not a readable CSV file ({exc})") from None
    for needed in (time_column, column):
        if needed not in frame.columns:
            raise PriceDataError(f"{path}: no column {needed!r}; columns are {list(frame.columns)}")
    if frame.empty:
        raise PriceDataError(f"{path}: no rows")

    raw_times = frame[time_column].str.strip()
    times = pd.to_datetime(raw_times, format=time_format or "mixed", errors="coerce")
    bad = times.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PriceDataError(
            f"{path} line {row + 2}: cannot parse time {raw_times.iloc[row]!r} in "
            f"{time_column!r}" + (f" with format {time_format!r}" if time_format else "")
        )
    cells = frame[column].str.strip()
    values = pd.to_numeric(cells, errors="coerce")
    bad = values.isna() & ~(cells.eq("") if gaps else False)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PriceDataError(
            f"{path} line {row + 2}: price {frame[column].iloc[row]!r} in {column!r} is not "
            "a number"
        )
    index = pd.DatetimeIndex(times)
    if index.tz is None:
        try:
            index = index.tz_localize(tz, ambiguous="raise", nonexistent="raise")
        except (pd.errors.OutOfBoundsDatetime, ValueError) as exc:
            raise PriceDataError(
                f"{path}: local times are not unambiguous in {timezone} ({exc}); "
                "a file without daylight-saving repeats needs a fixed-offset zone"
            ) from None
    index = index.tz_convert(UTC).as_unit("ns")

    diffs = np.diff(index.asi8)
    if len(index) < 2:
        raise PriceDataError(f"{path}: need at least two rows to know the interval length")
    step_ns = int(np.median(diffs))
    if step_ns <= 0:
        raise PriceDataError(f"{path}: times do not increase")
    for kind, mask in (
        ("duplicate time", diffs == 0),
        ("time goes backwards", diffs < 0),
        ("gap", diffs > step_ns),
        ("irregular step", (diffs > 0) & (diffs < step_ns)),
    ):
        if mask.any():
            row = int(np.flatnonzero(mask)[0]) + 1
            step_td = timedelta(microseconds=step_ns / 1000)
            raise PriceDataError(
                f"{path} line {row + 2}: {kind} — {raw_times.iloc[row - 1]!r} then "
                f"{raw_times.iloc[row]!r} (the file's step is {step_td})"
            )
    step = pd.Timedelta(step_ns, unit="ns").to_pytimedelta()
    if interval == "end":
        index = index - step
    return PriceSeries(
        name=f"{path.name}:{column}",
        currency=currency,
        interval=step,
        starts=index,
        values=values.to_numpy(dtype=np.float64) * factor,
    )
