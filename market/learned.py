"""A learned price forecaster: quantile gradient boosting, trained walk-forward.

Why this model. Day-ahead and real-time prices depend non-linearly on the time of day, the
day type and the recent price level (a cheap windy week shifts the whole profile; a spike
day does not). Gradient-boosted trees learn such interactions from a few thousand rows
without feature scaling, and LightGBM's quantile objective (the pinball loss
``Σ max(α·e, (α−1)·e)``) gives each price quantile directly, so the forecaster yields the
distribution the scenario bidding model needs, not a point plus an assumed error. LightGBM
is chosen over scikit-learn's histogram boosting for speed (one model per quantile is
retrained every week of a backtest) with the same algorithm; it runs single-threaded and
``deterministic`` so a seeded backtest is reproducible.

Features of a target interval ``t`` given a decision's information cutoff ``c`` (only prices
of intervals before ``c`` are read):

- calendar: time of day, day of week, weekend flag, day of year (sine and cosine);
- lead: hours from ``c`` to ``t``;
- the newest known price at the same time of day (``t − k·1 d``, smallest ``k`` with
  ``t − k·1 d < c``), the six known days before it at that time, their mean (the recent
  daily profile) and at the same time of the same weekday (``t − k·7 d``);
- the shape of the day: yesterday's price at this time less yesterday's mean, and the
  profile less its own mean over the horizon;
- the mean, minimum and maximum of the last known day, and the last known price.

Walk-forward training: at a decision with cutoff ``c`` the model is (re)trained when it is
older than ``retrain_every``, on past decisions only — the same structure of cutoff and
targets, every target interval strictly before ``c`` — from the last ``train_days``. One
model per quantile level; predictions are sorted across levels per interval (the
rearrangement of crossing quantiles), so rows ascend and scenarios are comonotone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    import lightgbm as lgb

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Window:
    """One decision's structure, by position in the regular price series: prices before
    ``cutoff`` are known, the targets are ``[first, end)``."""

    cutoff: int
    first: int
    end: int


def features(values: F64, starts: pd.DatetimeIndex, per_day: int, w: Window) -> F64:
    """The feature rows of a window's targets (reads ``values[:w.cutoff]`` only)."""
    idx = np.arange(w.first, w.end, dtype=np.int64)
    c = w.cutoff
    known = values[: max(c, 0)]
    t = starts[w.first : w.end]
    slot = (t.hour * 60 + t.minute).to_numpy(dtype=np.float64) / 60.0
    dow = t.day_of_week.to_numpy(dtype=np.float64)
    doy = t.day_of_year.to_numpy(dtype=np.float64)
    lead_h = (idx - c + 1) * (24.0 / per_day)

    def newest(period: int) -> F64:
        k = np.maximum(1, np.ceil((idx - c + 1) / period).astype(np.int64))
        pos = idx - k * period
        out = np.full(idx.size, np.nan)
        ok = (pos >= 0) & (pos < c)
        out[ok] = known[pos[ok]]
        return out

    last_day = known[max(0, c - per_day) : c]
    stats = (
        [float(last_day.mean()), float(last_day.min()), float(last_day.max()), float(known[-1])]
        if last_day.size
        else [np.nan] * 4
    )
    lag1 = newest(per_day)
    # the same time of day on each of the last 7 known days, and their mean (the profile)
    k0 = np.maximum(1, np.ceil((idx - c + 1) / per_day).astype(np.int64))
    lags = []
    for j in range(7):
        pos = idx - (k0 + j) * per_day
        col = np.full(idx.size, np.nan)
        ok = pos >= 0
        col[ok] = known[pos[ok]]
        lags.append(col)
    week = np.vstack(lags)
    seen = np.isfinite(week)
    count = seen.sum(axis=0)
    profile = np.where(
        count > 0, np.where(seen, week, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan
    )
    cols = [
        slot,
        dow,
        (dow >= 5).astype(np.float64),
        np.sin(2 * math.pi * doy / 365.25),
        np.cos(2 * math.pi * doy / 365.25),
        lead_h,
        lag1,
        newest(7 * per_day),
        *lags[1:],
        profile,
        lag1 - stats[0],  # yesterday's shape at this time of day
        profile - (profile[np.isfinite(profile)].mean() if np.isfinite(profile).any() else 0.0),
        *(np.full(idx.size, v) for v in stats),
    ]
    return np.column_stack(cols)


class QuantileForecaster:
    """Walk-forward quantile gradient boosting (see the module docstring)."""

    def __init__(
        self,
        levels: F64,
        *,
        per_day: int,
        train_days: int = 91,
        retrain_every_days: int = 7,
        min_train_days: int = 14,
        rounds: int = 150,
        seed: int = 0,
    ) -> None:
        self.levels = np.asarray(levels, dtype=np.float64)
        self.per_day = per_day
        self.train_days = train_days
        self.retrain_every = retrain_every_days * per_day
        self.min_train = min_train_days * per_day
        self.rounds = rounds
        self.seed = seed
        self._models: list[lgb.Booster] = []
        self._trained_at: int | None = None
        self.retrains = 0

    def ready(self, cutoff: int, past: list[Window]) -> bool:
        """Whether enough past decisions lie before ``cutoff`` to train on."""
        usable = [w for w in past if w.end <= cutoff]
        return bool(usable) and cutoff - usable[0].cutoff >= self.min_train

    def _fit(self, values: F64, starts: pd.DatetimeIndex, cutoff: int, past: list[Window]) -> None:
        lo = cutoff - self.train_days * self.per_day
        train = [w for w in past if w.end <= cutoff and w.cutoff >= lo]
        x = np.vstack([features(values, starts, self.per_day, w) for w in train])
        y = np.concatenate([values[w.first : w.end] for w in train])
        import lightgbm as lgb  # here, not at import: 1 s that `vpp optimize` never needs

        data = lgb.Dataset(x, label=y, params={"verbose": -1}, free_raw_data=False)
        self._models = [
            lgb.train(
                {
                    "objective": "quantile",
                    "alpha": float(a),
                    "learning_rate": 0.05,
                    "num_leaves": 15,
                    "min_data_in_leaf": 20,
                    "seed": self.seed,
                    "num_threads": 1,
                    "deterministic": True,
                    "force_row_wise": True,
                    "verbose": -1,
                },
                data,
                num_boost_round=self.rounds,
            )
            for a in self.levels
        ]
        self._trained_at = cutoff
        self.retrains += 1

    def scenarios(
        self, values: F64, starts: pd.DatetimeIndex, w: Window, past: list[Window]
    ) -> F64:
        """``(levels, T)`` price quantiles of the window's targets, ascending per interval.

        ``values`` may hold anything at or after ``w.cutoff``: nothing there is read.
        """
        if self._trained_at is None or w.cutoff - self._trained_at >= self.retrain_every:
            self._fit(values, starts, w.cutoff, past)
        x = features(values, starts, self.per_day, w)
        pred = np.vstack([np.asarray(m.predict(x), dtype=np.float64) for m in self._models])
        out: F64 = np.sort(pred, axis=0)
        return out
