"""Run search trials as Ray tasks, on a local Ray cluster or a remote one.

:class:`RayExecutor` is the ``executor`` that :func:`~loopline.train.search.search`
accepts: ``map(fn, items)`` runs ``fn(item)`` for every item as a Ray task (one CPU
each, OpenMP / MKL / OpenBLAS held to one thread) and returns the results in order.
``fn`` (for the search: a scorer holding ``X``, ``y`` and the folds) goes into the
object store once per ``map`` call, not once per task.

Addresses (``SearchConfig.ray_address``):

- ``None`` or ``"local"``: start a local Ray cluster (``num_cpus`` CPUs, all by default)
  and shut it down on exit;
- ``"auto"``: join the cluster this machine is part of (started by ``ray start``);
- ``"ray://head:10001"``: connect to a remote cluster through Ray Client.

Only a cluster or connection the executor opened is closed on exit; when Ray is already
initialised in this process (a notebook, a Ray job), the executor uses that connection
and leaves it open. A remote cluster needs loopline (with the ``train`` extra) installed
on its workers, as the tasks import it there.

Example (starts a local cluster, which takes seconds; needs ``loopline[ray]``)::

    with RayExecutor("local", num_cpus=2) as executor:
        executor.map(abs, [-1, 2, -3])  # [1, 2, 3]
        result = search(candidate, task, X, y, ..., executor=executor)

or from a job configuration, ``None`` meaning "no Ray"::

    with executor_for(job.search) as executor:
        result = search(..., search=job.search, executor=executor)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

from loopline.config.training import SearchConfig
from loopline.errors import LooplineError, MissingDependencyError, TrainError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

LOCAL = "local"
#: Environment of every task: one thread per native thread pool, as in the local search.
ONE_THREAD_ENV: dict[str, dict[str, str]] = {
    "env_vars": {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
}


LENIENT_HEALTH_CHECKS = {
    "health_check_period_ms": 5_000,
    "health_check_timeout_ms": 30_000,
    "health_check_failure_threshold": 20,
}
"""Ray's node health checks for a cluster loopline starts itself (on one machine)."""


class RayExecutor:
    """A context manager that maps a function over items as Ray tasks.

    ``address``: ``None`` / ``"local"`` start a local cluster of ``num_cpus`` CPUs
    (``num_cpus`` applies only there); ``"auto"`` or ``"ray://host:10001"`` connect to a
    running one. ``parallelism`` is the cluster's CPU count, read on entry.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.parallelism = 1
        self._open = False
        self._started = False  # this executor started (or connected) Ray: it shuts it down
        self._task_env: dict[str, Any] | None = None

    def __enter__(self) -> RayExecutor:
        ray = _import_ray()
        if ray.is_initialized():
            logger.info("Ray is already initialised in this process: using that connection")
            self._task_env = ONE_THREAD_ENV
        else:
            self._init(ray)
            self._started = True
        self._open = True
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        logger.info("Ray executor ready: %d CPUs", self.parallelism)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        if self._started:
            _import_ray().shutdown()
            self._started = False

    def _init(self, ray: Any) -> None:
        # The job-level runtime_env reaches the workers Ray starts for this job; a
        # task-level one would start a second set of workers.
        options: dict[str, Any] = {"log_to_driver": False, "runtime_env": ONE_THREAD_ENV}
        local = self.address in (None, LOCAL)
        if local:
            options.update(
                address=LOCAL,
                num_cpus=self.num_cpus,
                include_dashboard=False,
                # A busy laptop (or CI box) can stall the raylet for seconds; the default
                # health check then declares the node dead and the driver exits with it.
                _system_config=LENIENT_HEALTH_CHECKS,
            )
        else:
            options.update(address=self.address)
        try:
            ray.init(**options)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            raise TrainError(
                f"cannot {'start a local Ray cluster' if local else 'connect to Ray'}: {exc}",
                address=self.address or LOCAL,
                hint="use 'ray://HEAD:10001' for a remote cluster (Ray Client), 'auto' on a "
                "node of a cluster started with 'ray start', or 'local'",
            ) from exc

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, each call a Ray task; results in order.

        A task that raises ends in a :class:`TrainError` naming the task (the other
        tasks are cancelled); a loopline error keeps its fields and hint.
        """
        if not self._open:
            raise TrainError(
                "the Ray executor is not open",
                hint="use it as a context manager: 'with RayExecutor(address) as executor:'",
            )
        if not items:
            return []
        ray = _import_ray()
        remote = ray.remote(num_cpus=1)(_apply)
        if self._task_env is not None:
            remote = remote.options(runtime_env=self._task_env)
        shared = ray.put(fn)
        refs = [remote.remote(shared, item) for item in items]
        results: list[R] = []
        try:
            for index, ref in enumerate(refs):
                results.append(_get(ray, ref, index, fn))
        except BaseException:
            for ref in refs[len(results) :]:
                ray.cancel(ref)
            raise
        return results


@contextmanager
def executor_for(config: SearchConfig) -> Iterator[RayExecutor | None]:
    """A :class:`RayExecutor` for ``config.ray_address``, or None when it is not set."""
    if config.ray_address is None:
        yield None
        return
    with RayExecutor(config.ray_address) as executor:
        yield executor


def _apply(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def _get(ray: Any, ref: Any, index: int, fn: Callable[..., Any]) -> Any:
    from ray.exceptions import RayError, RayTaskError

    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, LooplineError):
            raise TrainError(
                f"Ray task {index} ({name}) failed: {cause.message}",
                hint=cause.hint,
                **{**cause.fields, "task": index},
            ) from cause
        raise TrainError(
            f"Ray task {index} ({name}) failed: {type(cause).__name__}: {cause}",
            task=index,
            hint="the task's traceback is chained above; the same call fails locally too",
        ) from cause
    except RayError as exc:
        raise TrainError(
            f"Ray task {index} ({name}) was lost: {type(exc).__name__}: {exc}",
            task=index,
            hint="a worker or node died (out of memory?); check 'ray status' and the "
            "Ray logs (/tmp/ray/session_latest/logs)",
        ) from exc


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray") from exc
    return ray
