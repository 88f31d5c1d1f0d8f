"""Bootstrap intervals over cases for the evaluation's rates and their Score.

A table of per-case rates (one row per case, one column per rate, NaN where a rate is undefined for
a case) is summarized as the evaluation summarizes it: each column's mean over the cases where it
is defined, and the Score, the harmonic mean of the four COUNTERFACT_RS means. The intervals
resample cases with replacement, so that rates measured on the same case move together; a paired
interval resamples the same cases for two methods, the way to tell whether a difference is real.
:func:`bootstrap_mean` does the same for the plain mean of one column of values (not rates), with
the same resamples; :class:`Bounds` holds one column's interval for a result's dataclass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

#: bootstrap draws and the seed of their generator, unless given
DRAWS = 2000
SEED = 0


def table_values(rates: Float[np.ndarray, "cases columns"], score_columns: int = 4) -> Float[np.ndarray, " out"]:
    """Per-column means over the cases where a column is defined (in %), then the Score: the
    harmonic mean of the first ``score_columns`` means (0 if one is 0, NaN if one is undefined)."""
    means = _nanmean(rates[None])[0]
    return np.append(means, _harmonic(means[None, :score_columns])[0]) * 100


@dataclass(frozen=True, eq=False)
class Interval:
    """A statistic per column (the table's values, or a difference of two tables) and the bounds
    of its percentile bootstrap interval over cases."""

    value: Float[np.ndarray, " out"]
    low: Float[np.ndarray, " out"]
    high: Float[np.ndarray, " out"]
    n: int
    level: float
    draws: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interval):
            return NotImplemented
        same = all(np.array_equal(a, b, equal_nan=True) for a, b in
                   ((self.value, other.value), (self.low, other.low), (self.high, other.high)))
        return same and (self.n, self.level, self.draws) == (other.n, other.level, other.draws)

    __hash__ = None  # arrays inside: not hashable

    def excludes_zero(self) -> np.ndarray:
        """Per column: whether the interval lies wholly above or wholly below zero."""
        return (self.low > 0) | (self.high < 0)


def bootstrap(rates: Float[np.ndarray, "cases columns"], *, draws: int = DRAWS, seed: int = SEED,
              level: float = 0.95, score_columns: int = 4) -> Interval:
    """The table's values (:func:`table_values`) and their bootstrap interval over cases."""
    picks = _picks(len(rates), draws, seed)
    return _interval(table_values(rates, score_columns), _draws(rates[picks], score_columns), len(rates), level)


def paired_bootstrap(base: Float[np.ndarray, "cases columns"], other: Float[np.ndarray, "cases columns"], *,
                     draws: int = DRAWS, seed: int = SEED, level: float = 0.95, score_columns: int = 4) -> Interval:
    """``other`` − ``base`` for every column and the Score, on the same cases (row i of each is the
    same case), with a bootstrap interval that resamples the cases of both together."""
    if base.shape != other.shape:
        raise ValueError(f"paired tables must have the same shape; got {base.shape} and {other.shape}")
    picks = _picks(len(base), draws, seed)
    value = table_values(other, score_columns) - table_values(base, score_columns)
    diffs = _draws(other[picks], score_columns) - _draws(base[picks], score_columns)
    return _interval(value, diffs, len(base), level)


def bootstrap_mean(values: Float[np.ndarray, " cases"], *, draws: int = DRAWS, seed: int = SEED,
                   level: float = 0.95) -> Interval:
    """The mean of ``values`` over the cases where it is defined (not in %), and its percentile
    bootstrap interval over cases (value, low and high each of length 1)."""
    table = np.asarray(values, dtype=float)[:, None]
    picks = _picks(len(table), draws, seed)
    return _interval(_nanmean(table[None])[0], _nanmean(table[picks]), len(table), level)


@dataclass(frozen=True)
class Bounds:
    """The low and high ends of one statistic's bootstrap interval."""

    low: float
    high: float

    def to_json(self) -> list[float]:
        return [self.low, self.high]

    @classmethod
    def columns(cls, interval: Interval) -> list["Bounds | None"]:
        """Each column's bounds (None where the column has no defined draw)."""
        return [None if np.isnan(lo) or np.isnan(hi) else cls(float(lo), float(hi))
                for lo, hi in zip(interval.low, interval.high)]


def _picks(n: int, draws: int, seed: int) -> np.ndarray:
    if n < 1:
        raise ValueError("a bootstrap needs at least one case")
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


def _draws(resampled: np.ndarray, score_columns: int) -> np.ndarray:
    """The table of each resample: [draws, columns + 1], in %."""
    means = _nanmean(resampled)
    return np.concatenate([means, _harmonic(means[:, :score_columns])[:, None]], axis=1) * 100


def _interval(value: np.ndarray, draws: np.ndarray, n: int, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no defined draw stays NaN
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return Interval(value, low, high, n, level, len(draws))


def _nanmean(resampled: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of the values that are not NaN; NaN where none is."""
    defined = ~np.isnan(resampled)
    count = defined.sum(axis=1)
    total = np.where(defined, resampled, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _harmonic(means: np.ndarray) -> np.ndarray:
    """Row-wise harmonic mean, as :func:`~toplens.analyses.evaluation.metrics.harmonic_mean`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = means.shape[1] / (1.0 / means).sum(axis=1)
    h = np.where((means <= 0).any(axis=1), 0.0, h)
    return np.where(np.isnan(means).any(axis=1), np.nan, h)
