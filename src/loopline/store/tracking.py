"""MLflow glue: runs, metrics, artifacts and models, and the only place that knows tracking URIs.

A :class:`Tracker` opens one MLflow experiment on a tracking store: by default a SQLite file
(``sqlite:///.loopline/mlflow.db``, relative to the project folder) with artifacts in a local
folder (``.loopline/mlartifacts``); or a tracking server (``http(s)://...``) used as given.
Every call goes through an explicit ``MlflowClient``; the few MLflow APIs that read only the
process-wide tracking URI (model logging and loading) run inside :meth:`Tracker.mlflow_scope`,
which points MLflow at this store for the block and restores the previous URIs afterwards, so
two projects (or two tests) in one process never leak into each other. MLflow's usage
telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``, unless set) before MLflow is imported:
nothing here reaches the network unless the tracking URI is a server.

Browse the same store in the MLflow UI::

    mlflow ui --backend-store-uri sqlite:///.loopline/mlflow.db \\
        --default-artifact-root .loopline/mlartifacts

Example (not run here: opening a store creates its tables, a few seconds)::

    tracker = Tracker(TrackingConfig(), base_dir=Path("."), experiment="churn")
    with tracker.start_run("lightgbm", tags={"job": "churn"}) as run:
        run.log_params({"learning_rate": 0.05})
        run.log_fold_metrics([{"roc_auc": 0.84}, {"roc_auc": 0.85}])
        run.log_metrics({"roc_auc": 0.845})
        sample = X.head(50)
        model_uri = run.log_model(pipeline, signature_from=(sample, pipeline.predict(sample)))
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from loopline.config import TrackingConfig
from loopline.errors import ConfigError, MissingDependencyError, StoreError

log = logging.getLogger(__name__)

_SERVER_SCHEMES = ("http", "https")
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_SCOPE_LOCK = threading.RLock()
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def import_mlflow() -> ModuleType:
    """Import MLflow with telemetry off, or say which extra installs it."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
        import mlflow.sklearn
    except ImportError as exc:
        raise MissingDependencyError("mlflow", "train") from exc
    return mlflow


def resolve_tracking_uri(uri: str, base_dir: Path) -> str:
    """An absolute tracking URI: ``sqlite:///relative.db`` is resolved against ``base_dir``.

    >>> resolve_tracking_uri("sqlite:////srv/mlflow.db", Path("/tmp"))
    'sqlite:////srv/mlflow.db'
    >>> resolve_tracking_uri("https://mlflow.example.com", Path("/tmp"))
    'https://mlflow.example.com'
    """
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in _SERVER_SCHEMES or scheme in _DATABASE_SCHEMES[1:]:
        return uri
    if scheme != "sqlite" or not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        raise ConfigError(
            f"unsupported MLflow tracking URI {uri!r}",
            path="tracking.uri",
            hint="use sqlite:///PATH.db (embedded), http(s)://HOST (a tracking server) "
            "or postgresql://... (a database backend)",
        )
    path = Path(uri.removeprefix("sqlite:///"))
    path = path if path.is_absolute() else base_dir / path
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.as_posix()}"


