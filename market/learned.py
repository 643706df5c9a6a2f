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

- each exogenous feature the scenario names (day-ahead load, wind, solar forecasts...)
  at the target and one day before, and its mean over the target's day.

Walk-forward training on every day of history the price file holds (up to
``train_days``): the rows are the current decision's own structure (cutoff, first target,
horizon) shifted back by whole days, each shifted window's targets strictly before the
cutoff. The model is retrained every ``retrain_every`` days. One model per quantile level;
predictions are sorted across levels per interval (the rearrangement of crossing
quantiles).

Calibration (conformalised quantile regression, Romano et al. 2019): the newest
``holdout_days`` windows are held out of training; on them each level's prediction is
shifted by the empirical ``α``-quantile of its errors ``y − q̂_α``, so that on the held-out
days exactly a share ``α`` of prices lies below each level. The shifts are kept with the
model until its next retraining.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


LEVELS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95)


def exogenous(feats: F64, per_day: int, w: Window) -> F64:
    """Feature columns of a window's targets from filled feature rows ``feats`` (K, N) on
    the price grid: each feature at the target, a day before, and its target-day mean."""
    idx = np.arange(w.first, w.end, dtype=np.int64)
    cols = []
    day0 = (idx // per_day) * per_day
    for row in feats:
        n = row.size
        at = row[np.clip(idx, 0, n - 1)]
        before = row[np.clip(idx - per_day, 0, n - 1)]
        cum = np.concatenate([[0.0], np.cumsum(row)])
        lo, hi = np.clip(day0, 0, n), np.clip(day0 + per_day, 0, n)
        means = (cum[hi] - cum[lo]) / np.maximum(hi - lo, 1)
        cols += [at, before, means]
    return np.column_stack(cols) if cols else np.empty((idx.size, 0))


class QuantileForecaster:
    """Walk-forward quantile gradient boosting (see the module docstring)."""

    name = "learned"

    def __init__(
        self,
        *,
        per_day: int,
        features: Sequence[str] = (),
        levels: Sequence[float] = LEVELS,
        train_days: int = 728,
        retrain_every_days: int = 28,
        holdout_days: int = 28,
        min_train_days: int = 28,
        rounds: int = 120,
        seed: int = 0,
    ) -> None:
        self.levels = np.asarray(levels, dtype=np.float64)
        self.per_day = per_day
        self.features = tuple(features)
        self.train_days = train_days
        self.retrain_every = retrain_every_days * per_day
        self.holdout = holdout_days
        self.min_train = min_train_days
        self.rounds = rounds
        self.seed = seed
        self._models: list[lgb.Booster] = []
        self._shift: F64 = np.zeros(self.levels.size)
        self._trained_at: int | None = None
        self._structure: tuple[int, int] | None = None
        self.retrains = 0

    @property
    def lookback_days(self) -> int:
        """Days of history before a decision the model trains on (and the lags)."""
        return self.train_days + self.holdout + 14

    def _rows(self, values: F64, feats: F64 | None, starts: pd.DatetimeIndex, w: Window) -> F64:
        x = features(values, starts, self.per_day, w)
        if feats is not None and feats.shape[0]:
            x = np.hstack([x, exogenous(feats, self.per_day, w)])
        return x

    def _windows(self, w: Window) -> list[Window]:
        """The decision's structure shifted back by whole days, every target before the
        cutoff, newest first."""
        out = []
        for k in range(1, self.train_days + 1):
            shift = k * self.per_day
            past = Window(w.cutoff - shift, w.first - shift, w.end - shift)
            if past.cutoff < 8 * self.per_day:
                break
            if past.end <= w.cutoff:
                out.append(past)
        return out

    def _train(self, rows: list[F64], ys: list[F64]) -> list[lgb.Booster]:
        import lightgbm as lgb  # here, not at import: 1 s that `vpp optimize` never needs

        data = lgb.Dataset(
            np.vstack(rows), label=np.concatenate(ys), params={"verbose": -1}, free_raw_data=False
        )
        return [
            lgb.train(
                {
                    "objective": "quantile",
                    "alpha": float(a),
                    "learning_rate": 0.08,
                    "num_leaves": 15,
                    "min_data_in_leaf": 40,
                    "feature_fraction": 0.8,
                    "bagging_seed": self.seed,
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

    def _predict(self, x: F64) -> F64:
        pred = np.vstack([np.asarray(m.predict(x), dtype=np.float64) for m in self._models])
        return pred

    def fit(self, values: F64, feats: F64 | None, starts: pd.DatetimeIndex, w: Window) -> bool:
        """(Re)train when due; False while fewer than ``min_train_days`` windows exist."""
        structure = (w.first - w.cutoff, w.end - w.first)
        due = (
            self._trained_at is None
            or w.cutoff - self._trained_at >= self.retrain_every
            or structure != self._structure
        )
        if not due:
            return True
        past = self._windows(w)
        if len(past) < self.min_train + self.holdout:
            return bool(self._models) and structure == self._structure
        held, train = past[: self.holdout], past[self.holdout :]
        rows = [self._rows(values, feats, starts, p) for p in train]
        ys = [values[p.first : p.end] for p in train]
        self._models = self._train(rows, ys)
        x_h = np.vstack([self._rows(values, feats, starts, p) for p in held])
        y_h = np.concatenate([values[p.first : p.end] for p in held])
        pred = self._predict(x_h)
        self._shift = np.array(
            [np.quantile(y_h - pred[k], a) for k, a in enumerate(self.levels.tolist())]
        )
        self._trained_at = w.cutoff
        self._structure = structure
        self.retrains += 1
        return True

    def quantiles(self, values: F64, feats: F64 | None, starts: pd.DatetimeIndex, w: Window) -> F64:
        """``(levels, T)`` calibrated price quantiles of the window's targets, ascending per
        interval. ``values`` and ``feats`` may hold anything at or after ``w.cutoff`` (or
        not published by the decision): nothing there is read."""
        x = self._rows(values, feats, starts, w)
        pred = self._predict(x) + self._shift[:, None]
        out: F64 = np.sort(pred, axis=0)
        return out
