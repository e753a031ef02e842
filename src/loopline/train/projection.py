"""2-D projections of transformed features for the report: exploration, never part of a model.

PCA is a linear map that could transform new rows; t-SNE cannot (it places the rows it
was given and has no ``transform``), so neither is ever a pipeline step: the report
shows them to let a reader see whether classes separate, and nothing is learnt from them.

Both methods use the same rows, at most ``max_rows`` of them, drawn by
:func:`projection_rows` (all rows, in order, when there are few enough): colour the
points with ``y[projection_rows(len(y), seed=seed)]``.

>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(50, 4))
>>> project_2d(X, method="pca", seed=0).shape
(50, 2)
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from loopline.errors import TrainError

Method = Literal["pca", "tsne"]
DEFAULT_MAX_ROWS = 2000
TSNE_PERPLEXITY = 30.0


def projection_rows(n_rows: int, *, seed: int, max_rows: int = DEFAULT_MAX_ROWS) -> np.ndarray:
    """Indices of the rows a projection shows: all, or ``max_rows`` drawn without replacement.

    >>> projection_rows(5, seed=0).tolist()
    [0, 1, 2, 3, 4]
    >>> len(projection_rows(10_000, seed=0, max_rows=100))
    100
    """
    if n_rows <= max_rows:
        return np.arange(n_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=max_rows, replace=False))


def project_2d(
    X_transformed: Any, *, method: Method, seed: int, max_rows: int = DEFAULT_MAX_ROWS
) -> np.ndarray:
    """The rows of :func:`projection_rows` placed in 2-D, shape ``(rows, 2)``.

    ``X_transformed`` is the output of a fitted preprocessor (dense or sparse). A frame
    with a single feature gets a second coordinate of zeros.
    """
    if method not in ("pca", "tsne"):
        raise TrainError(f"unknown projection method {method!r}", hint="use 'pca' or 'tsne'")
    X = X_transformed.toarray() if hasattr(X_transformed, "toarray") else X_transformed
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 3 or X.shape[1] < 1:
        raise TrainError(
            f"a 2-D projection needs at least 3 rows and 1 feature; got shape {X.shape}",
            hint="project the transformed training rows",
        )
    if not np.isfinite(X).all():
        raise TrainError(
            "the features hold NaN or infinite values",
            hint="project the output of the fitted preprocessor (it imputes missing values)",
        )
    X = X[projection_rows(len(X), seed=seed, max_rows=max_rows)]
    # One BLAS / OpenMP thread: on shared small machines more threads were 5x slower.
    with threadpool_limits(limits=1):
        coords = _pca(X) if method == "pca" else _tsne(X, seed)
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 1))])
    return np.asarray(coords, dtype=np.float64)


def _pca(X: np.ndarray) -> np.ndarray:
    result: np.ndarray = PCA(n_components=min(2, X.shape[1]), svd_solver="full").fit_transform(X)
    return result


def _tsne(X: np.ndarray, seed: int) -> np.ndarray:
    # Perplexity must stay below the number of rows; 30 is t-SNE's usual default.
    perplexity = min(TSNE_PERPLEXITY, (len(X) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1)
    result: np.ndarray = tsne.fit_transform(X if X.shape[1] > 1 else np.hstack([X, 0 * X]))
    return result
