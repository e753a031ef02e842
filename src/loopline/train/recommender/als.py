"""Implicit-feedback matrix factorisation: the ``implicit`` library's ALS, one thread, seeded.

:func:`fit_als` factors a (users x items) matrix of confidences ``1 + alpha * weight``
(Hu, Koren and Volinsky 2008). ``implicit`` multiplies its input by its own ``alpha``, so it
is given the confidences themselves with ``alpha=1``: the model, :meth:`RecommenderModel.fold_in`
and the server then agree on one definition. It runs on the CPU with one thread (BLAS
limited to one thread too, which ``implicit`` asks for), seeded: the same data and parameters
give the same factors.

>>> import scipy.sparse as sp
>>> conf = sp.csr_matrix(np.array([[3, 3, 0], [0, 3, 3], [3, 0, 3]], dtype=np.float32))
>>> users, items = fit_als(conf, factors=2, regularization=0.1, iterations=3, seed=1)
>>> users.shape, items.shape, items.dtype
((3, 2), (3, 2), dtype('float32'))
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from loopline.errors import MissingDependencyError

__all__ = ["fit_als"]


def fit_als(
    confidence: sp.csr_matrix,
    *,
    factors: int,
    regularization: float,
    iterations: int,
    seed: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """User and item factors (float32) of ALS on a confidence matrix (users x items)."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise MissingDependencyError("implicit", "serve") from exc
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=1.0,
            iterations=iterations,
            num_threads=1,
            random_state=seed,
        )
        model.fit(confidence.astype(np.float32).tocsr(), show_progress=False)
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )
