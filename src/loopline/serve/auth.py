"""Who is calling: API keys (stored as SHA-256 digests) and JWT bearer tokens.

A key is sent as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``; a JWT (when
``serve.auth.jwt`` is set) as ``Authorization: Bearer TOKEN``. Missing credentials get 401
with ``WWW-Authenticate``, wrong ones 403. With no keys and no JWT configured everyone is
the ``anonymous`` caller (local use).

>>> from loopline.config.serving import AuthConfig
>>> auth = Authenticator(AuthConfig.model_validate(
...     {"keys": [{"name": "ci", "sha256": key_digest("s3cret")}]}))
>>> auth.authenticate({"x-api-key": "s3cret"})
Caller(name='ci', kind='key', rate_limit=None, burst=None)
>>> auth.authenticate({"authorization": "Bearer wrong"})
Traceback (most recent call last):
...
fastapi.exceptions.HTTPException: 403: invalid API key or token
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from fastapi import HTTPException, Request

from loopline.config.serving import ApiKeyConfig, AuthConfig
from loopline.serve.rate_limit import TokenBucketLimiter, default_burst, retry_after

__all__ = [
    "ANONYMOUS",
    "AccessGate",
    "Authenticator",
    "Caller",
    "caller",
    "credentials",
    "key_digest",
    "new_api_key",
]

CallerKind = Literal["key", "jwt", "anonymous"]
CHALLENGE = 'Bearer realm="loopline", ApiKey realm="loopline" header="X-API-Key"'


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: key name, ``jwt:SUBJECT`` or ``anonymous``, and its limit."""

    name: str
    kind: CallerKind
    rate_limit: float | None = None
    burst: int | None = None


ANONYMOUS = Caller("anonymous", "anonymous")


def key_digest(key: str) -> str:
    """The SHA-256 hex digest of ``key``: what ``loopline.yaml`` stores."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    """A fresh random key (256 bits, URL-safe): ``ll_`` + 43 characters."""
    return "ll_" + secrets.token_urlsafe(32)


def _missing() -> HTTPException:
    return HTTPException(
        401,
        detail="missing credentials: send X-API-Key or Authorization: Bearer",
        headers={"WWW-Authenticate": CHALLENGE},
    )


def _refused(detail: str = "invalid API key or token") -> HTTPException:
    return HTTPException(403, detail=detail)


class Authenticator:
    """Checks the credentials of one request against ``serve.auth``."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.enabled = config.enabled
        self.public_paths = frozenset(config.public_paths)
        self._keys: list[tuple[bytes, ApiKeyConfig]] = [(k.sha256.encode(), k) for k in config.keys]
        self._jwt = config.jwt
        self._jwt_secret = config.jwt.secret.get_secret_value() if config.jwt else ""

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller named by ``headers`` (lower-case names); raises 401 / 403."""
        if not self.enabled:
            return ANONYMOUS
        key = headers.get("x-api-key")
        if key is not None:
            return self._by_key(key)
        authorization = headers.get("authorization")
        if authorization is None:
            raise _missing()
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _missing()
        if self._jwt is not None and credential.count(".") == 2:
            return self._by_token(credential)
        return self._by_key(credential)

    def _by_key(self, key: str) -> Caller:
        digest = key_digest(key).encode()
        found: ApiKeyConfig | None = None
        for stored, spec in self._keys:  # every key compared: no early exit to time
            if hmac.compare_digest(stored, digest):
                found = spec
        if found is None:
            raise _refused()
        return Caller(found.name, "key", found.rate_limit, found.burst)

    def _by_token(self, token: str) -> Caller:
        assert self._jwt is not None
        required = ["exp"]
        if self._jwt.audience is not None:
            required.append("aud")
        if self._jwt.issuer is not None:
            required.append("iss")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=self._jwt.algorithms,
                audience=self._jwt.audience,
                issuer=self._jwt.issuer,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _refused("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise _refused(f"invalid token: {exc}") from exc
        subject = claims.get("sub")
        name = f"jwt:{subject}" if isinstance(subject, str) and subject else "jwt"
        return Caller(name, "jwt", self._jwt.rate_limit, None)


class AccessGate:
    """Authentication plus the caller's rate limit: the check in front of every route.

    ``serve.auth.public_paths`` pass without credentials (and without a limit).
    """

    def __init__(self, config: AuthConfig, limiter: TokenBucketLimiter | None = None) -> None:
        self.authenticator = Authenticator(config)
        self.limiter = limiter if limiter is not None else TokenBucketLimiter()
        self.public_paths = frozenset(config.public_paths)

    def check(self, path: str, headers: Mapping[str, str]) -> Caller:
        """The caller, or an HTTP error: 401 / 403 (credentials), 429 (rate limit)."""
        if path in self.public_paths:
            return ANONYMOUS
        who = self.authenticator.authenticate(headers)
        if who.rate_limit is not None:
            burst = default_burst(who.rate_limit, who.burst)
            wait = self.limiter.acquire(f"{who.kind}:{who.name}", rate=who.rate_limit, burst=burst)
            if wait > 0:
                raise HTTPException(
                    429,
                    detail=f"rate limit of {who.rate_limit:g} requests/s exceeded",
                    headers={"Retry-After": str(retry_after(wait))},
                )
        return who


_CREDENTIALS = frozenset({b"x-api-key", b"authorization"})


def credentials(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The credential headers of an ASGI scope's header list (the first of each name):
    all :class:`Authenticator` reads, without building a ``Headers`` object per request.

    >>> credentials([(b"x-api-key", b"k1"), (b"accept", b"*/*"), (b"x-api-key", b"k2")])
    {'x-api-key': 'k1'}
    """
    found: dict[str, str] = {}
    for name, value in raw:
        if name in _CREDENTIALS:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


async def caller(request: Request) -> Caller:
    """FastAPI dependency: who calls (401 / 403 / 429 when refused); kept in
    ``request.state.caller`` for the access log."""
    gate: AccessGate = request.app.state.access
    who = gate.check(request.scope["path"], credentials(request.scope["headers"]))
    request.state.caller = who
    return who
