"""engine.averages.mean is statistics.mean, to the last bit, for the values overton averages."""

import math
import statistics

from hypothesis import given
from hypothesis import strategies as st

from engine.averages import mean

floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@given(st.lists(floats, min_size=1, max_size=60))
def test_floats_match_statistics_mean(xs):
    assert mean(xs) == statistics.mean(xs)


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=60))
def test_unit_interval_floats_match(xs):
    got = mean(xs)
    assert got == statistics.mean(xs) and type(got) is float


@given(st.lists(st.integers(min_value=-10**6, max_value=10**6), min_size=1, max_size=60))
def test_ints_match_value_and_type(xs):
    got, want = mean(xs), statistics.mean(xs)
    assert got == want and type(got) is type(want)


@given(st.lists(st.one_of(floats, st.integers(min_value=-1000, max_value=1000)), min_size=1, max_size=30))
def test_mixed_ints_and_floats(xs):
    got, want = mean(xs), statistics.mean(xs)
    assert got == want and type(got) is type(want)


def test_non_finite_and_empty():
    assert math.isnan(mean([1.0, math.nan])) and math.isnan(statistics.mean([1.0, math.nan]))
    assert mean([1.0, math.inf]) == statistics.mean([1.0, math.inf]) == math.inf
    assert math.isnan(mean([math.inf, -math.inf]))
    try:
        mean([])
    except ValueError:
        pass
    else:
        raise AssertionError("empty input must raise")
