"""LEAR: a regularised linear day-ahead price model per delivery slot, recalibrated daily.

The LEAR model (Lago, De Ridder, Vrancx & De Schutter, *Forecasting day-ahead electricity
prices: a review of state-of-the-art algorithms, best practices and an open-access
benchmark*, Applied Energy 2021) forecasts the price of each slot ``h`` of delivery day
``D`` with its own LASSO regression on one feature vector per day::

    ŷ_{D,h} = β_h · x_D,      β_h = argmin  1/(2n) Σ_d (y_{d,h} − β·x_d)² + α_h ‖β‖₁

``x_D`` holds what is known when day ``D`` is bid:

- the prices of every slot of ``D−1``, ``D−2``, ``D−3`` and ``D−7`` (the newest known
  day is ``D−1``: its auction closed a day before);
- ``D−1``'s minimum, maximum and mean;
- each exogenous series the scenario names (day-ahead load, wind, solar forecasts, ...)
  at every slot of ``D`` and of ``D−1``, and, with load, wind and solar all present,
  the residual load ``load − wind − solar`` of ``D``;
- the day of the week (one-hot).

Prices and features go through the variance-stabilising ``asinh`` transform of their
median/MAD-normalised values (:func:`_asinh`), fitted on the calibration window, then are
standardised. The model is refitted every ``recalibrate_days`` on a rolling window, for
each of ``windows_days`` (the calibration windows of an ensemble: a year tracks the
current regime, four years the seasons; the forecast is their mean), warm-started from
the previous fit — the days shift by one, so coordinate descent converges in a few
sweeps. ``α_h`` is chosen per slot every ``realpha_days`` from a small grid by the error
on the last 28 days of the window (a hold-out, not the training fit). Training uses every
day the price file holds before the decision, back to the longest window.

Quantiles come from the model's own out-of-sample errors: the residuals ``y − ŷ`` of its
forecasts over the last ``residual_days`` days (backcast once at the first decision,
each backcast fitted on the days before it, then the real forecasts as their prices become
known), pooled over neighbouring slots, centred on their median, added to the point
forecast. They are as calibrated as the recent past is like the next day (the summary
reports each level's coverage).

Every forecast runs with one BLAS/OpenMP thread (:mod:`market.threads`): the LASSO's sums
in another thread order differ in their last bits, and a live bid must equal its
backtest's on any machine.

Scope: day-ahead products (at most 96 slots a day). A horizon that runs past the first
target day forecasts later days recursively (an unknown lag day takes its own forecast).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from market.daygrid import DayGrid, day_grid, from_days, to_days
from market.definitions import MarketDefinition
from market.features import FeatureSet, fill_gaps
from market.forecasts import Forecast, ForecastError
from market.prices import PriceSeries
from market.threads import one_thread

F64 = npt.NDArray[np.float64]

PRICE_LAGS = (1, 2, 3, 7)
ALPHAS = (0.001, 0.003, 0.01, 0.03)
HOLDOUT_DAYS = 28
MAX_SLOTS = 96


def _asinh(x: F64, med: F64, mad: F64) -> F64:
    out: F64 = np.arcsinh((x - med) / mad)
    return out


def _sinh(z: F64, med: F64, mad: F64) -> F64:
    out: F64 = np.sinh(z) * mad + med
    return out


@dataclass
class _Transform:
    x_med: F64
    x_mad: F64
    mu: F64
    sd: F64
    y_med: float
    y_mad: float

    @classmethod
    def fit(cls, x: F64, y: F64) -> _Transform:
        x_med = np.median(x, axis=0)
        x_mad = np.median(np.abs(x - x_med), axis=0) * 1.4826 + 1e-3
        z = _asinh(x, x_med, x_mad)
        y_med = float(np.median(y))
        y_mad = float(np.median(np.abs(y - y_med)) * 1.4826 + 1e-3)
        return cls(x_med, x_mad, z.mean(axis=0), z.std(axis=0) + 1e-9, y_med, y_mad)

    def x(self, x: F64) -> F64:
        out: F64 = (_asinh(x, self.x_med, self.x_mad) - self.mu) / self.sd
        return out

    def y(self, y: F64) -> F64:
        return _asinh(y, np.asarray(self.y_med), np.asarray(self.y_mad))

    def y_inv(self, z: F64) -> F64:
        return _sinh(z, np.asarray(self.y_med), np.asarray(self.y_mad))


@dataclass
class _Window:
    """One calibration window's state: transform, α per slot, warm-started fits."""

    days: int
    transform: _Transform | None = None
    alpha: F64 | None = None
    coef: F64 | None = None
    x_mean: F64 | None = None
    y_mean: F64 | None = None
    chosen_at: int | None = None  # day ordinal of the last α choice
    fitted_at: int | None = None


