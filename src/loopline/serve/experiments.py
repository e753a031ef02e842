"""A/B experiments at serving time: sticky assignment of units to variants, kill switch, shadow.

A unit (user id, else the request id) is assigned by a stable hash: BLAKE2b of
``salt + "\\x1f" + unit`` (salt: the experiment's ``salt``, default its name) read as a
point in [0, 1), then the variant whose cumulative share of the weights covers that point.
The same unit gets the same variant in every process and after every restart, and a new
salt reshuffles everyone. Python's ``hash()`` is not used: it is randomised per process.

Kill switch: an experiment with ``enabled: false`` in the config, or stopped at run time
(``loopline ab stop EXP``, a row in ``serve_experiment_state``) assigns nobody: every
request gets the model's served alias (the recommender its default strategy), no exposure
is logged and its shadow stops scoring. Each process re-reads the state table at most once
per ``refresh_interval`` seconds, in a background thread, so a request never waits on the
database.

>>> import tempfile
>>> from pathlib import Path
>>> from loopline.config.serving import ExperimentConfig
>>> from loopline.store.metadata import MetadataStore
>>> store = MetadataStore("sqlite:///m.db", base_dir=Path(tempfile.mkdtemp()))
>>> exp = ExperimentConfig.model_validate({"model": "churn", "shadow": "challenger",
...     "variants": [{"name": "control", "alias": "champion"}, {"name": "v2", "version": "2"}]})
>>> router = ExperimentRouter({"churn_ab": exp}, store)
>>> a = router.for_model("churn", "user-1")
>>> a.experiment, a.variant, a.alias, a.version
('churn_ab', 'v2', None, '2')
>>> router.for_model("churn", "user-1") == a, router.shadow("churn")
(True, 'challenger')
>>> set_experiment_state(store, "churn_ab", enabled=False)
>>> router.refresh()
>>> router.for_model("churn", "user-1"), router.shadow("churn")
(None, None)
>>> store.close()
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from loopline.config.serving import ExperimentConfig
from loopline.errors import ConfigError, StoreError
from loopline.serve.log_tables import ensure_tables, serve_experiment_state
from loopline.store.metadata import MetadataStore

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0
"""Seconds between two reads of ``serve_experiment_state`` by one process, at most."""
_SCALE = float(2**64)


@dataclass(frozen=True)
class Assignment:
    """A unit's variant in a running experiment: what to serve it with."""

    experiment: str
    variant: str
    version: str | None
    alias: str | None
    strategy: str | None


