"""The trained recommender: ALS factors, co-visitation neighbours, popularity, as plain arrays.

A :class:`RecommenderModel` is what offline training produces and what the server's
real-time recommender loads: every part is a NumPy array (or a SciPy CSR matrix), saved as
``.npy`` / ``.npz`` files plus a small JSON file, with no pickle anywhere, so loading a model
runs no code from the file.

- ``users`` / ``items``: the ids (str) of the rows of ``user_factors`` / ``item_factors``;
- ``neighbours`` / ``neighbour_scores``: each item's top-K co-visited items (-1 padded);
- ``popularity``: interaction counts per item in the training data;
- ``seen``: the training interactions as a CSR matrix of confidences ``1 + alpha * weight``.

:meth:`RecommenderModel.fold_in` computes the ALS user vector of any history (a new user, a
live session) by the same least-squares step ALS itself uses, so a user unknown at training
time gets ALS scores from the items it has just touched.

>>> model = RecommenderModel.example()
>>> model.item_index("b"), model.user_index("nobody")
(1, None)
>>> vector = model.fold_in(np.array([0, 1]), np.array([1.0, 1.0]))
>>> model.scores(vector).shape
(4,)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from loopline.errors import LooplineError, RegistryError
from loopline.store.tracking import import_mlflow

if TYPE_CHECKING:
    from loopline.registry import ModelRegistry, VersionInfo

__all__ = [
    "ARTIFACT_PATH",
    "DEFAULT_RECENCY_DECAY",
    "DEFAULT_RECENT_ITEMS",
    "DEFAULT_SESSION_WEIGHT",
    "FORMAT_VERSION",
    "RecommenderModel",
    "blend_scores",
    "load_recommender",
    "recency_weights",
]

FORMAT_VERSION = 1
"""Version of the on-disk layout written by :meth:`RecommenderModel.save`."""

ARTIFACT_PATH = "recommender"
"""Folder, inside the logged MLflow model's ``artifacts/``, holding the saved model."""

DEFAULT_SESSION_WEIGHT = 0.5
"""Share of co-visitation (the recent-items signal) in the ``blend`` strategy."""

DEFAULT_RECENT_ITEMS = 20
"""How many of a user's latest items feed co-visitation scores offline."""

DEFAULT_RECENCY_DECAY = 0.9
"""Weight of a history item one step older than the next (see :func:`recency_weights`)."""

_ARRAYS = (
    "user_factors",
    "item_factors",
    "neighbours",
    "neighbour_scores",
    "popularity",
)


