"""Model registry: versions, ``champion`` / ``challenger`` aliases, gated promotion, rollback.

Built on the MLflow model registry of a :class:`~loopline.store.tracking.Tracker` (the same
SQLite store by default, or a tracking server), so the MLflow UI shows the same versions and
aliases. A newly registered version becomes ``challenger``; :meth:`ModelRegistry.promote`
moves ``champion`` to it only if it passes a :class:`Gate` against the current champion,
scored by the caller on the same data; :meth:`ModelRegistry.rollback` moves ``champion`` back.

Where the history lives (it must work on any MLflow server, so no tables of our own):

- each event (register, promote, reject, rollback) is one registered-model tag
  ``loopline.event.NNNNNN`` holding a small JSON object (a registered-model tag value is
  VARCHAR(5000) on PostgreSQL-backed servers, so one tag per event rather than one list);
  the last 200 events are kept;
- the champion lineage (for rollback) is the tag ``loopline.champions``, a JSON list of the
  versions that were champion, oldest first (last 100 kept);
- model-version tags record the gate outcome (``loopline.gate``) and promotion / rollback times.

Example (not run here: it needs a tracking store)::

    registry = ModelRegistry(tracker)
    registry.register("churn", model_uri, run_id=run.run_id, description="LightGBM, 5-fold")
    registry.promote("churn", gate=Gate("roc_auc", max_regression=0.005),
                     evaluate=lambda v: score_on_holdout(registry.load("churn", version=v.version)),
                     actor="ana", reason="weekly retrain")
    registry.rollback("churn", actor="ana", reason="complaints about precision")
"""

from __future__ import annotations

import getpass
import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from loopline.errors import ConfigError, PromotionRejected, RegistryError
from loopline.store.tracking import Tracker, import_mlflow, quiet_mlflow

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "loopline.event."
CHAMPIONS_TAG = "loopline.champions"
MAX_EVENTS = 200
MAX_CHAMPIONS = 100
_MAX_REASON = 1000
_MAX_TAG_CHARS = 4900  # registered-model tag values are VARCHAR(5000)


