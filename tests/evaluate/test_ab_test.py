"""A/B statistics against hand computations, SciPy, integration and seeded simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from loopline.errors import EvaluationError
from loopline.evaluate.ab_test import (
    minimum_detectable_effect,
    prob_to_beat,
    sample_size,
    z_test,
)


def test_z_test_by_hand() -> None:
    # 200 / 2000 vs 250 / 2000: pooled 0.1125, se0 = sqrt(.1125 * .8875 * (2 / 2000))
    r = z_test(200, 2000, 250, 2000)
    se0 = math.sqrt(0.1125 * 0.8875 * 2 / 2000)
    assert r.z == pytest.approx(0.025 / se0, rel=1e-12)
    assert r.z == pytest.approx(2.50195, abs=1e-5)
    assert r.p_value == pytest.approx(2 * (1 - stats.norm.cdf(0.025 / se0)), rel=1e-9)
    se1 = math.sqrt(0.1 * 0.9 / 2000 + 0.125 * 0.875 / 2000)
    assert r.ci_low == pytest.approx(0.025 - 1.959963985 * se1, rel=1e-8)
    assert r.ci_high == pytest.approx(0.025 + 1.959963985 * se1, rel=1e-8)
    assert (r.rate_a, r.rate_b, r.lift) == (0.1, 0.125, pytest.approx(0.25))


@pytest.mark.parametrize(
    ("a", "n_a", "b", "n_b"), [(30, 400, 45, 410), (7, 50, 3, 80), (500, 10_000, 480, 9_000)]
)
def test_z_test_p_value_equals_the_uncorrected_chi_square_test(
    a: int, n_a: int, b: int, n_b: int
) -> None:
    chi2, p, _, _ = stats.chi2_contingency([[a, n_a - a], [b, n_b - b]], correction=False)
    r = z_test(a, n_a, b, n_b)
    assert r.z**2 == pytest.approx(chi2, rel=1e-9)
    assert r.p_value == pytest.approx(p, rel=1e-9)


def test_z_test_edge_cases() -> None:
    assert z_test(0, 10, 0, 10).p_value == 1.0
    assert z_test(10, 10, 10, 10).z == 0.0
    assert z_test(0, 10, 5, 10).lift is None  # no lift over a zero rate
    narrow, wide = z_test(10, 100, 20, 100, alpha=0.2), z_test(10, 100, 20, 100, alpha=0.01)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high
    with pytest.raises(EvaluationError, match="needs units in both"):
        z_test(0, 0, 1, 10)
    with pytest.raises(EvaluationError, match="11 conversion"):
        z_test(11, 10, 1, 10)
    with pytest.raises(EvaluationError, match="alpha"):
        z_test(1, 10, 1, 10, alpha=1.5)


@pytest.mark.parametrize(
    ("a", "n_a", "b", "n_b"), [(3, 22, 5, 20), (20, 200, 25, 190), (0, 5, 1, 5)]
)
def test_prob_to_beat_equals_numerical_integration(a: int, n_a: int, b: int, n_b: int) -> None:
    pa, pb = stats.beta(1 + a, 1 + n_a - a), stats.beta(1 + b, 1 + n_b - b)
    # P(B > A) = integral of f_B(x) F_A(x) dx over [0, 1]
    expected, _ = integrate.quad(lambda x: pb.pdf(x) * pa.cdf(x), 0, 1, epsabs=1e-12)
    assert prob_to_beat(a, n_a, b, n_b) == pytest.approx(expected, abs=1e-9)


def test_prob_to_beat_agrees_with_a_seeded_simulation() -> None:
    rng = np.random.default_rng(7)
    draws = 2_000_000
    a = rng.beta(1 + 200, 1 + 1800, draws)
    b = rng.beta(1 + 250, 1 + 1750, draws)
    simulated = float((b > a).mean())
    assert prob_to_beat(200, 2000, 250, 2000) == pytest.approx(simulated, abs=2e-3)


def test_prob_to_beat_is_symmetric_and_handles_large_counts() -> None:
    assert prob_to_beat(12, 100, 15, 100) + prob_to_beat(15, 100, 12, 100) == pytest.approx(1.0)
    assert prob_to_beat(0, 0, 0, 0) == pytest.approx(0.5)
    # a million units per arm: the normal approximation is accurate there
    p = prob_to_beat(50_000, 1_000_000, 50_400, 1_000_000)
    se = math.sqrt(2 * 0.0502 * 0.9498 / 1_000_000)
    assert p == pytest.approx(stats.norm.cdf(0.0004 / se), abs=2e-3)
    assert 0.0 <= prob_to_beat(0, 1_000, 1_000, 1_000) <= 1.0


def test_sample_size_known_value() -> None:
    # 10% baseline, +10% relative (to 11%), alpha 0.05 two-sided, power 0.8: 14,751 per variant
    # (the figure of Evan Miller's sample-size calculator for these inputs)
    assert sample_size(0.10, 0.10) == 14_751
    assert sample_size(0.10, 0.01, relative=False) == 14_751


def analytic_power(p1: float, p2: float, n: int, alpha: float = 0.05) -> float:
    """Power of the pooled two-sided z-test with n units per variant, by hand."""
    z = stats.norm.ppf(1 - alpha / 2)
    mean = (p1 + p2) / 2
    se0 = math.sqrt(2 * mean * (1 - mean) / n)
    se1 = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
    d = abs(p2 - p1)
    return float(stats.norm.cdf((d - z * se0) / se1) + stats.norm.cdf((-d - z * se0) / se1))


@pytest.mark.parametrize(
    ("baseline", "lift", "power"), [(0.5, 0.2, 0.8), (0.05, 0.3, 0.9), (0.2, 0.1, 0.8)]
)
def test_sample_size_is_the_smallest_n_with_the_power(
    baseline: float, lift: float, power: float
) -> None:
    n = sample_size(baseline, lift, power=power)
    target = baseline * (1 + lift)
    assert analytic_power(baseline, target, n) >= power - 1e-4
    assert analytic_power(baseline, target, n - 1) < power + 1e-4


def test_the_sample_size_gives_the_power_in_simulated_experiments() -> None:
    n = sample_size(0.5, 0.1, relative=False)  # 50% vs 60%
    assert n == 388
    rng = np.random.default_rng(3)
    a = rng.binomial(n, 0.5, 4000)
    b = rng.binomial(n, 0.6, 4000)
    rejected = np.mean(
        [z_test(int(x), n, int(y), n).p_value < 0.05 for x, y in zip(a, b, strict=True)]
    )
    assert rejected == pytest.approx(0.8, abs=0.03)


def test_minimum_detectable_effect_inverts_the_sample_size() -> None:
    for baseline, lift in [(0.1, 0.1), (0.3, 0.05), (0.02, 0.5)]:
        n = sample_size(baseline, lift)
        mde = minimum_detectable_effect(baseline, n)
        assert lift - 1e-3 <= mde <= lift + 1e-12
        assert sample_size(baseline, mde) == n
    absolute = minimum_detectable_effect(0.5, 388, relative=False)
    assert absolute == pytest.approx(0.1, abs=5e-4)
    assert minimum_detectable_effect(0.1, 100) > minimum_detectable_effect(0.1, 10_000)
    assert minimum_detectable_effect(0.5, 1) == pytest.approx(1.0)  # cannot detect anything less


def test_sample_size_rejects_impossible_inputs() -> None:
    with pytest.raises(EvaluationError, match="positive"):
        sample_size(0.1, -0.1)
    with pytest.raises(EvaluationError, match="positive"):
        sample_size(0.6, 1.0)  # 120%
    with pytest.raises(EvaluationError, match="baseline"):
        sample_size(0.0, 0.1)
    with pytest.raises(EvaluationError, match="alpha"):
        sample_size(0.1, 0.1, power=1.0)
    with pytest.raises(EvaluationError, match="needs units"):
        minimum_detectable_effect(0.1, 0)
