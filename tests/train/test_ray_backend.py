"""Ray scale-out: a real local Ray cluster runs search trials as tasks.

Starting a local cluster takes ~10 s here, so one module-scoped cluster (2 CPUs) serves
most tests; the lifecycle test starts and stops its own before that one exists.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from loopline.config.training import CandidateConfig, SearchConfig
from loopline.errors import MissingDependencyError, TrainError
from loopline.train.ray_backend import RayExecutor, executor_for
from loopline.train.search import Executor, SearchResult, search

T = TypeVar("T")
R = TypeVar("R")
LOGISTIC_SPACE = {"C": {"float": [1e-3, 10.0], "log": True}}

pytestmark = pytest.mark.ray_cluster  # run in their own pytest process (Makefile)


class SerialExecutor:
    """The executor seam run in this process: the reference for batched Optuna."""

    def __init__(self, parallelism: int) -> None:
        self.parallelism = parallelism

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=240, n_features=12, n_informative=4, random_state=0)


@pytest.fixture(scope="module")
def ray() -> Any:
    return pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster(ray: Any) -> Iterator[RayExecutor]:
    with RayExecutor("local", num_cpus=2) as executor:
        yield executor


def _scaled(model: Any) -> Pipeline:
    return make_pipeline(StandardScaler(), model)


def _search(
    data: tuple[np.ndarray, np.ndarray],
    executor: Executor | None,
    candidate: CandidateConfig | None = None,
    **config: Any,
) -> SearchResult:
    X, y = data
    return search(
        candidate or CandidateConfig(name="logistic", search_space=LOGISTIC_SPACE),
        "binary",
        X,
        y,
        pipeline_factory=_scaled,
        splitter=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring="roc_auc",
        search=SearchConfig(**config),
        seed=3,
        executor=executor,
    )


def _without_durations(result: SearchResult) -> list[dict[str, Any]]:
    return [{k: v for k, v in trial.items() if k != "duration_s"} for trial in result.trials]


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(MissingDependencyError) as caught, RayExecutor("local"):
        pass
    assert caught.value.fields == {"package": "ray"}
    assert caught.value.hint == "pip install 'loopline[ray]'"


def test_map_outside_the_context_is_a_train_error() -> None:
    with pytest.raises(TrainError, match="not open"):
        RayExecutor("local").map(abs, [-1])


def test_no_ray_address_means_no_executor() -> None:
    with executor_for(SearchConfig()) as executor:
        assert executor is None


@pytest.mark.parametrize("method", ["random", "optuna"])
def test_timeout_is_checked_between_batches_of_parallelism(
    data: tuple[np.ndarray, np.ndarray], method: str
) -> None:
    result = _search(data, SerialExecutor(parallelism=2), method=method, n_trials=6, timeout_s=1e-9)
    assert [t["number"] for t in result.trials] == [0, 1]
    assert [t["state"] for t in result.trials] == ["complete", "complete"]


@pytest.mark.slow
def test_auto_without_a_running_cluster_is_a_train_error(
    ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(TrainError, match="cannot connect to Ray") as caught, RayExecutor("auto"):
        pass
    assert caught.value.fields == {"address": "auto"}
    assert not ray.is_initialized()


@pytest.mark.slow
def test_executor_stops_the_cluster_it_started_and_only_that_one(ray: Any) -> None:
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    with RayExecutor("local", num_cpus=1) as executor:
        assert ray.is_initialized()
        assert executor.parallelism == 1
        # Ray is up: a nested executor (even for another address) joins, leaves it running.
        with RayExecutor("auto") as nested:
            assert nested.map(abs, [-4]) == [4]
        assert ray.is_initialized()
    assert not ray.is_initialized()


@pytest.mark.slow
def test_map_returns_results_in_item_order(cluster: RayExecutor) -> None:
    def late_for_small(n: int) -> int:
        time.sleep(0.05 * (6 - n))  # the first items finish last
        return n * n

    assert cluster.parallelism == 2
    assert cluster.map(late_for_small, list(range(6))) == [0, 1, 4, 9, 16, 25]
    assert cluster.map(late_for_small, []) == []


@pytest.mark.slow
def test_tasks_run_with_one_thread_per_native_pool(cluster: RayExecutor) -> None:
    import os

    def env(name: str) -> str | None:
        return os.environ.get(name)

    names = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"]
    assert cluster.map(env, names) == ["1", "1", "1"]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "n_trials"), [("random", 5), ("grid", 3)])
def test_grid_and_random_search_through_ray_equal_the_sequential_search(
    cluster: RayExecutor, data: tuple[np.ndarray, np.ndarray], method: str, n_trials: int
) -> None:
    sequential = _search(data, None, method=method, n_trials=n_trials)
    distributed = _search(data, cluster, method=method, n_trials=n_trials)
    assert len(distributed.trials) == n_trials
    assert _without_durations(distributed) == _without_durations(sequential)
    assert distributed.best_params == sequential.best_params
    assert distributed.best_score == sequential.best_score
    assert distributed.method == sequential.method == method
    assert all(trial["duration_s"] > 0 for trial in distributed.trials)


@pytest.mark.slow
def test_batched_optuna_is_reproducible_for_a_seed_and_batch_size(
    cluster: RayExecutor, data: tuple[np.ndarray, np.ndarray]
) -> None:
    distributed = _search(data, cluster, method="optuna", n_trials=6)
    reference = _search(data, SerialExecutor(parallelism=2), method="optuna", n_trials=6)
    assert [t["number"] for t in distributed.trials] == list(range(6))
    assert [t["state"] for t in distributed.trials] == ["complete"] * 6
    assert _without_durations(distributed) == _without_durations(reference)
    assert distributed.best_score == max(t["score"] or -1 for t in distributed.trials)


@pytest.mark.slow
def test_an_exception_in_a_task_is_a_train_error_naming_the_task(cluster: RayExecutor) -> None:
    with pytest.raises(TrainError, match=r"Ray task 1 \(int\) failed: ValueError") as caught:
        cluster.map(int, ["1", "x", "3"])
    assert caught.value.fields == {"task": 1}
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.slow
def test_a_failing_fit_keeps_its_fold_and_hint_through_ray(
    cluster: RayExecutor, data: tuple[np.ndarray, np.ndarray]
) -> None:
    broken = CandidateConfig(name="logistic", params={"C": -1.0}, search_space={"tol": [1e-4]})
    with pytest.raises(TrainError, match="fitting failed on fold 0") as caught:
        _search(data, cluster, broken, method="grid")
    assert caught.value.fields == {"fold": 0, "task": 0}
    assert caught.value.hint == "check the candidate's params and search_space"
