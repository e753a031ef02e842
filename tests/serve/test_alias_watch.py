"""Hot swap: an alias moves, the new version loads in the background and is swapped in under
load with zero failed requests; a version that cannot load leaves the old one serving."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.serve.churn_project import MODEL, ChurnProject, make_churn_project

from loopline.config.serving import ServedModelConfig
from loopline.errors import RegistryError
from loopline.registry import VersionInfo
from loopline.serve.alias_watch import AliasWatcher
from loopline.serve.model_host import ModelHost


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ChurnProject:
    return make_churn_project(tmp_path_factory.mktemp("swap") / "project")


@pytest.fixture
def champion(project: ChurnProject) -> Iterator[Any]:
    """Move ``champion``; it points back at version 1 after the test."""
    client = project.registry.tracker.client

    def move(version: str) -> None:
        client.set_registered_model_alias(MODEL, "champion", version)

    yield move
    move("1")


def test_check_now_loads_then_follows_the_alias(project: ChurnProject, champion: Any) -> None:
    swaps: list[tuple[str, str]] = []
    watcher: AliasWatcher[str] = AliasWatcher(
        project.registry,
        MODEL,
        "champion",
        load=lambda info: f"model-{info.version}",
        on_swap=lambda info, loaded: swaps.append((info.version, loaded)),
    )
    assert watcher.check_now()
    assert not watcher.check_now()  # nothing moved
    champion("2")
    assert watcher.check_now()
    assert swaps == [("1", "model-1"), ("2", "model-2")]
    assert watcher.version == "2"


def test_a_failed_load_keeps_the_old_version_and_is_retried(
    project: ChurnProject, champion: Any
) -> None:
    broken = {"2"}
    swaps: list[str] = []

    def load(info: VersionInfo) -> str:
        if info.version in broken:
            raise RuntimeError(f"artifact of version {info.version} is gone")
        return info.version

    watcher: AliasWatcher[str] = AliasWatcher(
        project.registry, MODEL, "champion", load=load, on_swap=lambda i, m: swaps.append(m)
    )
    watcher.check_now()
    champion("2")
    assert not watcher.check_now()
    assert watcher.version == "1"
    assert "artifact of version 2 is gone" in (watcher.last_error or "")
    with pytest.raises(RuntimeError):
        watcher.check_now(raise_errors=True)
    broken.clear()  # fixed: the next poll loads it
    assert watcher.check_now()
    assert swaps == ["1", "2"]
    assert watcher.last_error is None


def test_a_missing_alias_is_an_error_not_a_crash(project: ChurnProject) -> None:
    watcher: AliasWatcher[str] = AliasWatcher(
        project.registry, MODEL, "gone", load=lambda i: i.version, on_swap=lambda i, m: None
    )
    assert not watcher.check_now()
    assert "no 'gone' version" in (watcher.last_error or "")
    with pytest.raises(RegistryError):
        watcher.check_now(raise_errors=True)
    with pytest.raises(ValueError, match="'poll_interval' parameter"):
        AliasWatcher(project.registry, MODEL, "x", load=str, on_swap=print, poll_interval=0)


def test_the_thread_polls_the_alias(project: ChurnProject, champion: Any) -> None:
    seen: list[str] = []
    watcher: AliasWatcher[str] = AliasWatcher(
        project.registry,
        MODEL,
        "champion",
        load=lambda info: info.version,
        on_swap=lambda info, loaded: seen.append(loaded),
        poll_interval=0.05,
    )
    watcher.check_now()
    watcher.start()
    champion("2")
    deadline = time.monotonic() + 10
    while watcher.version != "2" and time.monotonic() < deadline:
        time.sleep(0.02)
    watcher.close()
    assert seen == ["1", "2"]


class Load:
    """Callers predicting continuously on their own event loop in a thread."""

    def __init__(self, host: ModelHost, rows: list[dict[str, Any]], callers: int = 8) -> None:
        self.host = host
        self.rows = rows
        self.callers = callers
        self.stop = threading.Event()
        self.swapped = threading.Event()  # set once the new version answers
        self.results: list[tuple[bool, str]] = []  # (sent after the swap, version)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()))

    async def _caller(self, i: int) -> None:
        while not self.stop.is_set():
            after = self.swapped.is_set()
            try:
                rows = self.rows[i : i + 1 + i % 3]
                result = await self.host.predict(MODEL, self.host.parse(MODEL, rows))
            except Exception as exc:  # noqa: BLE001 - every failure is what the test counts
                self.errors.append(exc)
            else:
                self.results.append((after, result.version))
            await asyncio.sleep(0)

    async def _main(self) -> None:
        await asyncio.gather(*(self._caller(i) for i in range(self.callers)))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 20
        while len(self.results) + len(self.errors) < count and time.monotonic() < deadline:
            time.sleep(0.01)


def test_hot_swap_under_load_drops_no_request(project: ChurnProject, champion: Any) -> None:
    host = ModelHost(
        project.registry, [ServedModelConfig(name=MODEL)], poll_interval=60, max_rows=10
    )
    host.start()
    old = host.model(MODEL)
    with Load(host, project.rows(20)) as load:
        load.wait_for(200)
        champion("2")
        assert host.check_now()  # loads and warms version 2 while version 1 answers
        load.swapped.set()
        start = len(load.results)
        load.wait_for(start + 200)
    host.close()
    assert load.errors == []
    versions = [version for _, version in load.results]
    assert set(versions) == {"1", "2"}
    assert {version for after, version in load.results if after} == {"2"}
    assert old.batcher.closed  # version 1 is no longer used by anything: its thread ended
    assert host.served()[0]["version"] == "2"


def test_a_broken_new_version_keeps_the_old_one_serving(
    project: ChurnProject, champion: Any, tmp_path: Path
) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    client = project.registry.tracker.client
    broken = client.create_model_version(MODEL, str(empty), run_id=None)
    host = ModelHost(
        project.registry, [ServedModelConfig(name=MODEL)], poll_interval=60, max_rows=10
    )
    host.start()
    with Load(host, project.rows(20), callers=4) as load:
        load.wait_for(50)
        champion(str(broken.version))
        assert not host.check_now()
        start = len(load.results)
        load.wait_for(start + 50)
    (entry,) = host.served()
    host.close()
    assert load.errors == []
    assert {version for _, version in load.results} == {"1"}
    assert entry["version"] == "1"
    assert f"could not load version {broken.version} of 'churn'" in entry["error"]


def test_a_swapped_in_version_is_frozen_out_of_garbage_collection(
    project: ChurnProject, champion: Any
) -> None:
    gc.unfreeze()
    loaded: list[object] = []
    watcher: AliasWatcher[list[object]] = AliasWatcher(
        project.registry,
        MODEL,
        "champion",
        load=lambda info: [info.version],  # a container: tracked by the collector
        on_swap=lambda info, model: loaded.append(model),
    )
    assert gc.get_freeze_count() == 0
    assert watcher.check_now()
    assert gc.get_freeze_count() > 0
    gc.unfreeze()  # leave the test process as it was
