"""Live recommender state in Redis, shared by every replica of the server.

The same state as :class:`~loopline.serve.recommend.state.MemoryState`, in Redis (one key
prefix per recommender, ``loopline:rec:<model>:`` by default):

- ``<prefix>h:<user>``: a list, the user's recent events as JSON ``[item, weight, time]``,
  newest first (``LPUSH`` + ``LTRIM``);
- ``<prefix>c:<item>``: a sorted set, the item's live co-visitation counts
  (``ZINCRBY`` + ``ZREMRANGEBYRANK`` keep the ``neighbours`` largest);
- ``<prefix>t``: a sorted set of log-space trending scores (see the ``state`` module), at most
  ``trending_size`` members.

An event is one Lua script (one round trip, atomic); a recommendation reads everything it
needs with one more. The async methods (``arecord``, ``asnapshot``) run the same scripts
through a ``redis.asyncio`` client, made in the event loop that first awaits one of them and
closed by ``aclose`` in that loop (or by ``close`` from another thread). Histories and
co-visitation lists expire ``ttl`` seconds after their last update, which bounds Redis memory
by activity. Single Redis server (or a primary); Redis Cluster is not supported (the scripts
derive key names).

Example (not run here: it needs a Redis server)::

    state = RedisState("redis://127.0.0.1:6379/0", prefix="loopline:rec:movies:")
    state.record("u1", "m1", 1.0, time.time())
    state.snapshot("u1").history
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import numpy as np
import orjson

from loopline.errors import ServeError
from loopline.serve.recommend.state import (
    HistoryEntry,
    Snapshot,
    log_decay,
    log_increment,
)

__all__ = ["RedisState"]

log = logging.getLogger(__name__)

# KEYS: none (derived from the prefix). ARGV: prefix, user, item, weight, entry (JSON),
# history_size, neighbours, window, trending_size, log increment, ttl.
_RECORD = """
local p, user, item = ARGV[1], ARGV[2], ARGV[3]
local w = tonumber(ARGV[4])
local history_size, nb = tonumber(ARGV[6]), tonumber(ARGV[7])
local window, trending_size = tonumber(ARGV[8]), tonumber(ARGV[9])
local inc, ttl = tonumber(ARGV[10]), tonumber(ARGV[11])
local hkey = p .. 'h:' .. user
local mine = p .. 'c:' .. item
local history = redis.call('LRANGE', hkey, 0, -1)
local seen, distinct, paired = {}, 0, false
for _, raw in ipairs(history) do
  local other = cjson.decode(raw)[1]
  if not seen[other] then
    seen[other] = true
    distinct = distinct + 1
    if other ~= item then
      local theirs = p .. 'c:' .. other
      redis.call('ZINCRBY', theirs, w, item)
      redis.call('ZREMRANGEBYRANK', theirs, 0, -(nb + 1))
      redis.call('EXPIRE', theirs, ttl)
      redis.call('ZINCRBY', mine, w, other)
      paired = true
    end
    if distinct == window then break end
  end
end
if paired then
  redis.call('ZREMRANGEBYRANK', mine, 0, -(nb + 1))
  redis.call('EXPIRE', mine, ttl)
end
redis.call('LPUSH', hkey, ARGV[5])
redis.call('LTRIM', hkey, 0, history_size - 1)
redis.call('EXPIRE', hkey, ttl)
local tkey = p .. 't'
local old = redis.call('ZSCORE', tkey, item)
local new = inc
if old then
  old = tonumber(old)
  local m = math.max(old, inc)
  new = m + math.log(math.exp(old - m) + math.exp(inc - m))