def resolve_artifact_root(artifacts: str, base_dir: Path) -> str:
    """A URI for the artifact root: a local folder (relative to ``base_dir``) as a file URI.

    >>> resolve_artifact_root("s3://bucket/mlflow", Path("/tmp"))
    's3://bucket/mlflow'
    """
    if "://" in artifacts:
        return artifacts
    path = Path(artifacts)
    path = (path if path.is_absolute() else base_dir / path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


_BASE_REQUIREMENTS = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops", "cloudpickle")


@cache
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _top_modules(obj: Any, found: set[str], depth: int = 0) -> None:
    """Top-level modules of the classes a model is built from (pipeline steps, estimators)."""
    if depth > 20:
        return
    if isinstance(obj, list | tuple):
        for item in obj:
            _top_modules(item, found, depth + 1)
        return
    found.add(type(obj).__module__.split(".")[0])
    get_params = getattr(obj, "get_params", None)
    if callable(get_params) and not isinstance(obj, type):
        for value in get_params(deep=False).values():
            _top_modules(value, found, depth + 1)


def pip_requirements(model: Any) -> list[str]:
    """Pinned requirements (``name==installed version``) to load ``model`` elsewhere.

    Built from the installed packages, never from the network (MLflow's own inference
    imports the model in a subprocess and may query PyPI).

    >>> from sklearn.linear_model import LogisticRegression
    >>> [r.split("==")[0] for r in pip_requirements(LogisticRegression())]
    ['cloudpickle', 'mlflow', 'numpy', 'pandas', 'scikit-learn', 'scipy', 'skops']
    """
    modules: set[str] = set()
    _top_modules(model, modules)
    names = set(_BASE_REQUIREMENTS)
    for module in modules:
        names.update(_distributions().get(module, []))
    pinned = []
    for dist in sorted(names, key=str.lower):
        try:
            pinned.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            log.debug("%s is not installed; left out of the model's requirements", dist)
    return pinned


def serialization(model: Any) -> dict[str, Any]:
    """How to store ``model``: skops (safe to load) trusting exactly the types this freshly
    trained model is made of; cloudpickle when skops cannot hold it (a lambda, say)."""
    try:
        skops_io: Any = importlib.import_module("skops.io")
        data = skops_io.dumps(model)
        trusted = skops_io.get_untrusted_types(data=data)
        skops_io.loads(data, trusted=trusted)  # a lambda dumps fine but cannot load back
    except Exception as exc:  # noqa: BLE001 - any skops failure means "use cloudpickle"
        log.info("skops cannot serialise %s (%s); using cloudpickle", type(model).__name__, exc)
        return {"serialization_format": "cloudpickle"}
    return {"serialization_format": "skops", "skops_trusted_types": trusted}


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's third-party warnings and INFO chatter (table creation) for a block."""
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    mlflow_logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            # Deprecations MLflow triggers inside its own code (SQLAlchemy's ``noload``,
            # pandas' range comparison): nothing a loopline user can act on.
            warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
            warnings.filterwarnings("ignore", module=r"alembic(\.|$)")
            yield
    finally:
        mlflow_logger.setLevel(level)


@contextmanager
def store_errors(action: str, uri: str) -> Iterator[None]:
    """Turn an MLflow failure into a :class:`StoreError` naming the action and the store."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise StoreError(
            f"MLflow could not {action}: {exc.message}",
            uri=uri,
            hint="check the tracking URI in loopline.yaml (tracking.uri) and that the "
            "store is reachable",
        ) from exc


class Tracker:
    """One MLflow experiment on one tracking store; runs are opened with :meth:`start_run`."""

    def __init__(self, config: TrackingConfig, *, base_dir: Path, experiment: str) -> None:
        mlflow = import_mlflow()
        self.tracking_uri = resolve_tracking_uri(config.uri, base_dir)
        is_server = urlparse(self.tracking_uri).scheme in _SERVER_SCHEMES
        self.artifact_root = (
            None if is_server else resolve_artifact_root(config.artifacts, base_dir)
        )
        self.experiment_name = experiment
        with self.mlflow_scope(), store_errors("open the tracking store", self.tracking_uri):
            self.client: Any = mlflow.MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
            self.experiment_id = self._ensure_experiment(experiment)

    def _ensure_experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        return str(self.client.create_experiment(name, artifact_location=self.artifact_root))

    @contextmanager
    def mlflow_scope(self) -> Iterator[None]:
        """Point MLflow's process-wide tracking and registry URIs at this store for a block.

        Needed by the MLflow APIs that take no client (``mlflow.sklearn.log_model`` /
        ``load_model``, registering a logged model); the previous URIs (and their environment
        variables) are restored on exit. Warnings and chatter from MLflow are quieted too.
        """
        from mlflow.tracking._model_registry import utils as registry_uris
        from mlflow.tracking._tracking_service import utils as tracking_uris

        # MLflow has no public way to read back "unset"; these module globals are the state
        # that set_tracking_uri / set_registry_uri write.

        # The URIs are process-wide: a server loads models on background threads, so one
        # scope at a time (re-entrant: a scope may call code that opens one).
        with _SCOPE_LOCK:
            saved_tracking = tracking_uris._tracking_uri
            saved_registry = registry_uris._registry_uri
            saved_env = {key: os.environ.get(key) for key in _URI_ENV}
            with quiet_mlflow():
                tracking_uris.set_tracking_uri(self.tracking_uri)
                registry_uris.set_registry_uri(self.tracking_uri)
                try:
                    yield
                finally:
                    tracking_uris.set_tracking_uri(saved_tracking)  # type: ignore[arg-type]  # None unsets
                    registry_uris._registry_uri = saved_registry
                    for key, value in saved_env.items():
                        if value is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = value

    @contextmanager
    def start_run(self, name: str, tags: Mapping[str, str] | None = None) -> Iterator[TrackedRun]:
        """Open a run; it ends FINISHED, or FAILED if the block raises."""
        with quiet_mlflow(), store_errors("start a run", self.tracking_uri):
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={k: str(v) for k, v in (tags or {}).items()},
            )
        tracked = TrackedRun(self, run.info.run_id)
        try:
            yield tracked
        except BaseException:
            with quiet_mlflow():
                self.client.set_terminated(tracked.run_id, status="FAILED")
            raise
        with quiet_mlflow(), store_errors("end the run", self.tracking_uri):
            self.client.set_terminated(tracked.run_id, status="FINISHED")

    def load_model(self, model_uri: str) -> Any:
        """Load a scikit-learn model from ``runs:/``, ``models:/`` or an artifact URI."""
        mlflow = import_mlflow()
        with self.mlflow_scope(), store_errors(f"load model {model_uri}", self.tracking_uri):
            return mlflow.sklearn.load_model(model_uri)


class TrackedRun:
    """An open MLflow run: parameters, metrics, artifacts and the model of one training run."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id

    @property
    def _client(self) -> Any:
        return self.tracker.client

    @contextmanager
    def _calling(self, action: str) -> Iterator[None]:
        with quiet_mlflow(), store_errors(action, self.tracker.tracking_uri):
            yield

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values as strings; MLflow keeps the first value of a key)."""
        from mlflow.entities import Param

        items = [Param(str(k), str(v)) for k, v in params.items()]
        with self._calling("log parameters"):
            for start in range(0, len(items), 100):  # MLflow caps params per batch at 100
                self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metric values, at ``step`` (0 when not given)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, step or 0) for k, v in metrics.items()]
        with self._calling("log metrics"):
            for start in range(0, len(items), 1000):
                self._client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_fold_metrics(
        self, fold_rows: Sequence[Mapping[str, Any]], *, prefix: str = "fold_"
    ) -> None:
        """Log per-fold values as ``fold_<metric>`` with ``step=fold``.

        A row's ``fold`` value is the step when present, else its position; non-numeric
        values are skipped. The prefix keeps fold values apart from the summary (mean) metrics.
        """
        for position, row in enumerate(fold_rows):
            step = int(row.get("fold", position))
            values = {
                f"{prefix}{k}": float(v)
                for k, v in row.items()
                if k != "fold" and isinstance(v, int | float) and not isinstance(v, bool)
            }
            self.log_metrics(values, step=step)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Copy a local file (or folder) into the run's artifacts."""
        local = Path(path)
        if not local.exists():
            raise StoreError(
                "cannot log a missing artifact", path=str(local), hint="write the file first"
            )
        with self._calling(f"log artifact {local.name}"):
            if local.is_dir():
                self._client.log_artifacts(self.run_id, str(local), artifact_path)
            else:
                self._client.log_artifact(self.run_id, str(local), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        """Write ``text`` as the artifact file ``name`` (e.g. ``lineage.json``)."""
        with self._calling(f"log {name}"):
            self._client.log_text(self.run_id, text, name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values as strings)."""
        from mlflow.entities import RunTag

        with self._calling("set tags"):
            self._client.log_batch(
                self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()]
            )

    def log_model(
        self,
        model: Any,
        *,
        signature_from: tuple[Any, Any] | None = None,
        input_example: Any = None,
        name: str = "model",
    ) -> str:
        """Log a fitted scikit-learn model (flavour ``sklearn``); returns its ``models:/`` URI.

        ``signature_from=(X_sample, y_pred_sample)`` infers the input / output signature;
        ``input_example`` (a few rows) is stored beside it. Pip requirements are pinned from
        the installed versions of the packages the model is built from: no network. The model
        is stored with skops, trusting the types it is made of (see :func:`serialization`).
        """
        mlflow = import_mlflow()
        from mlflow.models import infer_signature

        tracker = self.tracker
        with tracker.mlflow_scope(), store_errors(f"log model {name}", tracker.tracking_uri):
            signature = infer_signature(*signature_from) if signature_from is not None else None
            logged = self._client.create_logged_model(
                tracker.experiment_id, name=name, source_run_id=self.run_id
            )
            info = mlflow.sklearn.log_model(
                model,
                name=name,
                model_id=logged.model_id,
                run_id=self.run_id,
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements(model),
                **serialization(model),
            )
            self._client.finalize_logged_model(logged.model_id, "READY")
        return str(info.model_uri)
