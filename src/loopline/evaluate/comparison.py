"""Is model A really better than model B? The corrected resampled t-test on identical folds.

Cross-validation folds share training rows, so their scores are correlated and the plain
paired t-test is far too confident. Nadeau & Bengio (2003) correct the variance of the
per-fold differences ``d``::

    t = mean(d) / sqrt(var(d) * (1/k + n_test/n_train))      var with ddof=1

with ``k`` = folds × repeats, and a two-sided p-value from Student's t with ``k - 1``
degrees of freedom. Identical score vectors give ``t = 0, p = 1``; differences that are all
the same non-zero value give ``t = ±inf, p = 0``.

>>> r = corrected_resampled_ttest([0.8, 0.82, 0.81], [0.8, 0.82, 0.81], n_train=80, n_test=20)
>>> r.mean_diff, r.p_value
(0.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from loopline.errors import EvaluationError
from loopline.evaluate.metrics import greater_is_better

if TYPE_CHECKING:
    from loopline.evaluate.cross_validation import CVResult


@dataclass(frozen=True)
class TTestResult:
    """``mean_diff`` is mean(scores_a - scores_b)."""

    mean_diff: float
    t: float
    p_value: float
    df: int


@dataclass(frozen=True)
class ComparisonRow:
    """One model against the best one; ``diff`` = this model's mean minus the best's."""

    model: str
    mean: float
    std: float
    diff: float
    t: float
    p_value: float
    is_best: bool


def corrected_resampled_ttest(
    scores_a: ArrayLike, scores_b: ArrayLike, *, n_train: float, n_test: float
) -> TTestResult:
    """Nadeau–Bengio corrected resampled t-test on paired per-fold scores.

    ``n_train`` / ``n_test`` are the (mean) training and test fold sizes.
    """
    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise EvaluationError(
            "the two score vectors must be 1-D and paired fold by fold",
            shape_a=a.shape,
            shape_b=b.shape,
            hint="score both models on the same folds",
        )
    k = a.size
    if k < 2:
        raise EvaluationError("the t-test needs at least two folds", folds=k)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise EvaluationError("fold scores hold NaN or inf", hint="check the per-fold metrics")
    if n_train <= 0 or n_test <= 0:
        raise EvaluationError("n_train and n_test must be positive", n_train=n_train, n_test=n_test)
    diff = a - b
    mean = float(diff.mean())
    variance = float(diff.var(ddof=1)) * (1.0 / k + n_test / n_train)
    df = k - 1
    if variance == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p_value = 1.0 if mean == 0.0 else 0.0
    else:
        t = mean / math.sqrt(variance)
        p_value = float(2.0 * stats.t.sf(abs(t), df))
    return TTestResult(mean_diff=mean, t=t, p_value=p_value, df=df)


def compare_models(
    results: dict[str, CVResult],
    metric: str,
    n_train: float | None = None,
    n_test: float | None = None,
) -> list[ComparisonRow]:
    """Each model against the best (by mean ``metric``), best first, then by mean.

    The results must come from identical folds (same splitter, data and seed); fold sizes
    default to the mean training / test sizes of those folds.
    """
    if len(results) < 1:
        raise EvaluationError("no models to compare", hint="pass {name: CVResult}")
    names = list(results)
    _check_identical_folds(results)
    first = results[names[0]].folds
    n_train = n_train if n_train is not None else float(np.mean([f.n_train for f in first]))
    n_test = n_test if n_test is not None else float(np.mean([f.n_test for f in first]))
    scores = {name: result.fold_scores(metric) for name, result in results.items()}
    sign = 1.0 if greater_is_better(metric) else -1.0
    ranked = sorted(names, key=lambda name: -sign * float(scores[name].mean()))
    best = ranked[0]
    rows = []
    for name in ranked:
        if name == best:
            test = TTestResult(mean_diff=0.0, t=0.0, p_value=1.0, df=len(first) - 1)
        else:
            test = corrected_resampled_ttest(
                scores[name], scores[best], n_train=n_train, n_test=n_test
            )
        rows.append(
            ComparisonRow(
                model=name,
                mean=float(scores[name].mean()),
                std=float(scores[name].std()),
                diff=test.mean_diff,
                t=test.t,
                p_value=test.p_value,
                is_best=name == best,
            )
        )
    return rows


def _check_identical_folds(results: dict[str, CVResult]) -> None:
    names = list(results)
    reference = results[names[0]].folds
    for name in names[1:]:
        folds = results[name].folds
        same = len(folds) == len(reference) and all(
            np.array_equal(f.test_index, r.test_index)
            for f, r in zip(folds, reference, strict=True)
        )
        if not same:
            raise EvaluationError(
                "models must be compared on identical folds",
                models=f"{names[0]}, {name}",
                hint="cross-validate every model with the same splitter, data and seed",
            )
