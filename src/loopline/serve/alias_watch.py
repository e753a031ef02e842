"""Follow a registry alias: when it moves, load the new version in the background and swap.

An :class:`AliasWatcher` polls ``registry.alias(name, alias)`` every ``poll_interval`` seconds
on a daemon thread. When the alias points to another version it calls ``load(version_info)``
(load, warm up: whatever makes the thing ready to serve) and then ``on_swap(info, loaded)``,
which replaces the served reference in one assignment. While the new version loads, and if its
load fails (logged, retried at the next poll), the old one keeps serving. Used for the served
models (:mod:`loopline.serve.model_host`) and the recommender's model alike.

Example (not run here: it needs a registry)::

    watcher = AliasWatcher(registry, "churn", "champion", load=load_model,
                           on_swap=lambda info, model: setattr(state, "model", model),
                           poll_interval=5.0)
    watcher.check_now()   # first load, in the caller's thread
    watcher.start()       # then follow the alias
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from loopline.errors import LooplineError, RegistryError
from loopline.registry import ModelRegistry, VersionInfo

log = logging.getLogger(__name__)


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's sight (``gc.freeze``).

    A server holds millions of long-lived objects (MLflow, scikit-learn, the models); each
    full collection scanned them all and stalled requests for 100-200 ms, which was most of
    the p99 latency. Frozen objects are still freed by reference counting when a swapped-out
    model goes; only reference cycles among them are never collected.
    """
    gc.freeze()


T = TypeVar("T")


class AliasWatcher(Generic[T]):
    """Keep ``on_swap`` fed with the version ``alias`` of model ``name`` points to."""

    def __init__(
        self,
        registry: ModelRegistry,
        name: str,
        alias: str,
        *,
        load: Callable[[VersionInfo], T],
        on_swap: Callable[[VersionInfo, T], None],
        poll_interval: float = 5.0,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(
                "The 'poll_interval' parameter of AliasWatcher must be > 0. "
                f"Got {poll_interval!r} instead."
            )
        self.registry = registry
        self.name = name
        self.alias = alias
        self.poll_interval = poll_interval
        self._load = load
        self._on_swap = on_swap
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.version: str | None = None
        """The version last swapped in (None: nothing loaded yet)."""
        self.last_error: str | None = None
        """Why the last look or load failed (None: it worked)."""

    def check_now(self, *, raise_errors: bool = False) -> bool:
        """Look at the alias once; load and swap if it moved. True if a new version was
        swapped in. Failures are logged and kept in :attr:`last_error` (raised as well with
        ``raise_errors``); the current version stays."""
        with self._check_lock:
            try:
                info = self.registry.alias(self.name, self.alias)
                if info is None:
                    raise RegistryError(
                        f"model {self.name!r} has no {self.alias!r} version",
                        model=self.name,
                        alias=self.alias,
                        hint=f"`loopline models promote {self.name}` sets the champion",
                    )
                if info.version == self.version:
                    self.last_error = None
                    return False
                loaded = self._load(info)
            except Exception as exc:  # logged and kept; the old version serves on
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "alias %s@%s: cannot load the version it points to (%s); %s",
                    self.name,
                    self.alias,
                    self.last_error,
                    "still serving version " + self.version if self.version else "nothing served",
                    exc_info=not isinstance(exc, LooplineError),
                )
                if raise_errors:
                    raise
                return False
            old = self.version
            self._on_swap(info, loaded)
            freeze_heap()
            self.version = info.version
            self.last_error = None
            log.info(
                "alias %s@%s: now serving version %s (was %s)",
                self.name,
                self.alias,
                info.version,
                old or "none",
            )
            return True

    def start(self) -> None:
        """Poll on a daemon thread until :meth:`close`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"alias-{self.name}@{self.alias}", daemon=True
        )
        self._thread.start()

    def close(self, wait: float = 5.0) -> None:
        """Stop polling (a load in progress finishes first, up to ``wait`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.check_now()