@dataclass
class RecommenderModel:
    """A trained implicit-feedback recommender (see the module docstring)."""

    users: np.ndarray  # (n_users,) object array of str; row i of user_factors
    items: np.ndarray  # (n_items,) object array of str; row j of item_factors
    user_factors: np.ndarray  # (n_users, f) float32
    item_factors: np.ndarray  # (n_items, f) float32
    neighbours: np.ndarray  # (n_items, K) int32 item indices, -1 padded
    neighbour_scores: np.ndarray  # (n_items, K) float32, descending per row
    popularity: np.ndarray  # (n_items,) float32 training interaction counts
    seen: sp.csr_matrix  # (n_users, n_items) training confidences 1 + alpha * weight
    regularization: float
    alpha: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-ready: params, metrics

    def __post_init__(self) -> None:
        n_users, n_items = len(self.users), len(self.items)
        checks = {
            "user_factors": self.user_factors.shape[0] == n_users,
            "item_factors": self.item_factors.shape[0] == n_items,
            "factors": self.user_factors.shape[1] == self.item_factors.shape[1],
            "neighbours": self.neighbours.shape[0] == n_items,
            "neighbour_scores": self.neighbour_scores.shape == self.neighbours.shape,
            "popularity": self.popularity.shape == (n_items,),
            "seen": self.seen.shape == (n_users, n_items),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise LooplineError(
                f"inconsistent recommender model: {', '.join(bad)} do not match "
                f"{n_users} users x {n_items} items",
                hint="rebuild the model with `loopline recommender train`",
            )

    # ---- lookups ---------------------------------------------------------------------------

    @cached_property
    def _user_positions(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.users)}

    @cached_property
    def _item_positions(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.items)}

    @cached_property
    def _gram(self) -> np.ndarray:
        """``Y^T Y + regularization * I`` in float64, shared by every fold-in."""
        y = self.item_factors.astype(np.float64)
        gram: np.ndarray = y.T @ y
        gram[np.diag_indices_from(gram)] += self.regularization
        return gram

    @property
    def factors(self) -> int:
        return int(self.item_factors.shape[1])

    def user_index(self, user: str) -> int | None:
        """Row of ``user`` in ``user_factors`` / ``seen``, or None for a user unseen in training."""
        return self._user_positions.get(str(user))

    def item_index(self, item: str) -> int | None:
        """Row of ``item`` in ``item_factors``, or None for an item unknown to the model."""
        return self._item_positions.get(str(item))

    def item_indices(self, items: list[str] | tuple[str, ...]) -> np.ndarray:
        """Indices of known ``items`` (unknown ones left out), int64, in the given order."""
        found = (self._item_positions.get(str(i)) for i in items)
        return np.fromiter((i for i in found if i is not None), dtype=np.int64)

    def seen_items(self, user_index: int) -> np.ndarray:
        """Item indices a training user interacted with."""
        start, end = self.seen.indptr[user_index], self.seen.indptr[user_index + 1]
        return np.asarray(self.seen.indices[start:end], dtype=np.int64)

    # ---- scoring ---------------------------------------------------------------------------

    def confidence(self, weights: np.ndarray) -> np.ndarray:
        """ALS confidence ``1 + alpha * weight`` of interaction weights."""
        return 1.0 + self.alpha * np.asarray(weights, dtype=np.float64)

    def fold_in(
        self, item_indices: np.ndarray, weights: np.ndarray, *, confidences: bool = False
    ) -> np.ndarray:
        """Least-squares ALS user vector (float32, ``(factors,)``) for a history.

        ``weights`` are interaction weights (confidence ``1 + alpha * weight``), or the
        confidences themselves with ``confidences=True`` (a row of :attr:`seen`). Repeated
        items add up their weights (as training does); indices < 0 are ignored. An empty
        history gives the zero vector. Solves ``(Y^T C Y + reg I) x = Y^T C p`` with
        ``p = 1`` on the history, as ALS does.
        """
        idx = np.asarray(item_indices, dtype=np.int64)
        values = np.asarray(weights, dtype=np.float64)
        keep = idx >= 0
        idx, values = idx[keep], values[keep]
        if idx.size == 0:
            return np.zeros(self.factors, dtype=np.float32)
        if idx.size > 1:  # repeated items: one entry with the summed weight, as in training
            unique, inverse = np.unique(idx, return_inverse=True)
            if unique.size < idx.size:
                values = np.bincount(inverse, weights=values).astype(np.float64)
                idx = unique
        conf = values if confidences else self.confidence(values)
        y = self.item_factors[idx].astype(np.float64)
        a = self._gram + y.T @ ((conf - 1.0)[:, None] * y)
        b = y.T @ conf
        vector: np.ndarray = np.linalg.solve(a, b).astype(np.float32)
        return vector

    def scores(self, user_vector: np.ndarray) -> np.ndarray:
        """ALS scores of every item for a user vector, ``(n_items,)`` float32."""
        result: np.ndarray = self.item_factors @ np.asarray(user_vector, dtype=np.float32)
        return result

    def covisit_scores(
        self, item_indices: np.ndarray, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """Co-visitation scores ``(n_items,)`` of a history: each item's neighbour scores,
        weighted by ``weights`` (default 1) and summed over the history."""
        idx = np.asarray(item_indices, dtype=np.int64)
        keep = idx >= 0
        idx = idx[keep]
        out = np.zeros(len(self.items), dtype=np.float32)
        if idx.size == 0:
            return out
        w = np.ones(idx.size) if weights is None else np.asarray(weights, dtype=np.float64)[keep]
        nbr = self.neighbours[idx]
        contrib = self.neighbour_scores[idx] * w[:, None].astype(np.float32)
        valid = nbr >= 0
        np.add.at(out, nbr[valid], contrib[valid])
        return out

    # ---- files -----------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write the model into ``folder`` (created): ``arrays.npz``, ``seen.npz``,
        ``ids.npz`` and ``model.json``. No pickle: :meth:`load` runs no code from the files."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "arrays.npz", **{name: getattr(self, name) for name in _ARRAYS})
        np.savez(
            folder / "ids.npz",
            users=np.asarray([str(u) for u in self.users], dtype=np.str_),
            items=np.asarray([str(i) for i in self.items], dtype=np.str_),
        )
        sp.save_npz(folder / "seen.npz", self.seen.tocsr(), compressed=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "metadata": self.metadata,
        }
        (folder / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> RecommenderModel:
        """Read a model written by :meth:`save`."""
        try:
            meta = json.loads((folder / "model.json").read_text())
            with np.load(folder / "arrays.npz", allow_pickle=False) as arrays:
                parts = {name: arrays[name] for name in _ARRAYS}
            with np.load(folder / "ids.npz", allow_pickle=False) as ids:
                users = ids["users"].astype(object)
                items = ids["items"].astype(object)
            seen = sp.load_npz(folder / "seen.npz").tocsr()
        except (OSError, KeyError, ValueError) as exc:
            raise LooplineError(
                f"cannot read the recommender model in {folder}: {exc}",
                path=str(folder),
                hint="the folder must hold a model written by RecommenderModel.save",
            ) from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise LooplineError(
                f"recommender model format {meta.get('format_version')!r} is not supported",
                path=str(folder),
                expected=FORMAT_VERSION,
                hint="retrain it with this loopline version",
            )
        return cls(
            users=users,
            items=items,
            seen=seen,
            regularization=float(meta["regularization"]),
            alpha=float(meta["alpha"]),
            metadata=dict(meta.get("metadata") or {}),
            **parts,
        )

    @classmethod
    def example(cls) -> RecommenderModel:
        """A tiny hand-made model (3 users, 4 items, 2 factors) for examples and tests."""
        item_factors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
        user_factors = np.array([[1, 0], [0, 1], [0.5, 0.5]], dtype=np.float32)
        seen = sp.csr_matrix(np.array([[3, 3, 0, 0], [0, 0, 3, 0], [3, 0, 0, 3]], dtype=np.float32))
        return cls(
            users=np.array(["u1", "u2", "u3"], dtype=object),
            items=np.array(["a", "b", "c", "d"], dtype=object),
            user_factors=user_factors,
            item_factors=item_factors,
            neighbours=np.array([[1, 3], [0, -1], [3, -1], [2, 0]], dtype=np.int32),
            neighbour_scores=np.array(
                [[1.0, 0.5], [1.0, 0.0], [1.0, 0.0], [1.0, 0.5]], dtype=np.float32
            ),
            popularity=np.array([2, 1, 1, 1], dtype=np.float32),
            seen=seen,
            regularization=0.05,
            alpha=2.0,
        )


def blend_scores(
    als: np.ndarray, covisit: np.ndarray, session_weight: float = DEFAULT_SESSION_WEIGHT
) -> np.ndarray:
    """Blend ALS and co-visitation scores (1-D for one user, or 2-D users x items).

    Each part is scaled to at most 1 along the last axis (ALS by its largest absolute score,
    co-visitation by its largest score; an all-zero part stays zero), then
    ``(1 - session_weight) * als + session_weight * covisit``.

    >>> blend_scores(np.array([2.0, 1.0, -1.0]), np.array([0.0, 0.5, 0.25]), 0.5).tolist()
    [0.5, 0.75, 0.0]
    """
    a = np.asarray(als, dtype=np.float32)
    c = np.asarray(covisit, dtype=np.float32)
    a_max = np.abs(a).max(axis=-1, keepdims=True)
    c_max = c.max(axis=-1, keepdims=True)
    a = np.divide(a, a_max, out=np.zeros_like(a), where=a_max > 0)
    c = np.divide(c, c_max, out=np.zeros_like(c), where=c_max > 0)
    result: np.ndarray = (1.0 - session_weight) * a + session_weight * c
    return result


def recency_weights(n: int, decay: float = DEFAULT_RECENCY_DECAY) -> np.ndarray:
    """Weights of a history of ``n`` items, oldest first: ``decay ** age``, newest 1.

    >>> recency_weights(3, 0.5).tolist()
    [0.25, 0.5, 1.0]
    """
    result: np.ndarray = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return result


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Switch MLflow's artifact progress bars off for a block (they would write to stderr
    of a server or a CLI with --json)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def load_recommender(
    registry: ModelRegistry, name: str, alias: str = "champion"
) -> tuple[RecommenderModel, VersionInfo]:
    """Load the recommender model that ``alias`` of registered model ``name`` points to.

    Downloads the registered version's artifacts (``artifacts/recommender/`` inside the
    logged MLflow model) and reads them with :meth:`RecommenderModel.load`; no pickle.

    Example (not run here: it needs a tracking store)::

        model, version = load_recommender(registry, "movies", "champion")
    """
    import tempfile

    info = registry.alias(name, alias)
    if info is None:
        raise RegistryError(
            f"model {name!r} has no {alias!r} version",
            model=name,
            alias=alias,
            hint=f"`loopline models promote {name}` sets the champion",
        )
    mlflow = import_mlflow()
    tracker = registry.tracker
    uri = f"models:/{name}/{info.version}"
    with tempfile.TemporaryDirectory(prefix="loopline-recommender-") as tmp:
        with tracker.mlflow_scope(), no_progress_bars():
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
            except mlflow.exceptions.MlflowException as exc:
                raise RegistryError(
                    f"could not download {uri}: {exc.message}",
                    model=name,
                    version=info.version,
                    uri=tracker.tracking_uri,
                ) from exc
        folder = Path(local) / "artifacts" / ARTIFACT_PATH
        if not (folder / "model.json").is_file():
            raise RegistryError(
                f"version {info.version} of {name!r} is not a loopline recommender",
                model=name,
                version=info.version,
                hint="register it with `loopline recommender train`",
            )
        model = RecommenderModel.load(folder)
    return model, info