end
redis.call('ZADD', tkey, string.format('%.17g', new), item)
redis.call('ZREMRANGEBYRANK', tkey, 0, -(trending_size + 1))
return 1
"""

# ARGV: prefix, user, window, trending n. Returns ONE JSON string (parsed in C by orjson,
# rather than thousands of RESP elements by redis-py's Python parser):
# {"h": [entry JSON, ...], "c": [[item, [member, score, ...]], ...], "t": [member, score, ...]}
# (Lua's cjson writes an empty table as {}: read as an empty list)
_SNAPSHOT = """
local p, user = ARGV[1], ARGV[2]
local window, n = tonumber(ARGV[3]), tonumber(ARGV[4])
local history = redis.call('LRANGE', p .. 'h:' .. user, 0, -1)
local seen, covisits, distinct = {}, {}, 0
for _, raw in ipairs(history) do
  if distinct == window then break end
  local item = cjson.decode(raw)[1]
  if not seen[item] then
    seen[item] = true
    distinct = distinct + 1
    covisits[#covisits + 1] = {item, redis.call('ZRANGE', p .. 'c:' .. item, 0, -1, 'WITHSCORES')}
  end
end
local trending = {}
if n > 0 then
  trending = redis.call('ZREVRANGE', p .. 't', 0, n - 1, 'WITHSCORES')
end
return cjson.encode({h = history, c = covisits, t = trending})
"""


class RedisState:
    """Recommender state in Redis (see the module docstring); thread-safe (connection pool).
    The async methods belong to one event loop at a time (see :meth:`aclose`)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "loopline:rec:",
        history_size: int = 50,
        neighbours: int = 50,
        window: int = 10,
        half_life: float = 3600.0,
        trending_size: int = 10_000,
        ttl: float = 30 * 86_400.0,
    ) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.history_size = history_size
        self.neighbours = neighbours
        self.window = window
        self.half_life = half_life
        self.trending_size = trending_size
        self.ttl = int(ttl)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._async_errors = (*self._errors, TimeoutError)  # TimeoutError: asyncio.timeout
        try:
            self._client: Any = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT)
            self._record = self._client.register_script(_RECORD)
            self._snapshot = self._client.register_script(_SNAPSHOT)
            self._client.ping()
        except (redis.RedisError, ValueError) as exc:
            raise ServeError(
                f"cannot reach the recommender state at {url}: {exc}",
                url=url,
                hint="start Redis or fix serve.recommender.state_url (omit it for in-process)",
            ) from exc
        # the async client, its loop and its two scripts: made by the first await
        self._async: tuple[Any, asyncio.AbstractEventLoop, Any, Any] | None = None
        self._closing: asyncio.Task[None] | None = None  # held: a running loop keeps weak refs

    def record(self, user: str, item: str, weight: float, timestamp: float) -> None:
        try:
            self._record(args=self._record_args(user, item, weight, timestamp))
        except self._errors as exc:
            raise ServeError(f"recommender state write failed: {exc}", url=self.url) from exc

    async def arecord(self, user: str, item: str, weight: float, timestamp: float) -> None:
        """:meth:`record`, awaiting the round trip."""
        _, _, script, _ = self._async_client()
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT):
                await script(args=self._record_args(user, item, weight, timestamp))
        except self._async_errors as exc:
            raise ServeError(f"recommender state write failed: {exc!r}", url=self.url) from exc

    def _record_args(
        self, user: str, item: str, weight: float, timestamp: float
    ) -> list[str | int | float]:
        entry = json.dumps([item, weight, timestamp], separators=(",", ":"))
        return [
            self.prefix,
            user,
            item,
            repr(float(weight)),
            entry,
            self.history_size,
            self.neighbours,
            self.window,
            self.trending_size,
            repr(log_increment(weight, timestamp, self.half_life)),
            self.ttl,
        ]

    def snapshot(self, user: str, *, trending: int = 100, now: float | None = None) -> Snapshot:
        now = time.time() if now is None else now
        try:
            raw = self._snapshot(args=[self.prefix, user, self.window, trending])
        except self._errors as exc:
            raise ServeError(f"recommender state read failed: {exc}", url=self.url) from exc
        return self._parse(raw, now)

    async def asnapshot(
        self, user: str, *, trending: int = 100, now: float | None = None
    ) -> Snapshot:
        """:meth:`snapshot`, awaiting the round trip."""
        now = time.time() if now is None else now
        _, _, _, script = self._async_client()
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT):
                raw = await script(args=[self.prefix, user, self.window, trending])
        except self._async_errors as exc:
            raise ServeError(f"recommender state read failed: {exc!r}", url=self.url) from exc
        return self._parse(raw, now)

    def _parse(self, raw: bytes, now: float) -> Snapshot:
        parsed = orjson.loads(raw)
        history = [
            HistoryEntry(str(item), float(weight), float(ts))
            for item, weight, ts in map(orjson.loads, parsed["h"] or ())
        ]
        # members are JSON strings already; zip / map / NumPy keep the loops in C (a
        # snapshot holds up to window x neighbours pairs, parsed on every request)
        covisits = {
            str(item): dict(zip(flat[::2], map(float, flat[1::2]), strict=True))
            for item, flat in ((item, flat or []) for item, flat in parsed["c"] or ())
        }
        flat = parsed["t"] or []
        scores = np.fromiter(map(float, flat[1::2]), dtype=np.float64, count=len(flat) // 2)
        decayed = np.exp(scores - log_decay(now, self.half_life)).tolist()
        trending = list(zip(flat[::2], decayed, strict=True))
        return Snapshot(history=history, covisits=covisits, trending=trending)

    def _async_client(self) -> tuple[Any, asyncio.AbstractEventLoop, Any, Any]:
        """The async client of the running loop (made on first use; one made for another
        loop is closed first)."""
        loop = asyncio.get_running_loop()
        made = self._async
        if made is not None and made[1] is loop:
            return made
        self._close_async()
        import redis.asyncio

        # no socket_timeout: redis-py would wrap every send in asyncio.wait_for (a task per
        # call); one asyncio.timeout around each call bounds it instead
        client = redis.asyncio.Redis.from_url(
            self.url, socket_timeout=None, socket_connect_timeout=SOCKET_TIMEOUT
        )
        made = (client, loop, client.register_script(_RECORD), client.register_script(_SNAPSHOT))
        self._async = made
        return made

    def clear(self) -> None:
        """Delete every key under the prefix (SCAN, not KEYS: safe on a busy server)."""
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=self.prefix.replace("*", r"\*") + "*", count=500):
            batch.append(key)
            if len(batch) == 500:
                self._client.delete(*batch)
                batch.clear()
        if batch:
            self._client.delete(*batch)

    def close(self) -> None:
        """Close the sync client, and the async one where this thread can: its loop runs in
        another thread (the server closing from a worker thread) or is stopped."""
        self._client.close()
        self._close_async()

    async def aclose(self) -> None:
        """Close the async client, from the event loop that used it."""
        made = self._async
        if made is not None and made[1] is asyncio.get_running_loop():
            self._async = None
            await made[0].aclose()
        else:
            self._close_async()

    def _close_async(self) -> None:
        made, self._async = self._async, None
        if made is None or made[1].is_closed():
            return  # never made, or its loop is gone (its sockets with it)
        client, loop = made[0], made[1]
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop.is_running() and running is not loop:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(SOCKET_TIMEOUT)
        elif running is None:
            loop.run_until_complete(client.aclose())
        else:  # called without await inside a loop: the loop closes it when it gets to it
            self._closing = loop.create_task(client.aclose())


SOCKET_TIMEOUT = 5.0
"""Seconds a Redis call may wait on the network before it fails."""
