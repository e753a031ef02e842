"""Interactions for recommender training: read from the warehouse, indexed, split by time.

:func:`read_interactions` reads the user, item, time (and rating) columns a
:class:`~loopline.config.serving.RecommenderJobConfig` names, keeps the positive ones
(``rating >= min_rating`` when set) and returns them as parallel NumPy arrays in time order.
:func:`temporal_split` holds out the latest ``test_fraction`` of them: the model is trained on
the earlier part only (users and items indexed from it), and each test user's relevant items
are its held-out items that it did not already interact with in training.

>>> data = Interactions.from_columns(
...     ["u1", "u1", "u2", "u2", "u1", "u2"], ["a", "b", "a", "c", "c", "b"], [1, 2, 3, 4, 5, 6])
>>> split = temporal_split(data, 0.5)
>>> split.train.items.tolist(), split.test_users.tolist(), [r.tolist() for r in split.relevant]
(['a', 'b'], [1], [[1]])
>>> split.n_test, split.cutoff, split.dropped_cold
(3, 4, 2)
>>> by_user = temporal_split(data, 0.3, mode="user")  # u1: a b | c, u2: a c | b
>>> by_user.train.items.tolist(), [r.tolist() for r in by_user.relevant], by_user.dropped_cold
(['a', 'b', 'c'], [[2], [1]], 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from numpy.typing import NDArray

from loopline.config import LooplineConfig
from loopline.config.serving import RecommenderJobConfig
from loopline.errors import StoreError, TrainError

__all__ = ["Interactions", "SplitMode", "TemporalSplit", "read_interactions", "temporal_split"]


@dataclass(frozen=True)
class Interactions:
    """Interactions as parallel arrays, sorted by time (ties keep the table's order).

    ``users`` / ``items``: the distinct ids (str, object arrays, sorted); ``user`` / ``item``:
    per interaction, the index into them; ``time``: int64 (epoch units of the table) or
    float64; ``weight``: interaction weight (1.0 each; repeats add up in the matrix).
    """

    users: NDArray[Any]
    items: NDArray[Any]
    user: NDArray[np.int64]
    item: NDArray[np.int64]
    time: NDArray[Any]
    weight: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.user.size)

    @classmethod
    def from_columns(
        cls,
        users: Sequence[Any] | NDArray[Any],
        items: Sequence[Any] | NDArray[Any],
        times: Sequence[Any] | NDArray[Any],
        weights: Sequence[float] | NDArray[Any] | None = None,
    ) -> Interactions:
        """Index raw id columns (any type, compared as text) and sort them by time."""
        user_ids = np.asarray([str(u) for u in users], dtype=object)
        item_ids = np.asarray([str(i) for i in items], dtype=object)
        time = np.asarray(times)
        if time.dtype.kind not in "iuf":
            raise TrainError(
                f"the time column must be numeric or a timestamp, got {time.dtype}",
                hint="use epoch seconds or a timestamp column",
            )
        weight = (
            np.ones(len(user_ids)) if weights is None else np.asarray(weights, dtype=np.float64)
        )
        order = np.argsort(time, kind="stable")
        user_vocab, user_idx = np.unique(user_ids, return_inverse=True)
        item_vocab, item_idx = np.unique(item_ids, return_inverse=True)
        return cls(
            users=user_vocab.astype(object),
            items=item_vocab.astype(object),
            user=user_idx[order].astype(np.int64),
            item=item_idx[order].astype(np.int64),
            time=time[order],
            weight=weight[order],
        )

    def matrix(self) -> sp.csr_matrix:
        """The (users x items) matrix of summed weights, CSR with sorted indices."""
        m = sp.csr_matrix(
            (self.weight, (self.user, self.item)),
            shape=(len(self.users), len(self.items)),
            dtype=np.float64,
        )
        m.sum_duplicates()
        m.sort_indices()
        return m


SplitMode = Literal["global", "user"]
"""``global``: the latest share of all interactions is held out (one cutoff time: nothing
after it is trained on). ``user``: each user's latest share is held out (no user's own
future is trained on, but other users' later interactions may be)."""


@dataclass(frozen=True)
class TemporalSplit:
    """The training part (its own user / item index) and the held-out evaluation users.

    ``test_users``: training-user indices with held-out items; ``relevant[i]``: training-item
    indices held out for ``test_users[i]`` that it had not interacted with in training.
    ``cutoff``: the time of the first held-out interaction (``global`` mode; ``user`` mode
    has one per user: None); ``dropped_cold``: held-out
    interactions of users or items the training part does not know (they cannot be scored).
    """

    train: Interactions
    test_users: NDArray[np.int64]
    relevant: list[NDArray[np.int64]]
    n_test: int
    cutoff: Any
    dropped_cold: int
    mode: SplitMode = "global"


def temporal_split(
    data: Interactions, test_fraction: float, mode: SplitMode = "global"
) -> TemporalSplit:
    """Hold out the latest ``test_fraction`` of ``data`` by time (see :data:`SplitMode`).

    ``user`` mode holds out ``ceil(n * test_fraction)`` of each user's ``n`` interactions,
    leaving at least one in training (a user with one interaction is not tested).
    """
    if not 0 < test_fraction < 1:
        raise TrainError(
            f"The 'test_fraction' parameter must be in (0, 1). Got {test_fraction!r} instead."
        )
    held = _held_out(data, test_fraction) if mode == "user" else _latest(data, test_fraction)
    n, n_test = len(data), int(held.sum())
    if not 0 < n_test < n:
        raise TrainError(
            f"cannot hold out {test_fraction:.0%} of {n} interactions",
            hint="a temporal split needs interactions on both sides of the cutoff",
        )
    train_users, user_map = np.unique(data.user[~held], return_inverse=True)
    train_items, item_map = np.unique(data.item[~held], return_inverse=True)
    train = Interactions(
        users=data.users[train_users],
        items=data.items[train_items],
        user=user_map.astype(np.int64),
        item=item_map.astype(np.int64),
        time=data.time[~held],
        weight=data.weight[~held],
    )
    # Held-out interactions in the training index (-1: a user or item unknown to it).
    user_lookup = np.full(len(data.users), -1, dtype=np.int64)
    user_lookup[train_users] = np.arange(train_users.size)
    item_lookup = np.full(len(data.items), -1, dtype=np.int64)
    item_lookup[train_items] = np.arange(train_items.size)
    test_user = user_lookup[data.user[held]]
    test_item = item_lookup[data.item[held]]
    known = (test_user >= 0) & (test_item >= 0)
    test_user, test_item = test_user[known], test_item[known]
    # Drop the pairs the user already had in training, and repeats.
    width = len(train.items)
    already = np.isin(test_user * width + test_item, train.user * width + train.item)
    pairs = np.unique(np.stack([test_user[~already], test_item[~already]], axis=1), axis=0)
    users, starts = np.unique(pairs[:, 0], return_index=True)
    relevant = [np.asarray(r, dtype=np.int64) for r in np.split(pairs[:, 1], starts[1:])]
    return TemporalSplit(
        train=train,
        test_users=users.astype(np.int64),
        relevant=relevant if users.size else [],
        n_test=n_test,
        cutoff=data.time[held].min().item() if mode == "global" else None,
        dropped_cold=int((~known).sum()),
        mode=mode,
    )


def _latest(data: Interactions, test_fraction: float) -> NDArray[np.bool_]:
    """The last ``ceil(n * test_fraction)`` interactions (``data`` is in time order)."""
    n = len(data)
    held = np.zeros(n, dtype=bool)
    held[n - int(np.ceil(n * test_fraction)) :] = True
    return held


def _held_out(data: Interactions, test_fraction: float) -> NDArray[np.bool_]:
    """Each user's latest ``ceil(n_u * test_fraction)`` interactions, at most ``n_u - 1``."""
    order = np.argsort(data.user, kind="stable")  # time order kept within a user
    counts = np.bincount(data.user, minlength=len(data.users))
    user = data.user[order]
    position = np.arange(user.size) - (np.cumsum(counts) - counts)[user]
    n_test = np.minimum(np.ceil(counts * test_fraction), counts - 1).astype(np.int64)
    held = np.zeros(user.size, dtype=bool)
    held[order] = position >= (counts - n_test)[user]
    return held


def read_interactions(
    config: LooplineConfig, job: RecommenderJobConfig
) -> tuple[Interactions, dict[str, Any]]:
    """The job's positive interactions from the warehouse, and their lineage (source, rows
    read, rows kept, content hash)."""
    from loopline.store.sql_names import quote_ident
    from loopline.store.warehouse import open_warehouse
    from loopline.train.data import content_hash

    columns = [job.user, job.item, job.time] + ([job.rating] if job.rating else [])
    warehouse = open_warehouse(config.stores.warehouse_url, base_dir=config.project_dir)
    try:
        if job.table not in warehouse.tables():
            raise TrainError(
                f"table {job.table!r} is not in the warehouse",
                table=job.table,
                hint="load it first, e.g. load_into_warehouse('movielens', config) "
                "or `loopline ingest ...`",
            )
        select = ", ".join(quote_ident(c) for c in columns)
        try:
            table = warehouse.query(f"SELECT {select} FROM {quote_ident(job.table)}")
        except StoreError as exc:
            raise TrainError(
                f"cannot read the interactions: {exc.message}",
                table=job.table,
                columns=", ".join(columns),
                hint="check 'user', 'item', 'time' and 'rating' of the recommender job",
            ) from exc
    finally:
        warehouse.close()
    rows = table.num_rows
    if rows:
        table = table.filter(_complete(table))
    if job.rating and job.min_rating is not None:
        table = table.filter(pc.greater_equal(table[job.rating], job.min_rating))
    if table.num_rows == 0:
        raise TrainError(
            f"no positive interactions in table {job.table!r}",
            table=job.table,
            rows=rows,
            hint="lower 'min_rating', or check the table's contents",
        )
    time = table[job.time]
    if pa.types.is_timestamp(time.type) or pa.types.is_date(time.type):
        time = pc.cast(time.cast(pa.timestamp("us")), pa.int64())
    data = Interactions.from_columns(
        table[job.user].to_numpy(zero_copy_only=False),
        table[job.item].to_numpy(zero_copy_only=False),
        time.to_numpy(zero_copy_only=False),
    )
    lineage = {
        "source": f"table:{job.table}",
        "rows": rows,
        "interactions": len(data),
        "content_hash": content_hash(table),
    }
    return data, lineage


def _complete(table: pa.Table) -> pa.ChunkedArray:
    """Rows where every column is present."""
    mask = pc.is_valid(table.column(0))
    for column in table.columns[1:]:
        mask = pc.and_(mask, pc.is_valid(column))
    return mask