class LearForecaster:
    """Walk-forward LEAR (see the module docstring). One instance per price series: it
    keeps its fits and its past forecasts between decisions."""

    name = "lear"

    def __init__(
        self,
        market: MarketDefinition,
        *,
        features: Sequence[str] = (),
        windows_days: Sequence[int] = (364, 1456),
        recalibrate_days: int = 1,
        realpha_days: int = 28,
        residual_days: int = 112,
        levels: Sequence[float] | F64 | None = None,
    ) -> None:
        self.market = market
        self.features = tuple(features)
        self.windows = [_Window(int(w)) for w in windows_days]
        self.recalibrate_days = recalibrate_days
        self.realpha_days = realpha_days
        self.residual_days = residual_days
        self.levels = None if levels is None else np.asarray(levels, dtype=np.float64)
        self._grid: tuple[tuple[int, int, int], DayGrid] | None = None  # (start, step, n)
        self._preds: dict[int, F64] = {}  # day ordinal (of the grid) -> forecast by slot
        self._first: pd.Timestamp | None = None
        self.fits = 0

    @property
    def lookback_days(self) -> int:
        """Days of history before a decision the forecast reads (the longest window, the
        residual backcast and the lags)."""
        return max(w.days for w in self.windows) + self.residual_days + 14

    # -- the day matrices ------------------------------------------------------------------

    def _grid_for(self, index: pd.DatetimeIndex) -> DayGrid:
        """The day grid of ``index``: built once for the series' start and step and a
        year beyond what is asked, then sliced (decisions ask for one more day each)."""
        key = (int(index[0].value), int(index[1].value - index[0].value))
        cached = self._grid
        if cached is None or cached[0][:2] != key or cached[0][2] < len(index):
            step = index[1] - index[0]
            longer = pd.date_range(
                index[0], periods=len(index) + int(pd.Timedelta(days=366) / step), freq=step
            )
            cached = self._grid = ((*key, len(longer)), day_grid(longer, self.market))
        g = cached[1]
        n = len(index)
        return DayGrid(g.first_day, g.day[:n], g.slot[:n], g.per_day)

    def _matrices(
        self, known: PriceSeries, feats: FeatureSet | None, starts: pd.DatetimeIndex
    ) -> tuple[DayGrid, DayGrid, F64, list[F64], int]:
        step = known.interval
        first = known.starts[0]
        if self._first is not None and first != self._first:
            self._preds.clear()  # another series: forget the residual history
        self._first = first
        end = max(starts[-1], known.starts[-1])
        index = pd.date_range(first, end, freq=step)
        grid = self._grid_for(index)
        if grid.per_day > MAX_SLOTS:
            raise ForecastError(
                f"lear forecasts day-ahead products (at most {MAX_SLOTS} intervals a day), "
                f"not {grid.per_day}"
            )
        values = np.full(len(index), np.nan)
        values[: len(known)] = known.values
        prices = to_days(values, grid)
        exog: list[F64] = []
        fills = 0
        if self.features:
            if feats is None:
                raise ForecastError(
                    f"lear needs the features {', '.join(self.features)}; none are given"
                )
            raw = feats.select(self.features).on(index)
            target = index.get_indexer(starts)
            before = np.isnan(raw[:, target]).sum()
            filled, _ = fill_gaps(raw, grid.per_day)
            fills = int(before)
            exog = [to_days(filled[k], grid) for k in range(len(self.features))]
        target_grid = DayGrid(
            grid.first_day,
            grid.day[index.get_indexer(starts)],
            grid.slot[index.get_indexer(starts)],
            grid.per_day,
        )
        return grid, target_grid, prices, exog, fills

    def _x(self, prices: F64, exog: list[F64], days: np.ndarray, grid: DayGrid) -> F64:
        """Feature rows of the given day ordinals (every lag day must be filled)."""
        d = np.asarray(days, dtype=np.int64)
        cols = [prices[d - lag] for lag in PRICE_LAGS]
        last = prices[d - 1]
        cols += [last.min(axis=1, keepdims=True), last.max(axis=1, keepdims=True)]
        cols.append(last.mean(axis=1, keepdims=True))
        for m in exog:
            cols += [m[d], m[d - 1]]
        names = self.features
        if {"load", "wind", "solar"} <= set(names):
            rl = exog[names.index("load")] - exog[names.index("wind")] - exog[names.index("solar")]
            cols.append(rl[d])
        weekday = np.array([grid.date_of(int(k)).weekday() for k in d])
        cols.append(np.eye(7)[weekday])
        return np.hstack(cols)

    # -- fitting ---------------------------------------------------------------------------

    def _complete(self, prices: F64, exog: list[F64], lo: int, hi: int) -> np.ndarray:
        """Days in ``[lo, hi)`` usable as training rows: the day and its lags known."""
        days = np.arange(max(lo, max(PRICE_LAGS)), hi)
        if days.size == 0:
            return days
        ok = ~np.isnan(prices[days]).any(axis=1)
        for lag in PRICE_LAGS:
            ok &= ~np.isnan(prices[days - lag]).any(axis=1)
        for m in exog:
            ok &= ~np.isnan(m[days]).any(axis=1) & ~np.isnan(m[days - 1]).any(axis=1)
        out: np.ndarray = days[ok]
        return out

    def _fit(
        self, w: _Window, prices: F64, exog: list[F64], grid: DayGrid, day0: int, warm: bool
    ) -> bool:
        """(Re)fit window ``w`` on the days before ``day0``; False without enough days."""
        from sklearn.exceptions import ConvergenceWarning

        days = self._complete(prices, exog, day0 - w.days, day0)
        if days.size < max(28, HOLDOUT_DAYS + 14):
            return False
        x = self._x(prices, exog, days, grid)
        y = prices[days]
        choose = (
            w.alpha is None
            or w.chosen_at is None
            or day0 - w.chosen_at >= self.realpha_days
            or not warm
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if choose:
                fitted = w.transform = _Transform.fit(x, y)
                xt, yt = fitted.x(x[:-HOLDOUT_DAYS]), fitted.y(y[:-HOLDOUT_DAYS])
                xm, ym = xt.mean(axis=0), yt.mean(axis=0)
                xv = fitted.x(x[-HOLDOUT_DAYS:]) - xm
                xc = np.asfortranarray(xt - xm)
                gram = xc.T @ xc
                yc = yt - ym
                c = np.zeros((grid.per_day, x.shape[1]))
                errs = []
                for a in sorted(ALPHAS, reverse=True):  # each α warm from the last
                    c = _lasso(xc, gram, yc, np.full(grid.per_day, a), c)
                    guess = fitted.y_inv(xv @ c.T + ym)
                    errs.append(np.abs(guess - y[-HOLDOUT_DAYS:]).mean(axis=0))
                best = np.array(errs)[::-1].argmin(axis=0)  # ascending α order again
                w.alpha = np.asarray(ALPHAS, dtype=np.float64)[best]
                w.chosen_at = day0
            t = w.transform
            assert t is not None and w.alpha is not None
            xt, yt = t.x(x), t.y(y)
            xm, ym = xt.mean(axis=0), yt.mean(axis=0)
            xc = np.asfortranarray(xt - xm)
            start = w.coef if w.coef is not None and warm else np.zeros((grid.per_day, x.shape[1]))
            coef = _lasso(xc, xc.T @ xc, yt - ym, w.alpha, start)
        w.coef, w.x_mean, w.y_mean, w.fitted_at = coef, xm, ym, day0
        self.fits += 1
        return True

    def _predict_days(
        self, prices: F64, exog: list[F64], grid: DayGrid, days: Sequence[int]
    ) -> F64:
        """Forecast of each day (in order; an unknown lag day takes its own forecast)."""
        work = prices.copy()
        out = np.empty((len(days), grid.per_day))
        for j, d in enumerate(days):
            for lag in PRICE_LAGS:
                row = work[d - lag]
                if np.isnan(row).any():
                    newest = self._newest_known(work, d - lag)
                    work[d - lag] = np.where(np.isnan(row), newest, row)
            x = self._x(work, exog, np.array([d]), grid)
            guesses = []
            for w in self.windows:
                if w.coef is None or w.transform is None:
                    continue
                assert w.x_mean is not None and w.y_mean is not None
                z = (w.transform.x(x) - w.x_mean) @ w.coef.T + w.y_mean
                guesses.append(w.transform.y_inv(z)[0])
            out[j] = np.mean(guesses, axis=0)
            work[d] = out[j]
        return out

    @staticmethod
    def _newest_known(prices: F64, before: int) -> F64:
        for d in range(before - 1, -1, -1):
            if not np.isnan(prices[d]).any():
                out: F64 = prices[d]
                return out
        raise ForecastError("lear: no complete day of prices is known")

    def _calibrate(self, prices: F64, exog: list[F64], grid: DayGrid, day0: int) -> None:
        ready = False
        for w in self.windows:
            stale = w.fitted_at is None or day0 - w.fitted_at >= self.recalibrate_days
            if stale:
                ready |= self._fit(w, prices, exog, grid, day0, warm=w.fitted_at is not None)
            else:
                ready |= w.coef is not None
        if not ready:
            raise ForecastError(
                f"lear: too little history before {grid.date_of(day0)} to train on "
                f"(needs {HOLDOUT_DAYS + 14} complete days)"
            )

    def _backcast(self, prices: F64, exog: list[F64], grid: DayGrid, day0: int) -> None:
        """Out-of-sample forecasts of the ``residual_days`` before ``day0`` that have none,
        each fitted on the days before it (refitted weekly), so quantiles exist from the
        first decision. Fits on copies: the live windows keep their own warm state."""
        want = [
            d
            for d in range(day0 - self.residual_days, day0)
            if d >= max(PRICE_LAGS) and d not in self._preds and not np.isnan(prices[d]).any()
        ]
        if not want:
            return
        live = self.windows
        self.windows = [_Window(w.days) for w in live]
        try:
            for d in want:
                if self.windows[0].fitted_at is None or d - self.windows[0].fitted_at >= 7:
                    fitted = [self._fit(w, prices, exog, grid, d, warm=False) for w in self.windows]
                    if not any(fitted):
                        continue
                if all(w.coef is None for w in self.windows):
                    continue
                self._preds[d] = self._predict_days(prices, exog, grid, [d])[0]
        finally:
            self.windows = live

    # -- the answer ------------------------------------------------------------------------

    def forecast(
        self,
        known: PriceSeries,
        feats: FeatureSet | None,
        starts: pd.DatetimeIndex,
    ) -> Forecast:
        """The forecast of ``starts`` from the prices ``known`` (all published before the
        decision) and the features published by then (``feats``, already cut)."""
        if len(known) < 2:
            raise ForecastError("lear: no price history")
        import sklearn.linear_model  # noqa: F401  (loads its BLAS and OpenMP before the limit)

        with one_thread():  # the same bits live, in a backtest and in a worker
            return self._forecast(known, feats, starts)

    def _forecast(
        self,
        known: PriceSeries,
        feats: FeatureSet | None,
        starts: pd.DatetimeIndex,
    ) -> Forecast:
        grid, target, prices, exog, fills = self._matrices(known, feats, starts)
        days = sorted(set(target.day.tolist()))
        day0 = days[0]
        self._calibrate(prices, exog, grid, day0)
        by_day = self._predict_days(prices, exog, grid, days)
        for j, d in enumerate(days):
            self._preds[d] = by_day[j]
        matrix = np.full((int(target.day.max()) + 1, grid.per_day), np.nan)
        for j, d in enumerate(days):
            matrix[d] = by_day[j]
        point = from_days(matrix, target)
        note = (
            f"lear: {fills} feature values not published by the decision were filled"
            if fills
            else None
        )
        if self.levels is None:
            return Forecast(point, note=note, feature_fills=fills)
        self._backcast(prices, exog, grid, day0)
        residuals = self._residuals(prices, day0)
        if residuals is None:
            return Forecast(point, note=note, feature_fills=fills)
        q = residual_quantiles(residuals, self.levels)  # (L, per_day)
        quantiles = point[None, :] + q[:, target.slot]
        return Forecast(point, self.levels, quantiles, note, fills)

    def _residuals(self, prices: F64, day0: int) -> F64 | None:
        rows = [
            prices[d] - p
            for d, p in sorted(self._preds.items())
            if day0 - self.residual_days <= d < day0 and not np.isnan(prices[d]).any()
        ]
        if len(rows) < 14:
            return None
        return np.vstack(rows)


def _lasso(xc: F64, gram: F64, y: F64, alpha: F64, start: F64) -> F64:
    """LASSO per column of ``y`` (``(1/2n)‖y_s − X b_s‖² + α_s‖b_s‖₁``, no intercept: ``X``
    and ``y`` are centred), warm from ``start`` (slots × features), by coordinate descent on
    the one Gram matrix ``XᵀX`` all columns share (scikit-learn's ``enet_path``, inputs
    checked once here instead of once per column)."""
    from sklearn import config_context
    from sklearn.linear_model import enet_path

    xy = xc.T @ y
    out = np.empty((y.shape[1], xc.shape[1]))
    with config_context(skip_parameter_validation=True):
        for j in range(y.shape[1]):
            _, coefs, _ = enet_path(
                xc,
                np.ascontiguousarray(y[:, j]),
                l1_ratio=1.0,
                alphas=[float(alpha[j])],
                precompute=gram,
                Xy=np.ascontiguousarray(xy[:, j]),
                coef_init=np.ascontiguousarray(start[j]),
                check_input=False,
                tol=1e-3,
                max_iter=1000,
            )
            out[j] = coefs[:, 0]
    return out


def residual_quantiles(residuals: F64, levels: F64, pool: int = 1) -> F64:
    """``(L, slots)``: per slot, the quantiles of the residuals of that slot and its
    ``pool`` neighbours on each side, centred on their median (the point forecast stays
    the distribution's median)."""
    per_day = residuals.shape[1]
    out = np.empty((levels.size, per_day))
    for s in range(per_day):
        lo, hi = max(0, s - pool), min(per_day, s + pool + 1)
        sample = residuals[:, lo:hi].ravel()
        sample = sample - np.median(sample)
        out[:, s] = np.quantile(sample, levels)
    return out
