"""Auth: API keys (header or bearer, stored as SHA-256), JWT bearer tokens, 401 / 403."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi import HTTPException

from loopline.config import config_from_dict
from loopline.config.serving import AuthConfig
from loopline.serve.app import create_app
from loopline.serve.auth import Authenticator, Caller, key_digest, new_api_key

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

KEY = "ll_test-key-for-ci"
SECRET = "a-shared-secret-of-at-least-32-bytes!!"
AUTH: dict[str, Any] = {
    "keys": [{"name": "ci", "sha256": key_digest(KEY)}],
    "jwt": {"secret": SECRET, "audience": "loopline", "issuer": "https://id.example"},
}


def token(**claims: Any) -> str:
    base = {
        "sub": "alice",
        "aud": "loopline",
        "iss": "https://id.example",
        "exp": int(time.time()) + 60,
    }
    payload = {k: v for k, v in (base | claims).items() if v is not None}
    return jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def auth() -> Authenticator:
    return Authenticator(AuthConfig.model_validate(AUTH))


def refused(auth: Authenticator, headers: dict[str, str]) -> HTTPException:
    with pytest.raises(HTTPException) as info:
        auth.authenticate(headers)
    return info.value


def test_keys_are_random_and_stored_as_sha256() -> None:
    key = new_api_key()
    assert key.startswith("ll_")
    assert len(key) > 40
    assert new_api_key() != key
    assert key_digest(key) == hashlib.sha256(key.encode()).hexdigest()


def test_key_in_header_or_bearer(auth: Authenticator) -> None:
    assert auth.authenticate({"x-api-key": KEY}) == Caller("ci", "key")
    assert auth.authenticate({"authorization": f"Bearer {KEY}"}) == Caller("ci", "key")
    assert auth.authenticate({"authorization": f"bearer  {KEY}"}) == Caller("ci", "key")


def test_missing_credentials_are_401_with_a_challenge(auth: Authenticator) -> None:
    for headers in ({}, {"authorization": "Basic dXNlcjpwdw=="}, {"authorization": "Bearer"}):
        error = refused(auth, headers)
        assert error.status_code == 401
        assert error.headers is not None
        assert "Bearer" in error.headers["WWW-Authenticate"]


def test_wrong_key_is_403(auth: Authenticator) -> None:
    assert refused(auth, {"x-api-key": "nope"}).status_code == 403
    assert refused(auth, {"authorization": "Bearer nope"}).status_code == 403


def test_valid_jwt_names_its_subject(auth: Authenticator) -> None:
    who = auth.authenticate({"authorization": f"Bearer {token()}"})
    assert who == Caller("jwt:alice", "jwt")


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"exp": None}, "exp"),
        ({"aud": None}, "aud"),
    ],
)
def test_bad_jwt_is_403(auth: Authenticator, claims: dict[str, Any], says: str) -> None:
    error = refused(auth, {"authorization": f"Bearer {token(**claims)}"})
    assert error.status_code == 403
    assert says in str(error.detail).lower()


def test_jwt_with_another_secret_is_403(auth: Authenticator) -> None:
    forged = jwt.encode(
        {"sub": "eve", "aud": "loopline", "iss": "https://id.example", "exp": time.time() + 60},
        "another-secret-that-is-also-32-bytes-long",
        algorithm="HS256",
    )
    assert refused(auth, {"authorization": f"Bearer {forged}"}).status_code == 403


def test_no_keys_and_no_jwt_is_open() -> None:
    assert Authenticator(AuthConfig()).authenticate({}) == Caller("anonymous", "anonymous")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder: Path = tmp_path_factory.mktemp("auth")
    cfg = config_from_dict({"project": "shop", "serve": {"auth": AUTH}}, project_dir=folder)
    with TestClient(create_app(cfg)) as client:
        yield client


def test_api_routes_need_credentials(client: TestClient) -> None:
    missing = client.get("/v1/models")
    assert missing.status_code == 401
    assert "Bearer" in missing.headers["www-authenticate"]
    assert missing.json()["request_id"] == missing.headers["x-request-id"]
    assert client.get("/v1/models", headers={"X-API-Key": "nope"}).status_code == 403
    predict = client.post("/v1/models/churn/predict", json={"row": {}})
    assert predict.status_code == 401


def test_api_routes_accept_keys_and_tokens(client: TestClient) -> None:
    for headers in (
        {"X-API-Key": KEY},
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"Bearer {token()}"},
    ):
        response = client.get("/v1/models", headers=headers)
        assert response.status_code in (200, 503), response.text  # 503 while starting
        assert response.status_code != 401
    expired = client.get(
        "/v1/models", headers={"Authorization": f"Bearer {token(exp=int(time.time()) - 120)}"}
    )
    assert expired.status_code == 403
    assert expired.json()["detail"] == "token expired"


def test_public_paths_need_no_credentials(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_openapi_declares_the_security_schemes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    assert schema["paths"]["/v1/models"]["get"]["security"]
    assert "security" not in schema["paths"]["/health/live"]["get"]
