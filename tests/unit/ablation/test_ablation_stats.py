"""Interval and paired-difference arithmetic against values worked out by hand."""
import math

import pytest

from ppufo.ablation import stats


def test_t_interval_of_one_to_five():
    s = stats.summarize([1, 2, 3, 4, 5])
    # mean 3; s = sqrt(10 / 4) = 1.5811; t(0.975, 4) = 2.7764; half-width 2.7764 * 1.5811 / sqrt(5)
    assert s["n"] == 5 and s["mean"] == pytest.approx(3.0)
    assert s["std"] == pytest.approx(1.5811, abs=1e-4)
    assert stats.t_quantile(5) == pytest.approx(2.7764, abs=1e-4)
    assert s["half_width"] == pytest.approx(1.9632, abs=1e-4)
    assert (s["low"], s["high"]) == (pytest.approx(3 - 1.9632, abs=1e-4), pytest.approx(3 + 1.9632, abs=1e-4))


def test_two_samples_use_t_with_one_degree_of_freedom():
    s = stats.summarize([1.0, 3.0])  # s = sqrt(2); t(0.975, 1) = 12.7062; half = 12.7062 * sqrt(2) / sqrt(2)
    assert s["std"] == pytest.approx(math.sqrt(2))
    assert s["half_width"] == pytest.approx(12.7062, abs=1e-4)


def test_one_sample_has_a_mean_and_no_interval():
    s = stats.summarize([0.7])
    assert s == {"n": 1, "mean": 0.7, "std": None, "half_width": None, "low": None, "high": None}
    assert stats.summarize([])["mean"] is None
    with pytest.raises(ValueError):
        stats.t_quantile(1)


def test_paired_differences_use_only_common_seeds():
    a = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.9}
    b = {2: 0.5, 0: 0.4, 1: 0.45, 7: 0.1}
    d = stats.paired(a, b, "greater")
    assert d["seeds"] == [0, 1, 2]
    assert d["diffs"] == pytest.approx([0.1, 0.15, 0.2])
    # mean 0.15, s = 0.05, t(0.975, 2) = 4.3027: half-width 4.3027 * 0.05 / sqrt(3) = 0.12421
    assert d["mean"] == pytest.approx(0.15) and d["std"] == pytest.approx(0.05)
    assert d["half_width"] == pytest.approx(0.12421, abs=1e-5)
    assert d["low"] == pytest.approx(0.02579, abs=1e-5) and d["high"] == pytest.approx(0.27421, abs=1e-5)
    assert d["verdict"] == "reproduced"
    assert stats.paired(a, b, "less")["verdict"] == "opposite"
    assert stats.paired(b, a, "less")["verdict"] == "reproduced"


def test_a_wide_interval_is_not_resolved_and_one_common_seed_gives_no_verdict():
    d = stats.paired({0: 0.5, 1: 0.4}, {0: 0.45, 1: 0.42}, "greater")  # diffs +0.05, -0.02
    assert d["low"] < 0 < d["high"] and d["verdict"] == "not resolved"
    one = stats.paired({0: 0.9, 1: 0.8}, {0: 0.1}, "greater")  # a huge difference, but one seed
    assert one["n"] == 1 and one["mean"] == pytest.approx(0.8) and one["low"] is None
    assert one["verdict"] == "not resolved"
    none = stats.paired({0: 0.9}, {1: 0.1}, "less")
    assert none["n"] == 0 and none["mean"] is None and none["verdict"] == "not resolved"


@pytest.mark.parametrize("low, high, direction, want", [
    (0.01, 0.2, "greater", "reproduced"), (0.01, 0.2, "less", "opposite"),
    (-0.2, -0.01, "less", "reproduced"), (-0.2, -0.01, "greater", "opposite"),
    (-0.1, 0.2, "greater", "not resolved"), (-0.1, 0.2, "less", "not resolved"),
    (0.0, 0.2, "greater", "not resolved"),  # touching zero does not exclude it
    (None, None, "greater", "not resolved")])
def test_verdicts(low, high, direction, want):
    assert stats.verdict(low, high, direction) == want


def test_an_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="bigger"):
        stats.verdict(0.1, 0.2, "bigger")


@pytest.mark.parametrize("low, high, want", [
    (-0.009, 0.02, "reproduced"),     # the whole interval above -margin, though it holds zero
    (0.01, 0.03, "reproduced"),
    (-0.011, 0.02, "not resolved"),   # reaches below -margin
    (-0.01, 0.02, "not resolved"),    # touching -margin does not exclude it
    (-0.05, -0.0101, "opposite"),     # worse by more than the margin throughout
    (-0.05, -0.009, "not resolved")])
def test_no_worse_is_judged_against_minus_the_margin(low, high, want):
    assert stats.verdict(low, high, "no_worse", margin=0.01) == want


def test_no_worse_over_paired_seeds_and_a_negative_margin_is_refused():
    a = {0: 0.60, 1: 0.62, 2: 0.61}
    b = {0: 0.605, 1: 0.615, 2: 0.62}  # diffs -0.005, +0.005, -0.01: mean -0.00333, s 0.007638
    d = stats.paired(a, b, "no_worse", margin=0.03)  # t(0.975, 2) 4.3027: half-width 0.018974
    assert d["low"] == pytest.approx(-0.022307, abs=1e-5) and d["verdict"] == "reproduced"
    assert stats.paired(a, b, "no_worse", margin=0.02)["verdict"] == "not resolved"
    assert stats.paired(a, b, "no_worse")["verdict"] == "not resolved"  # margin 0: a >= b, unresolved
    with pytest.raises(ValueError, match="margin -0.01"):
        stats.verdict(0.1, 0.2, "no_worse", margin=-0.01)
