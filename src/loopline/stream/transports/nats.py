"""NATS JetStream transport: partitioned subjects, durable pull consumers, explicit acks.

Messages live in one stream whose subjects are ``<subject_prefix>.<partition>``; a device's
messages always go to partition :func:`partition_of` (a stable CRC-32, the same in every
process). Worker ``w`` of ``n`` reads partitions ``p % n == w``, each through a durable pull
consumer ``<durable>-p<p>``, so a restarted worker continues where it stopped and
unacknowledged messages come back after ``ack_wait``. ``Nats-Msg-Id`` drops a re-published
message inside the stream's duplicate window.

nats-py is asyncio: the transport runs one private event loop in a daemon thread and offers
the synchronous :class:`~loopline.stream.transport.Transport` methods on top of it. Each
partition keeps one pull request of at most ``fetch_batch`` messages outstanding, so at most
``fetch_batch`` messages per partition wait in memory, and the worker's consumers share
``max_ack_pending``, so it never holds more unacked messages than that. Pull requests
expire after 1 s, so :meth:`NatsTransport.close` can wait for them and NAK what it holds: a
successor gets those messages at once instead of after ``ack_wait``. Publishing is
asynchronous: up to 5,000 publishes wait for their PubAck, :meth:`NatsTransport.flush`
waits for them all.

>>> partition_of("d0007", 8), partition_subject_of("loopline.sensors", 3)
(5, 'loopline.sensors.3')
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from loopline.config.streams import NatsTransportConfig, TlsOptions
from loopline.errors import MissingDependencyError, TransportError
from loopline.stream.transport import Delivery
from loopline.stream.transports.jetstream_publisher import JetStreamPublisher

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext, api
except ImportError as exc:  # pragma: no cover - the stream extra is not installed
    raise MissingDependencyError("nats-py", "stream") from exc

__all__ = ["NatsTransport", "partition_of", "partition_subject_of"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
_PUBLISH_WINDOW = 5_000
_PULL_EXPIRES = 1.0  # short, so close() can wait for the outstanding pulls to end


def partition_of(device: str, partitions: int) -> int:
    """The partition of ``device``: CRC-32 of its UTF-8 bytes modulo ``partitions``.

    Stable across processes and Python versions (unlike ``hash``).

    >>> partition_of("d0001", 4) == partition_of("d0001", 4)
    True
    """
    return zlib.crc32(device.encode("utf-8")) % partitions


def partition_subject_of(prefix: str, partition: int) -> str:
    """The subject of ``partition`` under ``prefix``."""
    return f"{prefix}.{partition}"


@dataclass(slots=True)
class _Partition:
    """Pull state of one partition's durable consumer (touched only on the loop thread)."""

    number: int
    consumer: str
    buffer: deque[Delivery] = field(default_factory=deque)
    owed: int = 0  # messages the outstanding pull request may still deliver
    request: int = 0  # id of the outstanding pull request, 0 when none
    deadline: float = 0.0  # loop time after which that request is presumed lost