def unit_point(salt: str, unit: str) -> float:
    """The unit's stable point in [0, 1) for ``salt`` (64 bits of BLAKE2b).

    >>> unit_point("churn_ab", "user-42")
    0.281397829132507
    """
    digest = hashlib.blake2b(f"{salt}\x1f{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class _Arms:
    """One experiment's variants as cumulative weight boundaries and ready assignments."""

    __slots__ = ("assignments", "bounds", "config", "name", "salt")

    def __init__(self, name: str, config: ExperimentConfig) -> None:
        self.name = name
        self.config = config
        self.salt = config.salt or name
        total = sum(v.weight for v in config.variants)
        running, bounds = 0.0, []
        for v in config.variants:
            running += v.weight
            bounds.append(running / total)
        bounds[-1] = 1.0  # no point can fall past the last variant through rounding
        self.bounds = bounds
        self.assignments = [
            Assignment(name, v.name, v.version, v.alias, v.strategy) for v in config.variants
        ]

    def assign(self, unit: str) -> Assignment:
        point = unit_point(self.salt, unit)
        return self.assignments[bisect.bisect_right(self.bounds, point)]


class ExperimentRouter:
    """Assigns units to the variants of the running experiments (see the module docstring).

    At most one experiment with ``enabled: true`` may target each served model, and one the
    recommender: more is a :class:`~loopline.errors.ConfigError` here, at start-up.
    ``metadata`` holds the run-time state (``None``: config only, no kill switch at run time).
    """

    def __init__(
        self,
        experiments: Mapping[str, ExperimentConfig],
        metadata: MetadataStore | None,
        *,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self.experiments = dict(experiments)
        self.metadata = metadata
        self.refresh_interval = refresh_interval
        self._by_model: dict[str, _Arms] = {}
        self._recommender: _Arms | None = None
        for name, config in self.experiments.items():
            if not config.enabled:
                continue
            arms = _Arms(name, config)
            if config.model is None:
                if self._recommender is not None:
                    raise _two_running("the recommender", self._recommender.name, name)
                self._recommender = arms
            else:
                if config.model in self._by_model:
                    raise _two_running(
                        f"model {config.model!r}", self._by_model[config.model].name, name
                    )
                self._by_model[config.model] = arms
        self._stopped: frozenset[str] = frozenset()
        self._read_at = 0.0
        self._refreshing = threading.Lock()
        if metadata is not None and (self._by_model or self._recommender):
            ensure_tables(metadata)
            self.refresh()

    def for_model(self, model: str, unit: str) -> Assignment | None:
        """The variant ``unit`` gets for ``model``; ``None``: no running experiment."""
        arms = self._by_model.get(model)
        if arms is None or not self._running(arms.name):
            return None
        return arms.assign(unit)

    def for_recommender(self, unit: str) -> Assignment | None:
        """The recommendation strategy variant ``unit`` gets; ``None``: the default."""
        arms = self._recommender
        if arms is None or not self._running(arms.name):
            return None
        return arms.assign(unit)

    def shadow(self, model: str) -> str | None:
        """Alias or version of the shadow challenger scoring ``model``'s requests, if any."""
        arms = self._by_model.get(model)
        if arms is None or arms.config.shadow is None or not self._running(arms.name):
            return None
        return arms.config.shadow

    def running(self) -> list[str]:
        """Names of the experiments that assign units now."""
        arms = [*self._by_model.values(), *([self._recommender] if self._recommender else [])]
        return sorted(a.name for a in arms if self._running(a.name))

    def refresh(self) -> None:
        """Read the run-time state now (blocking); on a database error keep the last one."""
        if self.metadata is None:
            return
        try:
            self._stopped = frozenset(stopped_experiments(self.metadata))
        except StoreError as exc:
            log.warning("experiment state not refreshed, keeping the last one: %s", exc)
        finally:
            self._read_at = time.monotonic()

    def _running(self, name: str) -> bool:
        if self.metadata is not None and time.monotonic() - self._read_at >= self.refresh_interval:
            self._refresh_in_background()
        return name not in self._stopped

    def _refresh_in_background(self) -> None:
        if not self._refreshing.acquire(blocking=False):
            return  # a refresh is on its way
        self._read_at = time.monotonic()  # one refresh per interval, even while it runs

        def work() -> None:
            try:
                self.refresh()
            finally:
                self._refreshing.release()

        threading.Thread(target=work, name="loopline-experiment-state", daemon=True).start()


def _two_running(target: str, first: str, second: str) -> ConfigError:
    return ConfigError(
        f"experiments {first!r} and {second!r} both run on {target}",
        path="serve.experiments",
        hint=f"set 'enabled: false' on one of them; at most one experiment runs on {target}",
    )


_STATE_HINT = "check the metadata database (stores.metadata_url) is reachable"


def stopped_experiments(metadata: MetadataStore) -> set[str]:
    """Names of the experiments stopped at run time (``loopline ab stop``)."""
    query = sa.select(serve_experiment_state.c.experiment).where(
        serve_experiment_state.c.enabled.is_(False)
    )
    try:
        with metadata.engine.connect() as conn:
            return {row[0] for row in conn.execute(query)}
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(
            "cannot read the experiment state", table="serve_experiment_state", hint=_STATE_HINT
        ) from exc


def experiment_state(metadata: MetadataStore, experiment: str) -> dict[str, Any] | None:
    """The run-time state row of ``experiment`` (enabled, updated_at, actor), if one exists."""
    ensure_tables(metadata)
    table = serve_experiment_state
    query = sa.select(table).where(table.c.experiment == experiment)
    try:
        with metadata.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(
            "cannot read the experiment state", table=table.name, hint=_STATE_HINT
        ) from exc
    return dict(row) if row is not None else None


def set_experiment_state(
    metadata: MetadataStore, experiment: str, *, enabled: bool, actor: str | None = None
) -> None:
    """Stop (``enabled=False``) or restart ``experiment`` in every server process.

    Restarting only undoes a run-time stop: an experiment with ``enabled: false`` in the
    config stays off.
    """
    ensure_tables(metadata)
    table = serve_experiment_state
    values = {"enabled": enabled, "updated_at": datetime.now(UTC), "actor": actor}
    try:
        with metadata.engine.begin() as conn:
            updated = conn.execute(
                table.update().where(table.c.experiment == experiment).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(table.insert().values(experiment=experiment, **values))
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(
            f"cannot record the state of experiment {experiment!r}",
            table=table.name,
            hint="check the metadata database (stores.metadata_url) is reachable and writable",
        ) from exc
