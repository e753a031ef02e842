"""Rate limits: token buckets per key / token subject, 429 with Retry-After, bounded memory."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from loopline.config import config_from_dict
from loopline.serve.app import create_app
from loopline.serve.auth import key_digest
from loopline.serve.rate_limit import TokenBucketLimiter, default_burst, retry_after

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

SECRET = "a-shared-secret-of-at-least-32-bytes!!"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(clock=clock)
    assert [limiter.acquire("a", rate=2.0, burst=3) for _ in range(4)] == [0, 0, 0, 0.5]
    assert limiter.acquire("b", rate=2.0, burst=3) == 0  # keys are independent
    clock.now = 0.5
    assert limiter.acquire("a", rate=2.0, burst=3) == 0
    assert limiter.acquire("a", rate=2.0, burst=3) == pytest.approx(0.5)
    clock.now = 100.0  # refills up to the burst, not beyond
    assert [limiter.acquire("a", rate=2.0, burst=3) for _ in range(4)][-1] > 0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after(w) for w in (0.001, 0.5, 1.0, 1.01, 7.2)] == [1, 1, 1, 2, 8]
    assert default_burst(0.5, None) == 1
    assert default_burst(10, None) == 20
    assert default_burst(10, 3) == 3


def test_memory_is_bounded_idle_buckets_go_first() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(max_buckets=10, clock=clock)
    for i in range(5):
        limiter.acquire(f"busy{i}", rate=0.001, burst=1)  # empty for a long time
    for i in range(100):
        limiter.acquire(f"idle{i}", rate=1000.0, burst=1)
        clock.now += 1.0
        assert len(limiter) <= 10
    # the busy buckets survived: still empty
    assert all(limiter.acquire(f"busy{i}", rate=0.001, burst=1) > 0 for i in range(5))


def test_memory_stays_bounded_when_every_bucket_is_busy() -> None:
    limiter = TokenBucketLimiter(max_buckets=10, clock=Clock())
    for i in range(100):
        limiter.acquire(f"k{i}", rate=0.001, burst=1)
        assert len(limiter) <= 10


def test_threads_never_take_more_than_the_burst() -> None:
    limiter = TokenBucketLimiter(clock=Clock())
    allowed = []

    def work() -> None:
        allowed.append(sum(limiter.acquire("k", rate=1.0, burst=500) == 0 for _ in range(1000)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 500


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder: Path = tmp_path_factory.mktemp("limits")
    auth = {
        "keys": [
            {"name": "slow", "sha256": key_digest("slow-key"), "rate_limit": 0.01, "burst": 2},
            {"name": "free", "sha256": key_digest("free-key")},
        ],
        "jwt": {"secret": SECRET, "rate_limit": 0.01},
    }
    cfg = config_from_dict({"project": "shop", "serve": {"auth": auth}}, project_dir=folder)
    with TestClient(create_app(cfg)) as client:
        yield client


def test_429_with_retry_after_past_the_burst(client: TestClient) -> None:
    slow = {"X-API-Key": "slow-key"}
    assert [client.get("/v1/models", headers=slow).status_code != 429 for _ in range(2)] == [
        True,
        True,
    ]
    limited = client.get("/v1/models", headers=slow)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["request_id"] == limited.headers["x-request-id"]
    for _ in range(5):  # a key without a limit is not limited
        assert client.get("/v1/models", headers={"X-API-Key": "free-key"}).status_code != 429
    assert client.get("/health/live").status_code == 200  # public paths are not limited


def test_tokens_are_limited_per_subject(client: TestClient) -> None:
    def get(subject: str) -> int:
        token = jwt.encode({"sub": subject, "exp": time.time() + 60}, SECRET, algorithm="HS256")
        response = client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
        status: int = response.status_code
        return status

    assert [get("alice") for _ in range(3)][-1] == 429  # default burst: 1
    assert get("bob") != 429