class NatsTransport:
    """Publish to and consume JetStream partitions (see the module docstring)."""

    def __init__(self, config: NatsTransportConfig) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._parts: dict[int, _Partition] = {}
        self._inbox = ""
        self._sub: Subscription | None = None
        self._ready: asyncio.Event | None = None
        self._cursor = 0
        self._request_seq = 0
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # handed out by receive, not yet acked (ack subject -> message): NAKed on close
        self._handed: dict[str, Msg] = {}
        self._handed_limit = 2 * config.max_ack_pending + 1000
        self._publisher: JetStreamPublisher | None = None
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Connect, then create the stream (or update its subjects / duplicate window)."""
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="loopline-nats", daemon=True)
        self._thread.start()
        try:
            self._call(self._connect(), 30.0)
            self._call(self._ensure_stream(), 30.0)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """NAK unacked and prefetched messages (a successor gets them now) and disconnect."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown(), 15.0)
        except TransportError as exc:
            logger.warning("NATS transport did not close cleanly: %s", exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10.0)
            loop.close()
            self._loop = self._thread = None
            self._closing = False
            self._nc = self._js = None
            self._parts, self._sub, self._publisher, self._watchdog = {}, None, None, None

    def __enter__(self) -> NatsTransport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API
    def partition_subject(self, partition: int) -> str:
        """The subject of ``partition``, e.g. ``loopline.sensors.3``."""
        return partition_subject_of(self.config.subject_prefix, partition)

    @property
    def partitions(self) -> list[int]:
        """The partitions this worker consumes (``p % workers == worker``)."""
        return [
            p
            for p in range(self.config.partitions)
            if p % self.config.workers == self.config.worker
        ]

    def publish(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> None:
        """Queue one JetStream publish; blocks while 5,000 wait for their acknowledgement."""
        self._open_publisher().publish(topic, payload, msg_id)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every publish so far is acknowledged; raise if any failed."""
        publisher = self._open_publisher()
        self._call(publisher.flush(timeout), timeout + 5.0)

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, round-robin over the partitions; waits at most
        ``timeout`` seconds for the first and returns ``[]`` when none came."""
        self._require_loop()
        if max_messages < 1:
            return []
        return self._call(self._receive(max_messages, timeout), timeout + 30.0)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge ``deliveries`` (explicit ``+ACK``; repeated acks are ignored)."""
        if deliveries:
            self._require_loop()
            self._call(self._ack([d.token for d in deliveries]), 15.0)

    def pending(self) -> int:
        """Messages pulled from the broker but not yet handed out by :meth:`receive`."""
        return sum(len(part.buffer) for part in list(self._parts.values()))

    def delete_stream(self) -> None:
        """Delete the configured stream and its consumers (tests, teardown)."""
        self._require_loop()
        self._call(self._delete_stream(), 15.0)

    # ------------------------------------------------------------------ sync → loop
    @property
    def _safe_url(self) -> str:
        parts = urlsplit(self.config.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise TransportError("the NATS transport is not open", hint="call open() first")
        return self._loop

    def _open_publisher(self) -> JetStreamPublisher:
        if self._publisher is None:
            raise TransportError("the NATS transport is not open", hint="call open() first")
        return self._publisher

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._require_loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise TransportError(
                f"NATS did not answer within {timeout:g}s",
                url=self._safe_url,
                hint="check that the NATS server is up",
            ) from exc

    # ------------------------------------------------------------------ connection
    async def _connect(self) -> None:
        cfg = self.config
        options: dict[str, Any] = {}
        if cfg.user:
            options["user"] = cfg.user
        if cfg.password:
            options["password"] = cfg.password.get_secret_value()
        if cfg.token:
            options["token"] = cfg.token.get_secret_value()
        if cfg.tls:
            options["tls"] = _ssl_context(cfg.tls)
        nc = Client()
        try:
            await nc.connect(
                cfg.url,
                name="loopline",
                connect_timeout=5,
                reconnect_time_wait=1,
                max_reconnect_attempts=1,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                pending_size=8 * 1024 * 1024,
                **options,
            )
        except _NATS_ERRORS as exc:
            raise TransportError(
                f"cannot connect to NATS: {exc!r}",
                url=self._safe_url,
                hint="start nats-server with -js, or fix transport.url / credentials / tls",
            ) from exc
        nc.options["max_reconnect_attempts"] = -1  # once connected, ride out broker restarts
        self._nc = nc
        self._js = nc.jetstream()
        self._ready = asyncio.Event()
        self._publisher = JetStreamPublisher(
            asyncio.get_running_loop(), stream=cfg.stream, window=_PUBLISH_WINDOW
        )
        await self._publisher.start(nc)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _ensure_stream(self) -> None:
        cfg, js = self.config, self._jetstream()
        subjects = [f"{cfg.subject_prefix}.*"]
        max_age = cfg.max_age or None
        try:
            try:
                info = await js.stream_info(cfg.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(
                    api.StreamConfig(
                        name=cfg.stream,
                        subjects=subjects,
                        duplicate_window=cfg.dedupe_window,
                        max_age=max_age,
                        storage=api.StorageType.FILE,
                    )
                )
                logger.info("created JetStream stream %s on %s", cfg.stream, subjects[0])
                return
            current = info.config
            if (
                sorted(current.subjects or []) != subjects
                or abs((current.duplicate_window or 0.0) - cfg.dedupe_window) > 1e-3
                or abs((current.max_age or 0.0) - (max_age or 0.0)) > 1e-3
            ):
                current.subjects, current.duplicate_window = subjects, cfg.dedupe_window
                current.max_age = max_age
                await js.update_stream(current)
                logger.info("updated JetStream stream %s", cfg.stream)
        except nats.js.errors.APIError as exc:
            raise TransportError(
                f"cannot create or update JetStream stream: {exc.description}",
                stream=cfg.stream,
                hint="another stream may already hold these subjects; pick another subject_prefix",
            ) from exc
        except _NATS_ERRORS as exc:
            raise TransportError(
                f"JetStream is not available: {exc!r}",
                url=self._safe_url,
                hint="start nats-server with -js (JetStream enabled)",
            ) from exc

    async def _ensure_consumers(self) -> None:
        if self._parts:
            return
        cfg, js = self.config, self._jetstream()
        parts: dict[int, _Partition] = {}
        owned = self.partitions
        # max_ack_pending bounds the worker: its consumers share it (remainder to the first)
        share, extra = divmod(cfg.max_ack_pending, len(owned))
        for i, p in enumerate(owned):
            name = f"{cfg.durable}-p{p}"
            max_ack_pending = max(1, share + (i < extra))
            wanted = api.ConsumerConfig(
                durable_name=name,
                name=name,
                filter_subject=self.partition_subject(p),
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=cfg.ack_wait,
                max_ack_pending=max_ack_pending,
                deliver_policy=api.DeliverPolicy.ALL,
            )
            try:
                try:
                    info = await js.consumer_info(cfg.stream, name)
                except nats.js.errors.NotFoundError:
                    await js.add_consumer(cfg.stream, wanted)
                else:
                    have = info.config
                    if (have.ack_wait, have.max_ack_pending) != (cfg.ack_wait, max_ack_pending):
                        await js.add_consumer(cfg.stream, wanted)  # an update of a durable
            except nats.js.errors.APIError as exc:
                raise TransportError(
                    f"cannot create JetStream consumer: {exc.description}",
                    stream=cfg.stream,
                    consumer=name,
                    hint="delete the consumer if its filter subject changed",
                ) from exc
            except _NATS_ERRORS as exc:
                raise TransportError(
                    f"JetStream did not answer: {exc!r}",
                    url=self._safe_url,
                    hint="check that the NATS server is up; receive() will try again",
                ) from exc
            parts[p] = _Partition(p, name)
        self._parts = parts
        nc = self._client()
        self._inbox = nc.new_inbox()
        limit = max(65_536, 4 * cfg.fetch_batch * len(self._parts))
        self._sub = await nc.subscribe(
            f"{self._inbox}.>",
            cb=self._on_message,
            pending_msgs_limit=limit,
            pending_bytes_limit=1024 * 1024 * 1024,
        )
        for part in self._parts.values():
            await self._pull(part)

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise TransportError("the NATS transport is not open", hint="call open() first")
        return self._js

    def _client(self) -> Client:
        if self._nc is None:
            raise TransportError("the NATS transport is not open", hint="call open() first")
        return self._nc

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("NATS connection error on %s: %r", self._safe_url, exc)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        logger.warning("disconnected from NATS at %s; reconnecting", self._safe_url)

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS at %s", self._safe_url)
        for part in self._parts.values():  # pull requests died with the old connection
            part.request = part.owed = 0
            await self._pull(part)

    # ------------------------------------------------------------------ consuming
    async def _pull(self, part: _Partition) -> None:
        """Ask for as many messages as fit the partition's buffer, if no request is out."""
        nc = self._nc
        room = self.config.fetch_batch - len(part.buffer)
        if (
            self._closing
            or part.request
            or nc is None
            or not nc.is_connected
            or room < max(1, self.config.fetch_batch // 2)
        ):
            return
        self._request_seq += 1
        part.request, part.owed = self._request_seq, room
        part.deadline = asyncio.get_running_loop().time() + _PULL_EXPIRES + 2.0
        body = json.dumps({"batch": room, "expires": int(_PULL_EXPIRES * 1e9)}).encode()
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.config.stream}.{part.consumer}"
        try:
            await nc.publish(subject, body, reply=f"{self._inbox}.{part.number}.{part.request}")
        except _NATS_ERRORS as exc:
            logger.debug("pull request on %s failed: %r", part.consumer, exc)
            part.request = part.owed = 0

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get(api.Header.STATUS) if headers else None
        if status:  # the end of a pull request: 408 expired, 409 / 404 refused
            _, number, request = msg.subject.rsplit(".", 2)
            part = self._parts.get(int(number))
            if part is not None and part.request == int(request):
                part.request = part.owed = 0
                if status == "408":
                    await self._pull(part)
                else:
                    logger.debug("pull on %s: %s %s", part.consumer, status, headers)
                    asyncio.get_running_loop().call_later(0.25, self._repull, part)
            return
        part = self._parts.get(int(msg.subject.rsplit(".", 1)[1]))
        if part is None:
            return
        part.buffer.append(
            Delivery(
                payload=msg.data,
                topic=msg.subject,
                received_ns=time.time_ns(),
                token=msg,
                msg_id=headers.get("Nats-Msg-Id") if headers else None,
                redelivered=msg.metadata.num_delivered > 1,
            )
        )
        if part.owed > 0:
            part.owed -= 1
            if part.owed == 0:
                part.request = 0
        if self._ready is not None:
            self._ready.set()

    def _repull(self, part: _Partition) -> None:
        task = asyncio.get_running_loop().create_task(self._pull(part))
        self._tasks.add(task)  # a reference, so the task is not collected while it runs
        task.add_done_callback(self._tasks.discard)

    async def _receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        await self._ensure_consumers()
        loop, ready = asyncio.get_running_loop(), self._ready
        assert ready is not None
        deadline = loop.time() + timeout
        while True:
            out = self._take(max_messages)
            for part in self._parts.values():
                await self._pull(part)
            remaining = deadline - loop.time()
            if out or remaining <= 0:
                return out
            ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ready.wait(), remaining)

    def _take(self, max_messages: int) -> list[Delivery]:
        parts = list(self._parts.values())
        if not parts:
            return []
        start = self._cursor % len(parts)
        self._cursor += 1
        out: list[Delivery] = []
        for part in parts[start:] + parts[:start]:
            buffer = part.buffer
            while buffer and len(out) < max_messages:
                out.append(buffer.popleft())
        handed = self._handed
        for d in out:
            handed[d.token.reply] = d.token
        while len(handed) > self._handed_limit:  # never acked: forget the oldest
            del handed[next(iter(handed))]
        return out

    async def _ack(self, messages: list[Msg]) -> None:
        try:
            handed = self._handed
            for msg in messages:
                handed.pop(msg.reply, None)
                if not msg.is_acked:
                    await msg.ack()
            await self._client().flush(timeout=10)
        except _NATS_ERRORS as exc:
            raise TransportError(
                f"cannot acknowledge {len(messages)} JetStream messages: {exc!r}",
                url=self._safe_url,
                hint="unacknowledged messages are redelivered after ack_wait",
            ) from exc

    async def _watch(self) -> None:
        """Re-issue pull requests lost in a reconnect; fail publishes that were never acked."""
        while True:
            await asyncio.sleep(1.0)
            now = asyncio.get_running_loop().time()
            for part in self._parts.values():
                if part.request and now > part.deadline:
                    part.request = part.owed = 0
                    await self._pull(part)
            if self._publisher is not None:
                self._publisher.expire()

    # ------------------------------------------------------------------ teardown
    async def _shutdown(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        nc = self._nc
        if nc is None:
            return
        # JetStream 2.9 keeps serving a pull request until it expires, even to a dead inbox:
        # wait for ours to end and give back (NAK) what they and the buffers hold, so a
        # successor gets those messages now instead of after ack_wait.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _PULL_EXPIRES + 0.5
        while any(p.request for p in self._parts.values()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await self._nak_unacked()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except _NATS_ERRORS as exc:
                logger.debug("unsubscribe failed: %r", exc)
        if self._publisher is not None:
            try:
                await self._publisher.flush(5.0)
            except TransportError as exc:
                logger.warning("closing the NATS transport with unconfirmed publishes: %s", exc)
            self._publisher.stop()
        try:
            await nc.close()
        except _NATS_ERRORS as exc:
            logger.debug("close failed: %r", exc)

    async def _nak_unacked(self) -> None:
        """NAK what was handed out but not acked, then what was never handed out."""
        messages = list(self._handed.values())
        for part in self._parts.values():
            messages += [d.token for d in part.buffer]
            part.buffer.clear()
        self._handed.clear()
        for msg in messages:
            if not msg.is_acked:
                try:
                    await msg.nak()
                except _NATS_ERRORS as exc:
                    logger.debug("nak failed: %r", exc)
        with contextlib.suppress(*_NATS_ERRORS):
            await self._client().flush(timeout=5)

    async def _delete_stream(self) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._jetstream().delete_stream(self.config.stream)


def _ssl_context(tls: TlsOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure:
        context.check_hostname = False
    return context
