"""Is variant B's conversion rate really different from A's? Statistics for A/B tests.

- :func:`z_test`: the two-proportion z-test (pooled standard error for the statistic,
  unpooled for the confidence interval of the difference), two-sided p-value;
- :func:`prob_to_beat`: the Bayesian probability that B's true rate exceeds A's, with
  Beta(1, 1) priors, in closed form (Miller 2015; a sum over the smaller count of
  conversions, in log space, so it is exact and deterministic);
- :func:`sample_size`: units per variant needed to detect a lift with given ``alpha`` and
  ``power`` (normal approximation, no continuity correction), and
  :func:`minimum_detectable_effect`, its inverse.

>>> r = z_test(200, 2000, 250, 2000)
>>> round(r.difference, 4), round(r.z, 3), round(r.p_value, 4)
(0.025, 2.502, 0.0124)
>>> round(prob_to_beat(200, 2000, 250, 2000), 4)
0.9938
>>> sample_size(0.10, 0.10)            # 10% baseline, +10% relative lift
14751
>>> round(minimum_detectable_effect(0.10, 14751), 4)
0.1
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from loopline.errors import EvaluationError


@dataclass(frozen=True)
class ZTestResult:
    """Variant B against control A: ``difference`` = rate_b - rate_a, ``lift`` = the
    difference relative to rate_a (``None`` when rate_a is 0), ``ci_low`` / ``ci_high`` the
    ``1 - alpha`` confidence interval of the difference."""

    rate_a: float
    rate_b: float
    difference: float
    lift: float | None
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float


def _check_counts(conversions: int, units: int, name: str) -> None:
    if units < 0 or conversions < 0 or conversions > units:
        raise EvaluationError(
            f"variant {name} has {conversions} conversion(s) out of {units} unit(s)",
            hint="conversions must lie between 0 and the number of units",
        )


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise EvaluationError(f"alpha must lie strictly between 0 and 1, got {alpha}")


def z_test(
    conversions_a: int, units_a: int, conversions_b: int, units_b: int, *, alpha: float = 0.05
) -> ZTestResult:
    """The two-proportion z-test of B against A (see the module docstring).

    With no variation at all (both rates 0 or both 1) ``z = 0`` and ``p = 1``; a variant
    without units is an :class:`~loopline.errors.EvaluationError`.

    >>> z_test(0, 100, 0, 100).p_value
    1.0
    """
    _check_counts(conversions_a, units_a, "A")
    _check_counts(conversions_b, units_b, "B")
    _check_alpha(alpha)
    if units_a == 0 or units_b == 0:
        raise EvaluationError(
            "a z-test needs units in both variants",
            units_a=units_a,
            units_b=units_b,
            hint="wait until both variants have been exposed",
        )
    rate_a, rate_b = conversions_a / units_a, conversions_b / units_b
    difference = rate_b - rate_a
    pooled = (conversions_a + conversions_b) / (units_a + units_b)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / units_a + 1 / units_b))
    if se_pooled == 0:
        z, p_value = 0.0, 1.0
    else:
        z = difference / se_pooled
        p_value = float(2 * stats.norm.sf(abs(z)))
    se = math.sqrt(rate_a * (1 - rate_a) / units_a + rate_b * (1 - rate_b) / units_b)
    half = float(stats.norm.ppf(1 - alpha / 2)) * se
    return ZTestResult(
        rate_a=rate_a,
        rate_b=rate_b,
        difference=difference,
        lift=difference / rate_a if rate_a > 0 else None,
        z=z,
        p_value=min(p_value, 1.0),
        ci_low=difference - half,
        ci_high=difference + half,
        alpha=alpha,
    )


def prob_to_beat(conversions_a: int, units_a: int, conversions_b: int, units_b: int) -> float:
    """P(rate_B > rate_A) with Beta(1, 1) priors on both rates, in closed form.

    With ``a ~ Beta(αa, βa)`` and ``b ~ Beta(αb, βb)`` (α = 1 + conversions,
    β = 1 + non-conversions)::

        P(b > a) = Σ_{i=0}^{αb-1} B(αa+i, βa+βb) / ((βb+i) B(1+i, βb) B(αa, βa))

    summed over the smaller of the two α (using P(b > a) = 1 - P(a > b)).

    >>> prob_to_beat(0, 0, 0, 0)           # no data: a coin toss
    0.5
    >>> round(prob_to_beat(10, 100, 10, 100), 6)
    0.5
    """
    _check_counts(conversions_a, units_a, "A")
    _check_counts(conversions_b, units_b, "B")
    alpha_a, beta_a = 1 + conversions_a, 1 + units_a - conversions_a
    alpha_b, beta_b = 1 + conversions_b, 1 + units_b - conversions_b
    if alpha_b <= alpha_a:
        return _b_beats_a(alpha_a, beta_a, alpha_b, beta_b)
    return 1.0 - _b_beats_a(alpha_b, beta_b, alpha_a, beta_a)


def _b_beats_a(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> float:
    i = np.arange(alpha_b, dtype=np.float64)
    terms = (
        special.betaln(alpha_a + i, beta_a + beta_b)
        - np.log(beta_b + i)
        - special.betaln(1 + i, beta_b)
        - special.betaln(alpha_a, beta_a)
    )
    return float(min(max(np.exp(special.logsumexp(terms)), 0.0), 1.0))


def _target_rate(baseline: float, lift: float, relative: bool) -> float:
    if not 0 < baseline < 1:
        raise EvaluationError(
            f"the baseline rate must lie strictly between 0 and 1, got {baseline}"
        )
    target = baseline * (1 + lift) if relative else baseline + lift
    if lift <= 0 or not 0 < target < 1:
        raise EvaluationError(
            f"a lift of {lift} on a baseline of {baseline} gives a rate of {target}",
            hint="the lift must be positive and keep the rate below 1",
        )
    return target


def sample_size(
    baseline: float,
    lift: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
) -> int:
    """Units per variant to detect ``lift`` over ``baseline`` (two-sided test at ``alpha``).

    ``lift`` is relative (0.1 = +10% of the baseline) unless ``relative=False`` (absolute,
    0.01 = one percentage point)::

        n = (z_{1-α/2} sqrt(2 p̄ (1-p̄)) + z_{power} sqrt(p1 (1-p1) + p2 (1-p2)))² / (p2-p1)²

    >>> sample_size(0.20, 0.05, relative=False, power=0.9)
    1464
    """
    _check_alpha(alpha)
    _check_alpha(power)
    p1, p2 = baseline, _target_rate(baseline, lift, relative)
    return math.ceil(_n_for(p1, p2, alpha, power))


def _n_for(p1: float, p2: float, alpha: float, power: float) -> float:
    z_a = float(stats.norm.ppf(1 - alpha / 2))
    z_b = float(stats.norm.ppf(power))
    mean = (p1 + p2) / 2
    spread = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return spread**2 / (p2 - p1) ** 2


def minimum_detectable_effect(
    baseline: float,
    units: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
) -> float:
    """The smallest upward lift that ``units`` per variant detect (inverse of
    :func:`sample_size`; relative unless ``relative=False``)."""
    _check_alpha(alpha)
    _check_alpha(power)
    if not 0 < baseline < 1:
        raise EvaluationError(
            f"the baseline rate must lie strictly between 0 and 1, got {baseline}"
        )
    if units < 1:
        raise EvaluationError(f"the minimum detectable effect needs units, got {units}")
    high = 1 - 1e-12
    if _n_for(baseline, high, alpha, power) > units:
        return (high - baseline) / baseline if relative else high - baseline
    p2: float = optimize.brentq(
        lambda p: _n_for(baseline, p, alpha, power) - units,
        baseline + 1e-12,
        high,
        xtol=1e-12,
    )
    return (p2 - baseline) / baseline if relative else p2 - baseline
