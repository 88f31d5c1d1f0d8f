"""Bootstrap intervals over cases: the point values are the evaluation's own means and Score, the
intervals hold them, and a paired difference of a table with itself is exactly zero."""

import numpy as np
import pytest

from toplens.analyses.evaluation.intervals import Bounds, bootstrap, bootstrap_mean, paired_bootstrap, table_values
from toplens.analyses.evaluation.metrics import harmonic_mean

RNG = np.random.default_rng(0)
RATES = RNG.choice([0.0, 0.5, 1.0], size=(30, 5), p=[0.2, 0.3, 0.5])


def test_table_values_are_the_means_and_their_harmonic_mean():
    rates = RATES.copy()
    rates[:4, 1] = np.nan  # undefined for four cases: left out of that mean only
    values = table_values(rates)
    means = [np.mean(rates[~np.isnan(rates[:, j]), j]) for j in range(5)]
    assert values[:5] == pytest.approx(np.array(means) * 100)
    assert values[5] == pytest.approx(harmonic_mean(means[:4]) * 100)


def test_a_zero_rate_makes_the_score_zero_and_an_undefined_one_nan():
    zero = RATES.copy()
    zero[:, 2] = 0.0
    assert table_values(zero)[5] == 0.0
    missing = RATES.copy()
    missing[:, 3] = np.nan
    assert np.isnan(table_values(missing)[5])


def test_the_interval_holds_the_value_and_narrows_with_more_cases():
    small, large = bootstrap(RATES[:10]), bootstrap(np.tile(RATES, (10, 1)))
    for interval in (small, large):
        assert np.all(interval.low <= interval.value + 1e-9) and np.all(interval.value <= interval.high + 1e-9)
    assert np.all(large.high - large.low < small.high - small.low)
    assert large.n == 300 and large.draws == 2000 and large.level == 0.95


def test_a_constant_column_has_a_zero_width_interval():
    rates = RATES.copy()
    rates[:, 0] = 1.0
    interval = bootstrap(rates)
    assert interval.low[0] == interval.high[0] == 100.0


def test_paired_difference_of_a_table_with_itself_is_zero():
    diff = paired_bootstrap(RATES, RATES.copy())
    assert np.all(diff.value == 0) and np.all(diff.low == 0) and np.all(diff.high == 0)
    assert not diff.excludes_zero().any()


def test_a_uniform_improvement_excludes_zero():
    better = np.clip(RATES + 0.5, 0, 1)
    diff = paired_bootstrap(RATES, better)
    assert diff.excludes_zero()[:4].all()
    assert np.all(diff.value[:5] == pytest.approx(table_values(better)[:5] - table_values(RATES)[:5]))


def test_the_same_seed_gives_the_same_interval():
    a, b = bootstrap(RATES, seed=3), bootstrap(RATES, seed=3)
    assert np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high)


def test_unpaired_shapes_and_empty_tables_are_refused():
    with pytest.raises((ValueError, TypeError)):  # under pytest the shape annotations refuse it first
        paired_bootstrap(RATES, RATES[:5])
    with pytest.raises(ValueError, match="at least one case"):
        bootstrap(RATES[:0])


def test_intervals_compare_by_value():
    assert bootstrap(RATES) == bootstrap(RATES.copy()) and bootstrap(RATES) != bootstrap(RATES, seed=1)


def test_bootstrap_mean_is_numpys_mean_inside_its_interval():
    values = np.random.default_rng(1).normal(1.0, 2.0, size=37)
    interval = bootstrap_mean(values)
    assert interval.value.shape == interval.low.shape == interval.high.shape == (1,)
    assert interval.value[0] == pytest.approx(np.mean(values), abs=1e-12)
    assert interval.low[0] < interval.value[0] < interval.high[0]
    assert (interval.n, interval.draws, interval.level) == (37, 2000, 0.95)


def test_bootstrap_mean_resamples_as_the_table_bootstrap_does():
    column = RATES[:, 1]
    one, table = bootstrap_mean(column), bootstrap(column[:, None], score_columns=1)
    assert [one.low[0] * 100, one.high[0] * 100] == pytest.approx([table.low[0], table.high[0]])
    assert bootstrap_mean(column, seed=5) != one


def test_bootstrap_mean_of_a_constant_is_a_point_and_nan_is_left_out():
    constant = bootstrap_mean(np.full(9, 1.7))
    assert constant.value[0] == constant.low[0] == constant.high[0] == 1.7
    assert bootstrap_mean(np.array([1.0, np.nan, 3.0])).value[0] == 2.0
    with pytest.raises(ValueError, match="at least one case"):
        bootstrap_mean(np.zeros(0))


def test_bounds_per_column_are_none_where_no_draw_is_defined():
    rates = RATES.copy()
    rates[:, 3] = np.nan
    interval = bootstrap(rates)
    bounds = Bounds.columns(interval)
    assert len(bounds) == 6 and bounds[3] is None and bounds[5] is None  # no R-Specificity: no Score
    assert bounds[0] == Bounds(float(interval.low[0]), float(interval.high[0]))
    assert bounds[0].to_json() == [interval.low[0], interval.high[0]]
