"""The served models: loaded from the registry by alias, validated, micro-batched, hot-swapped.

:class:`ModelHost` loads each configured model's aliased version (``champion`` by default),
follows the alias with an :class:`~loopline.serve.alias_watch.AliasWatcher` and swaps a new
version in atomically once it is loaded and warmed up. Each loaded version
(:class:`~loopline.serve.loaded_model.LoadedModel`) has its
:class:`~loopline.serve.signature.InputSchema` and its own
:class:`~loopline.serve.batcher.MicroBatcher`: requests are validated on the event loop
(:meth:`ModelHost.parse`, no pandas) and scored together in the version's scoring thread
(:meth:`ModelHost.predict`), where the one DataFrame of the batch is built.

Errors: :class:`~loopline.errors.SignatureError` (422), :class:`~loopline.errors.NotServedError`
with ``fields["status"]`` 404 (unknown model or version) or 503 (not loaded yet, timed out),
:class:`~loopline.errors.ServeError` with ``status`` 500 (the model failed on the batch).

Example (not run here: it needs a registry)::

    host = ModelHost(registry, [ServedModelConfig(name="churn")], poll_interval=5, max_rows=1000)
    host.start()
    parsed = host.parse("churn", [{"tenure": 3.0, "charges": 70.5, "contract": "monthly",
                                   "seats": 2}])
    prediction = await host.predict("churn", parsed)   # .version, .probabilities, .labels
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from loopline.config.serving import ServedModelConfig
from loopline.errors import LooplineError, NotServedError
from loopline.registry import ModelRegistry, VersionInfo
from loopline.serve.alias_watch import AliasWatcher
from loopline.serve.batcher import BatcherClosed
from loopline.serve.loaded_model import BatchHook, LoadedModel, Prediction, load_version
from loopline.serve.signature import ParsedRows

log = logging.getLogger(__name__)


class _Served:
    """One configured model: its aliases (followed) and explicitly used versions."""

    def __init__(self, config: ServedModelConfig) -> None:
        self.config = config
        self.by_alias: dict[str, LoadedModel] = {}
        self.by_version: dict[str, LoadedModel] = {}  # used by version (A/B variants, shadow)
        self.watchers: dict[str, AliasWatcher[LoadedModel]] = {}

    def find(self, version: str) -> LoadedModel | None:
        if version in self.by_version:
            return self.by_version[version]
        return next((m for m in self.by_alias.values() if m.version == version), None)

    def in_use(self, loaded: LoadedModel) -> bool:
        return any(m is loaded for m in (*self.by_alias.values(), *self.by_version.values()))


class ModelHost:
    """The models ``loopline serve`` serves (see the module docstring).

    ``timeout``: seconds a prediction may wait for its result (then 503); ``preload``:
    ``(name, alias or version)`` pairs loaded by :meth:`start` (A/B variants, shadows);
    ``on_batch(model, version, requests, rows, seconds)``: called after each scored batch.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        models: Sequence[ServedModelConfig],
        *,
        poll_interval: float,
        max_rows: int,
        timeout: float = 10.0,
        preload: Sequence[tuple[str, str]] = (),
        on_batch: BatchHook | None = None,
    ) -> None:
        self.registry = registry
        self.poll_interval = poll_interval
        self.max_rows = max_rows
        self.timeout = timeout
        self._preload = list(preload)
        self._on_batch = on_batch
        self._served = {m.name: _Served(m) for m in models}
        self._lock = threading.RLock()  # loads of new versions / aliases, one at a time
        self._started = False

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load every model (blocking; a failure is logged and retried at each poll, and the
        host is not :attr:`ready` meanwhile), then follow the aliases. ``preload`` refs
        (``(name, alias or version)``: experiment variants, shadows) are loaded too."""
        for served in self._served.values():
            self._watch(served, served.config.alias)
        for name, ref in self._preload:
            try:
                self._model(name, ref)
            except LooplineError as exc:
                log.warning("cannot preload %s %s: %s", name, ref, exc)
        self._started = True
        for served in self._served.values():
            for watcher in served.watchers.values():
                watcher.start()

    def close(self) -> None:
        """Stop following aliases and stop the scoring threads (queued requests finish)."""
        for served in self._served.values():
            for watcher in served.watchers.values():
                watcher.close()
            for loaded in (*served.by_alias.values(), *served.by_version.values()):
                loaded.batcher.close(wait=self.timeout)

    @property
    def ready(self) -> bool:
        """Whether every configured model has its aliased version loaded."""
        return all(s.config.alias in s.by_alias for s in self._served.values())

    def check_now(self) -> bool:
        """Look at every followed alias once (tests; the watchers do it every poll)."""
        swapped = False
        for served in self._served.values():
            for watcher in list(served.watchers.values()):
                swapped = watcher.check_now() or swapped
        return swapped

    # ---- what is served ------------------------------------------------------------------

    def served(self) -> list[dict[str, Any]]:
        """Each configured model: name, alias, version, loaded_at, task, threshold, inputs,
        every loaded alias and version (``aliases``, ``versions``) and ``error``: why the
        version the alias points to could not be loaded (None when all is well)."""
        out = []
        for name, served in self._served.items():
            entry: dict[str, Any] = {"name": name, "alias": served.config.alias}
            current = served.by_alias.get(served.config.alias)
            watcher = served.watchers.get(served.config.alias)
            if current is None:
                entry |= {"version": None, "loaded": False}
            else:
                entry |= {"loaded": True, **current.describe()}
            # why the alias's (new) version is not served: a failed load, kept until one works
            entry["error"] = watcher.last_error if watcher else None
            entry["aliases"] = {a: m.version for a, m in served.by_alias.items()}
            versions = {m.version for m in (*served.by_alias.values(), *served.by_version.values())}
            entry["versions"] = sorted(versions, key=_version_key)
            out.append(entry)
        return out

    def resolve(self, name: str, ref: str) -> str:
        """The version an alias (or a version number) stands for; loads it on first use."""
        return self._model(name, ref).version

    def model(self, name: str, ref: str | None = None) -> LoadedModel:
        """The loaded version for ``ref`` (alias or version; None: the configured alias)."""
        return self._model(name, ref)

    async def prepare(self, name: str, ref: str) -> LoadedModel:
        """Load ``ref`` off the event loop if it is not loaded yet (first use of a variant)."""
        served = self._require(name)
        known = served.by_alias.get(ref) or served.find(ref)
        if known is not None:
            return known
        return await asyncio.to_thread(self._model, name, ref)

    # ---- requests -------------------------------------------------------------------------

    def parse(self, name: str, body_rows: Any, *, version: str | None = None) -> ParsedRows:
        """Validate request rows against the signature of the version that will score them."""
        return self._model(name, version).schema.parse(body_rows, max_rows=self.max_rows)

    async def predict(
        self, name: str, parsed: ParsedRows, *, version: str | None = None
    ) -> Prediction:
        """Score parsed rows with the alias's current version (or ``version``: an alias or a
        version number), batched with concurrent requests."""
        for _attempt in range(3):
            loaded = self._model(name, version)
            if parsed.schema is not loaded.schema and parsed.schema != loaded.schema:
                # the alias moved to a version with another signature since parse
                parsed = loaded.schema.parse(parsed.raw, max_rows=self.max_rows)
            try:
                return await loaded.batcher.submit(parsed, timeout=self.timeout)
            except BatcherClosed:
                continue  # swapped out between lookup and submit: the new version scores it
            except TimeoutError:
                raise NotServedError(
                    f"model {name!r} version {loaded.version} did not answer within "
                    f"{self.timeout:g} s",
                    model=name,
                    version=loaded.version,
                    status=503,
                ) from None
        raise NotServedError(f"model {name!r} is being swapped; retry", model=name, status=503)

    # ---- internals ------------------------------------------------------------------------

    def _require(self, name: str) -> _Served:
        served = self._served.get(name)
        if served is None:
            raise NotServedError(
                f"model {name!r} is not served",
                model=name,
                status=404,
                hint=f"served models: {', '.join(sorted(self._served)) or 'none'}",
            )
        return served

    def _model(self, name: str, ref: str | None) -> LoadedModel:
        served = self._require(name)
        alias = served.config.alias if ref is None else ref
        loaded = served.by_alias.get(alias)
        if loaded is not None:
            return loaded
        if ref is not None and ref.isdigit():
            return served.find(ref) or self._load_version(served, ref)
        if ref is None or alias in served.watchers:
            watcher = served.watchers.get(alias)
            raise NotServedError(
                f"model {name!r} ({alias}) is not loaded yet",
                model=name,
                alias=alias,
                status=503,
                hint=(watcher.last_error if watcher else None) or "retry in a moment",
            )
        self._watch(served, alias)
        if alias not in served.by_alias:
            raise NotServedError(
                f"model {name!r} has no loadable {alias!r} version",
                model=name,
                alias=alias,
                status=404,
                hint=served.watchers[alias].last_error,
            )
        return served.by_alias[alias]

    def _watch(self, served: _Served, alias: str) -> None:
        with self._lock:
            if alias in served.watchers:
                return
            watcher: AliasWatcher[LoadedModel] = AliasWatcher(
                self.registry,
                served.config.name,
                alias,
                load=lambda info: self._obtain(served, info),
                on_swap=lambda info, loaded: self._swap(served, alias, loaded),
                poll_interval=self.poll_interval,
            )
            served.watchers[alias] = watcher
            watcher.check_now()
            if self._started:
                watcher.start()

    def _obtain(self, served: _Served, info: VersionInfo) -> LoadedModel:
        with self._lock:
            known = served.find(info.version)
        if known is not None and not known.batcher.closed:
            return known
        return load_version(
            self.registry, info, max_batch=served.config.max_batch, on_batch=self._on_batch
        )

    def _swap(self, served: _Served, alias: str, loaded: LoadedModel) -> None:
        with self._lock:
            old = served.by_alias.get(alias)
            served.by_alias[alias] = loaded  # the atomic switch: new requests go to `loaded`
            if old is not None and old is not loaded and not served.in_use(old):
                old.batcher.close()  # requests already queued on it are still scored

    def _load_version(self, served: _Served, version: str) -> LoadedModel:
        name = served.config.name
        with self._lock:
            known = served.find(version)
            if known is not None:
                return known
            try:
                info = self.registry.version(name, version)
            except LooplineError as exc:
                raise NotServedError(
                    f"model {name!r} has no version {version}", model=name, status=404
                ) from exc
            loaded = load_version(
                self.registry, info, max_batch=served.config.max_batch, on_batch=self._on_batch
            )
            served.by_version[version] = loaded
            return loaded


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)