def default_actor() -> str:
    """The login name of the current user, or ``unknown``."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


@dataclass(frozen=True)
class Gate:
    """Promotion gate: the challenger's ``metric`` may be worse than the champion's by at
    most ``max_regression``.

    >>> gate = Gate("roc_auc", max_regression=0.005)
    >>> gate.passes(0.846, 0.850), gate.passes(0.844, 0.850), gate.passes(0.70, None)
    (True, False, True)
    >>> Gate("rmse", greater_is_better=False).passes(0.13, 0.12)
    False
    """

    metric: str
    greater_is_better: bool = True
    max_regression: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_regression) and self.max_regression >= 0):
            raise ConfigError(
                "The 'max_regression' parameter of Gate must be a finite number >= 0. "
                f"Got {self.max_regression!r} instead.",
                path="gate.max_regression",
            )

    def passes(self, challenger: float, champion: float | None) -> bool:
        """Whether ``challenger`` may replace ``champion`` (no champion: always)."""
        if champion is None:
            return True
        tolerance = self.max_regression + 1e-12
        if self.greater_is_better:
            return challenger >= champion - tolerance
        return challenger <= champion + tolerance


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    description: str
    created_at: datetime

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelSummary:
    """A registered model: its versions (oldest first) and aliases (alias → version)."""

    name: str
    versions: tuple[str, ...]
    aliases: dict[str, str]


@dataclass(frozen=True)
class Event:
    """One entry of a model's history: who did what, when, why, with which scores."""

    time: datetime
    actor: str
    action: str  # register | promote | reject | rollback
    from_version: str | None
    to_version: str | None
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of a passed gate: ``champion`` moved from ``from_version`` to ``to_version``."""

    name: str
    from_version: str | None
    to_version: str
    gate: Gate
    challenger_score: float
    champion_score: float | None


Evaluate = Callable[[VersionInfo], Mapping[str, float]]


class ModelRegistry:
    """Registered models of one tracking store (see the module docstring)."""

    def __init__(self, tracker: Tracker) -> None:
        from mlflow.exceptions import MlflowException

        self.tracker = tracker
        self._client: Any = tracker.client
        self._mlflow_error = MlflowException

    @contextmanager
    def _calling(self, action: str, name: str | None = None) -> Iterator[None]:
        with quiet_mlflow():
            try:
                yield
            except self._mlflow_error as exc:
                raise RegistryError(
                    f"could not {action}: {exc.message}",
                    model=name,
                    uri=self.tracker.tracking_uri,
                    hint="check the model name with `loopline models list`",
                ) from exc

    def _require(self, name: str) -> Any:
        with quiet_mlflow():
            try:
                return self._client.get_registered_model(name)
            except self._mlflow_error as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise RegistryError(f"could not read model {name!r}: {exc.message}") from exc
        raise RegistryError(
            f"no registered model named {name!r}",
            model=name,
            hint="see `loopline models list`; a model is registered by `loopline train`",
        )

    def _info(self, mv: Any) -> VersionInfo:
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or None,
            source=mv.source,
            aliases=tuple(getattr(mv, "aliases", None) or ()),
            tags=dict(mv.tags or {}),
            description=mv.description or "",
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
        )

    # ---- reading -------------------------------------------------------------------------

    def version(self, name: str, version: str | int) -> VersionInfo:
        """One version of a model; :class:`RegistryError` if it does not exist."""
        self._require(name)
        with self._calling(f"read version {version} of {name!r}", name):
            return self._info(self._client.get_model_version(name, str(version)))

    def alias(self, name: str, alias: str) -> VersionInfo | None:
        """The version an alias points to, or None; unknown model → :class:`RegistryError`."""
        model = self._require(name)
        version = (model.aliases or {}).get(alias)
        return None if version is None else self.version(name, version)

    def champion(self, name: str) -> VersionInfo | None:
        return self.alias(name, CHAMPION)

    def challenger(self, name: str) -> VersionInfo | None:
        return self.alias(name, CHALLENGER)

    def list_models(self) -> list[ModelSummary]:
        """Every registered model with its versions and aliases, sorted by name."""
        summaries = []
        with self._calling("list models"):
            models = _all_pages(self._client.search_registered_models)
            for model in sorted(models, key=lambda m: m.name):
                versions = _all_pages(
                    self._client.search_model_versions, f"name = '{_quoted(model.name)}'"
                )
                summaries.append(
                    ModelSummary(
                        name=model.name,
                        versions=tuple(sorted((str(v.version) for v in versions), key=int)),
                        aliases={k: str(v) for k, v in (model.aliases or {}).items()},
                    )
                )
        return summaries

    def history(self, name: str) -> list[Event]:
        """The model's events, oldest first (the last 200)."""
        model = self._require(name)
        tags = model.tags or {}
        keys = sorted((k for k in tags if k.startswith(EVENT_PREFIX)), key=_event_number)
        return [_event_from_json(tags[k]) for k in keys]

    def load(self, name: str, alias: str = CHAMPION, *, version: str | int | None = None) -> Any:
        """Load the scikit-learn model an alias (or an explicit version) points to."""
        if version is None and self.alias(name, alias) is None:
            raise RegistryError(
                f"model {name!r} has no {alias!r} version",
                model=name,
                alias=alias,
                hint=f"`loopline models promote {name}` sets the champion",
            )
        if version is not None:
            self.version(name, version)
        uri = f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"
        mlflow = import_mlflow()
        with self.tracker.mlflow_scope(), self._calling(f"load {uri}", name):
            return mlflow.sklearn.load_model(uri)

    # ---- changing ------------------------------------------------------------------------

    def register(
        self,
        name: str,
        model_uri: str,
        *,
        run_id: str | None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        actor: str | None = None,
    ) -> VersionInfo:
        """Register ``model_uri`` as a new version of ``name`` (created if needed); the new
        version becomes ``challenger``."""
        with self.tracker.mlflow_scope(), self._calling(f"register {model_uri}", name):
            if not self._exists(name):
                self._client.create_registered_model(name)
            mv = self._client.create_model_version(
                name,
                model_uri,
                run_id=run_id,
                tags={k: str(v) for k, v in (tags or {}).items()},
                description=description,
            )
            self._client.set_registered_model_alias(name, CHALLENGER, str(mv.version))
        self._record(name, actor, "register", None, str(mv.version), description or "")
        return self.version(name, mv.version)

    def promote(
        self,
        name: str,
        *,
        gate: Gate,
        evaluate: Evaluate | None = None,
        metrics: Mapping[str, Mapping[str, float]] | None = None,
        actor: str | None = None,
        reason: str = "",
        version: str | int | None = None,
    ) -> PromotionDecision:
        """Move ``champion`` to the challenger (or ``version``) if it passes ``gate``.

        Scores come from ``evaluate(version_info)`` (called for the challenger and the
        champion: score both on the same data) or from ``metrics`` keyed by version number.
        The first promotion (no champion yet) always passes. A failed gate records a
        ``reject`` event and raises :class:`PromotionRejected` with both scores.
        """
        if (evaluate is None) == (metrics is None):
            raise RegistryError(
                "give exactly one of 'evaluate' or 'metrics' to promote",
                model=name,
                hint="evaluate=callable(VersionInfo) -> {metric: value}, "
                "or metrics={version: {metric: value}}",
            )
        candidate = self.version(name, version) if version is not None else self.challenger(name)
        if candidate is None:
            raise RegistryError(
                f"model {name!r} has no challenger to promote",
                model=name,
                hint="register a new version first (`loopline train`), or pass a version",
            )
        current = self.champion(name)
        if current is not None and current.version == candidate.version:
            raise RegistryError(
                f"version {candidate.version} of {name!r} is already the champion", model=name
            )
        scores = {"challenger": self._score(candidate, gate, evaluate, metrics)}
        if current is not None:
            scores["champion"] = self._score(current, gate, evaluate, metrics)
        challenger_score = scores["challenger"][gate.metric]
        champion_score = scores["champion"][gate.metric] if current is not None else None
        flat = {f"{role}.{gate.metric}": values[gate.metric] for role, values in scores.items()}
        flat |= {f"{role}.{k}": v for role, values in scores.items() for k, v in values.items()}
        old = current.version if current is not None else None
        verdict = _describe(gate, challenger_score, champion_score)
        if not gate.passes(challenger_score, champion_score):
            with self._calling("tag the rejected version", name):
                self._client.set_model_version_tag(
                    name, candidate.version, "loopline.gate", f"rejected: {verdict}"
                )
            self._record(name, actor, "reject", old, candidate.version, reason, flat)
            raise PromotionRejected(
                f"version {candidate.version} of {name!r} failed the promotion gate: {verdict}",
                model=name,
                challenger=candidate.version,
                champion=old,
                metric=gate.metric,
                challenger_score=challenger_score,
                champion_score=champion_score,
                hint="the champion did not move; improve the model, or promote with a "
                "looser gate (max_regression) if the regression is acceptable",
            )
        with self._calling(f"promote version {candidate.version}", name):
            self._client.set_registered_model_alias(name, CHAMPION, candidate.version)
            if CHALLENGER in candidate.aliases:
                self._client.delete_registered_model_alias(name, CHALLENGER)
            self._client.set_model_version_tag(
                name, candidate.version, "loopline.gate", f"passed: {verdict}"
            )
            self._client.set_model_version_tag(
                name, candidate.version, "loopline.promoted_at", _now().isoformat()
            )
            lineage = self._champions(name)
            if old is not None and (not lineage or lineage[-1] != old):
                lineage.append(old)  # champion set outside loopline: keep it for rollback
            self._set_champions(name, [*lineage, candidate.version])
        self._record(name, actor, "promote", old, candidate.version, reason, flat)
        return PromotionDecision(
            name, old, candidate.version, gate, challenger_score, champion_score
        )

    def rollback(self, name: str, *, actor: str | None = None, reason: str = "") -> Event:
        """Move ``champion`` back to the previous champion; :class:`RegistryError` if none."""
        current = self.champion(name)
        if current is None:
            raise RegistryError(
                f"model {name!r} has no champion to roll back", model=name, hint="promote first"
            )
        lineage = self._champions(name)
        while lineage and lineage[-1] == current.version:
            lineage.pop()
        if not lineage:
            raise RegistryError(
                f"model {name!r} has no previous champion to roll back to",
                model=name,
                champion=current.version,
                hint="rollback returns to an earlier champion; promote another version instead",
            )
        target = lineage[-1]
        with self._calling(f"roll back to version {target}", name):
            self._client.set_registered_model_alias(name, CHAMPION, target)
            self._client.set_model_version_tag(
                name, current.version, "loopline.rolled_back_at", _now().isoformat()
            )
            self._set_champions(name, lineage)
        return self._record(name, actor, "rollback", current.version, target, reason)

    # ---- internals -----------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        try:
            self._client.get_registered_model(name)
        except self._mlflow_error as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def _score(
        self,
        info: VersionInfo,
        gate: Gate,
        evaluate: Evaluate | None,
        metrics: Mapping[str, Mapping[str, float]] | None,
    ) -> dict[str, float]:
        if evaluate is not None:
            found: Mapping[str, float] | None = evaluate(info)
        else:
            found = (metrics or {}).get(info.version)
        if found is None or gate.metric not in found:
            raise RegistryError(
                f"no {gate.metric!r} score for version {info.version} of {info.name!r}",
                model=info.name,
                version=info.version,
                hint=f"score the challenger and the champion on the same data, with "
                f"{gate.metric!r} among the metrics",
            )
        scores = {str(k): float(v) for k, v in found.items()}
        if not math.isfinite(scores[gate.metric]):
            raise RegistryError(
                f"the {gate.metric!r} score of version {info.version} is not finite",
                model=info.name,
                version=info.version,
                score=scores[gate.metric],
            )
        return scores

    def _champions(self, name: str) -> list[str]:
        raw = (self._require(name).tags or {}).get(CHAMPIONS_TAG)
        return [str(v) for v in json.loads(raw)] if raw else []

    def _set_champions(self, name: str, lineage: list[str]) -> None:
        value = json.dumps(lineage[-MAX_CHAMPIONS:])
        self._client.set_registered_model_tag(name, CHAMPIONS_TAG, value)

    def _record(
        self,
        name: str,
        actor: str | None,
        action: str,
        from_version: str | None,
        to_version: str | None,
        reason: str,
        metrics: Mapping[str, float] | None = None,
    ) -> Event:
        event = Event(
            time=_now(),
            actor=actor or default_actor(),
            action=action,
            from_version=from_version,
            to_version=to_version,
            reason=reason[:_MAX_REASON],
            metrics=dict(metrics or {}),
        )
        payload = _event_to_json(event)
        if len(payload) > _MAX_TAG_CHARS:  # too many metrics for one tag: keep the gate's
            event = replace(event, metrics=dict(list(event.metrics.items())[:4]))
            payload = _event_to_json(event)
        tags = self._require(name).tags or {}
        numbers = sorted(_event_number(k) for k in tags if k.startswith(EVENT_PREFIX))
        with self._calling("record the history", name):
            next_number = (numbers[-1] + 1) if numbers else 1
            self._client.set_registered_model_tag(name, f"{EVENT_PREFIX}{next_number:06d}", payload)
            for old in numbers[: max(0, len(numbers) + 1 - MAX_EVENTS)]:
                self._client.delete_registered_model_tag(name, f"{EVENT_PREFIX}{old:06d}")
        return event


def _now() -> datetime:
    return datetime.now(UTC)


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _all_pages(search: Callable[..., Any], *args: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = search(*args, page_token=token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _event_number(key: str) -> int:
    return int(key.removeprefix(EVENT_PREFIX))


def _describe(gate: Gate, challenger: float, champion: float | None) -> str:
    if champion is None:
        return f"{gate.metric} {challenger:.6g}, no champion yet"
    direction = "higher" if gate.greater_is_better else "lower"
    return (
        f"{gate.metric} {challenger:.6g} vs champion {champion:.6g} "
        f"({direction} is better, max regression {gate.max_regression:g})"
    )


def _event_to_json(event: Event) -> str:
    return json.dumps(
        {
            "time": event.time.isoformat(),
            "actor": event.actor,
            "action": event.action,
            "from": event.from_version,
            "to": event.to_version,
            "reason": event.reason,
            "metrics": event.metrics,
        }
    )


def _event_from_json(raw: str) -> Event:
    data = json.loads(raw)
    return Event(
        time=datetime.fromisoformat(data["time"]),
        actor=data["actor"],
        action=data["action"],
        from_version=data["from"],
        to_version=data["to"],
        reason=data["reason"],
        metrics={k: float(v) for k, v in data["metrics"].items()},
    )
