"""lamo_ray/intervals.py: the intervals are the textbook ones, and the sentences say what the CI says."""

import numpy as np
import pytest
from scipy import stats

from lamo_ray.intervals import compare, difference_ci, mean_ci


def test_mean_ci_is_the_student_t_interval():
    x = np.array([3.0, 7.0, 8.0, 12.0])
    mean, (low, high) = mean_ci(x)
    ref = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(7.5) and (low, high) == pytest.approx(ref)
    assert mean_ci([4.0]) == (4.0, None)
    assert mean_ci([np.nan, 2.0, 4.0])[0] == 3.0
    with pytest.raises(ValueError):
        mean_ci([np.nan])


def test_difference_ci_is_welchs_interval():
    rng = np.random.default_rng(0)
    x, y = rng.normal(10, 3, 5), rng.normal(4, 1, 3)
    diff, ci = difference_ci(x, y)
    ref = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(x.mean() - y.mean())
    assert ci == pytest.approx((ref.low, ref.high))
    assert difference_ci([1.0], [0.0, 2.0]) == (0.0, None)
    assert difference_ci([2.0, 2.0], [1.0, 1.0]) == (1.0, (1.0, 1.0))


def test_comparison_sentences_follow_the_interval():
    same = compare("lamo", "dt", [40, 60, 50], [45, 55, 70])
    assert same.verdict == "not distinguishable"
    assert same.sentence().startswith("lamo and dt are not distinguishable here: difference -6.7, 95% CI [")
    assert "(3 vs 3 seeds)" in same.sentence()
    better = compare("lamo", "dt", [80, 82, 81], [40, 42, 41])
    assert better.verdict == "higher" and better.sentence().startswith("lamo scores higher than dt here: difference +40.0")
    assert compare("lamo", "dt", [10, 12, 11], [40, 42, 41]).verdict == "lower"
    single = compare("lamo", "dt", [80.0], [40.0])
    assert single.verdict == "no CI" and "no conclusion" in single.sentence()
    # every seed of both arms the same: the interval is a point, which is no evidence of a difference
    flat = compare("l2p", "ft", [0.0, 0.0, 0.0], [40.0, 40.0, 100 * np.mean([0.4, 0.4, 0.4])])
    assert 100 * np.mean([0.4, 0.4, 0.4]) != 40.0      # 40.00000000000001: the same value to the report
    assert flat.ci == (-40.0, -40.0) and flat.verdict == "no spread"
    assert flat.sentence() == ("l2p vs ft: difference -40.0 (3 vs 3 seeds), but every one of them gave the same value, "
                               "so there is no spread to build a confidence interval on: no conclusion.")
    episodes = compare("lamo", "dt", [1, 2, 3, 4], [0, 1, 0, 1], unit="episodes")
    assert "evaluation noise only" in episodes.sentence()


def test_a_bounded_metric_gets_its_interval_within_its_range():
    """Issue 31: a success rate's Student-t interval over 2 seeds (80, 0) is [-468, 548]; intersected with
    [0, 100] it is the whole range, which `spans_range` reports (the report then says "too few seeds");
    a difference of two success rates lives in [-100, 100]. Intersecting never moves the mean, and a
    narrow interval is left as it is."""
    from lamo_ray.intervals import SUCCESS_RANGE, difference_range, spans_range, within

    mean, raw = mean_ci([80.0, 0.0])
    assert mean == 40.0 and raw[0] < -400 and raw[1] > 500
    assert mean_ci([80.0, 0.0], SUCCESS_RANGE) == (40.0, (0.0, 100.0))
    assert spans_range((0.0, 100.0), SUCCESS_RANGE) and not spans_range((0.0, 99.0), SUCCESS_RANGE)
    assert not spans_range((-5.0, 5.0), None) and not spans_range((0.0, 100.0), (0.0, float("inf")))
    narrow = mean_ci([50.0, 52.0, 54.0])
    assert mean_ci([50.0, 52.0, 54.0], SUCCESS_RANGE) == narrow
    assert mean_ci([98.0, 100.0, 100.0], SUCCESS_RANGE)[1][1] == 100.0 < mean_ci([98.0, 100.0, 100.0])[1][1]
    assert difference_range(SUCCESS_RANGE) == (-100.0, 100.0)
    diff, ci = difference_ci([100.0, 0.0], [0.0, 100.0], SUCCESS_RANGE)
    assert diff == 0.0 and ci == (-100.0, 100.0)
    assert within(None, SUCCESS_RANGE) is None and within((-3.0, 2.0), None) == (-3.0, 2.0)
