import math

import pytest

from vla_kd.stats import wilson_interval


@pytest.mark.parametrize(
    "successes,trials,expected",
    [
        # Reference values as given by statsmodels proportion_confint(k, n, method="wilson").
        (0, 10, (0.0, 0.27753)),
        (5, 10, (0.23659, 0.76341)),
        (10, 10, (0.72247, 1.0)),
        (45, 50, (0.78640, 0.95652)),
        (1, 100, (0.00177, 0.05449)),
    ],
)
def test_wilson_matches_reference(successes, trials, expected):
    low, high = wilson_interval(successes, trials)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


def test_wilson_against_direct_formula():
    z, n, k = 1.959963984540054, 37, 12
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half))


def test_wilson_contains_rate_and_narrows_with_more_trials():
    wide = wilson_interval(7, 10)
    narrow = wilson_interval(70, 100)
    assert wide[0] < 0.7 < wide[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    assert wilson_interval(0, 0) == (0.0, 1.0)
