"""Asynchronous JetStream publishing with a bounded window of unconfirmed messages.

A synchronous JetStream publish waits one round trip per message (a few thousand msg/s).
:class:`JetStreamPublisher` lets any thread queue publishes instead: they reach the event
loop in batches (one wake-up per batch), go out in order, each with its own reply subject,
and JetStream's PubAck settles them. At most ``window`` messages wait for their PubAck;
:meth:`JetStreamPublisher.publish` blocks while the window is full and
:meth:`JetStreamPublisher.flush` waits for all of them and reports failures once.
:class:`~loopline.stream.transports.nats.NatsTransport` owns one per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque

from loopline.errors import MissingDependencyError, TransportError

try:
    import nats.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import api
except ImportError as exc:  # pragma: no cover - the stream extra is not installed
    raise MissingDependencyError("nats-py", "stream") from exc

__all__ = ["JetStreamPublisher"]

_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


class JetStreamPublisher:
    """Publish from any thread to a JetStream stream over ``loop``'s NATS connection.

    ``stream`` names the stream in errors; ``timeout`` is how long :meth:`publish` waits
    for room in the window and how long a message may wait for its PubAck (see
    :meth:`expire`).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        stream: str,
        window: int = 5_000,
        timeout: float = 30.0,
    ) -> None:
        self.loop, self.stream, self.window, self.timeout = loop, stream, window, timeout
        self._slots = threading.BoundedSemaphore(window)
        self._outbox: list[tuple[str, bytes, str | None]] = []  # filled by caller threads
        self._outbox_lock = threading.Lock()
        self._sending: deque[tuple[str, bytes, str | None]] = deque()  # loop thread from here
        self._sender: asyncio.Task[None] | None = None
        self._nc: Client | None = None
        self._inbox = ""
        self._seq = 0
        self._inflight: dict[int, float] = {}  # token -> loop time sent
        self._settled = asyncio.Event()
        self._failures: list[str] = []

    async def start(self, nc: Client) -> None:
        """Subscribe to the PubAck inbox of connection ``nc`` (on the loop)."""
        self._nc = nc
        self._inbox = nc.new_inbox()
        await nc.subscribe(
            f"{self._inbox}.*", cb=self._on_puback, pending_msgs_limit=4 * self.window
        )

    def publish(self, subject: str, payload: bytes, msg_id: str | None) -> None:
        """Queue one message (any thread); ``msg_id`` becomes its ``Nats-Msg-Id``."""
        if not self._slots.acquire(timeout=self.timeout):
            raise TransportError(
                f"JetStream acknowledged no publish for {self.timeout:g}s",
                stream=self.stream,
                hint="check that the NATS server is up and the stream exists",
            )
        with self._outbox_lock:
            self._outbox.append((subject, payload, msg_id))
            wake = len(self._outbox) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._take_outbox)

    async def flush(self, timeout: float) -> None:
        """Wait until every queued message is settled; raise if any failed (on the loop)."""
        deadline = self.loop.time() + timeout
        while self._sending or self._inflight:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                for token in list(self._inflight):
                    self._settle(token, f"no acknowledgement within {timeout:g}s")
                break
            self._settled.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._settled.wait(), min(remaining, 0.05))
        failures, self._failures = self._failures, []
        if failures:
            raise TransportError(
                f"{len(failures)} JetStream publishes failed; first: {failures[0]}",
                stream=self.stream,
                hint="check that the stream exists and covers the subject; publish them again",
            )

    def expire(self) -> None:
        """Fail the messages whose PubAck is ``timeout`` overdue (lost in a reconnect)."""
        now = self.loop.time()
        for token, sent in list(self._inflight.items()):
            if now - sent > self.timeout:
                self._settle(token, f"no acknowledgement within {self.timeout:g}s")

    def stop(self) -> None:
        """Drop what was not sent and fail what is not confirmed (on the loop, at close)."""
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        while self._sending:
            self._sending.popleft()
            self._slots.release()
        for token in list(self._inflight):
            self._settle(token, "transport closed before the acknowledgement")

    def _take_outbox(self) -> None:
        with self._outbox_lock:
            batch, self._outbox = self._outbox, []
        self._sending.extend(batch)
        if self._sender is None or self._sender.done():
            self._sender = self.loop.create_task(self._send())

    async def _send(self) -> None:
        nc = self._nc
        if nc is None:
            raise TransportError("the JetStream publisher is not started", stream=self.stream)
        while self._sending:
            subject, payload, msg_id = self._sending.popleft()
            self._seq += 1
            token = self._seq
            self._inflight[token] = self.loop.time()
            try:
                await nc.publish(
                    subject,
                    payload,
                    reply=f"{self._inbox}.{token}",
                    headers={"Nats-Msg-Id": msg_id} if msg_id else None,
                )
            except _NATS_ERRORS as exc:
                self._settle(token, f"{subject}: {exc!r}")

    async def _on_puback(self, msg: Msg) -> None:
        token = int(msg.subject.rsplit(".", 1)[1])
        headers = msg.headers
        status = headers.get(api.Header.STATUS) if headers else None
        if headers and status:  # 503: no stream holds the subject
            self._settle(token, f"status {status} {headers.get(api.Header.DESCRIPTION, '')}")
        elif b'"error"' in msg.data:
            self._settle(token, str(json.loads(msg.data).get("error")))
        else:
            self._settle(token, None)

    def _settle(self, token: int, failure: str | None) -> None:
        if self._inflight.pop(token, None) is None:
            return
        self._slots.release()
        if failure is not None:
            self._failures.append(failure)
        if not self._inflight:
            self._settled.set()
