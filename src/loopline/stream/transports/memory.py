"""An in-process transport: the embedded default when no broker runs (tests, demos).

A :class:`MemoryBroker` routes published messages to subscriptions by MQTT topic filters
(``+`` one level, ``#`` the rest). Transports that read the same filters share one
subscription and split its messages, like an MQTT shared subscription. A subscription is
created on a transport's first :meth:`MemoryTransport.receive` and then lives as long as
its broker, like a persistent session: messages handed out and not acked go back to the
front of it when their transport closes, so a reopened transport gets them again
(at-least-once). Messages published while no subscription matches wait in the broker's
backlog for the first one that does. Every queue is bounded by ``capacity``: a publisher
waits for room and raises :class:`~loopline.errors.TransportError` after
``publish_timeout`` seconds.

>>> from loopline.config.streams import MemoryTransportConfig
>>> broker = MemoryBroker(capacity=10)
>>> tx = MemoryTransport(MemoryTransportConfig(), broker=broker, topics=("sensors/#",))
>>> tx.open()
>>> tx.publish("sensors/s1/d1", b'{"t": 21.5}')
>>> [(d.topic, d.payload) for d in tx.receive(10, timeout=0.1)]
[('sensors/s1/d1', b'{"t": 21.5}')]
>>> tx.close()
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from loopline.config.streams import MemoryTransportConfig
from loopline.errors import TransportError
from loopline.stream.transport import Delivery

__all__ = ["MemoryBroker", "MemoryTransport", "topic_matches"]

_NAMED: dict[str, MemoryBroker] = {}
_NAMED_LOCK = threading.Lock()
_HOLDERS = itertools.count(1)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches an MQTT topic filter (``+`` one level, ``#`` the rest).

    As in MQTT, a wildcard at the first level does not match topics starting with ``$``.

    >>> topic_matches("sensors/+/temp", "sensors/d1/temp"), topic_matches("sensors/#", "sensors")
    (True, True)
    >>> topic_matches("sensors/+", "sensors/d1/temp"), topic_matches("#", "$SYS/load")
    (False, False)
    """
    if topic_filter == topic:
        return True
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    parts = topic_filter.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


@dataclass(slots=True)
class _Message:
    topic: str
    payload: bytes
    msg_id: str | None
    redelivered: bool = False


@dataclass(eq=False)
class _Subscription:
    filters: tuple[str, ...]
    queued: deque[tuple[int, _Message]] = field(default_factory=deque)
    in_flight: dict[int, tuple[_Message, int]] = field(default_factory=dict)

    def matches(self, topic: str) -> bool:
        return any(topic_matches(f, topic) for f in self.filters)

    def size(self) -> int:
        return len(self.queued) + len(self.in_flight)


class MemoryBroker:
    """Topic routing and bounded, at-least-once queues shared by :class:`MemoryTransport`.

    ``capacity`` bounds each subscription (queued plus handed out and not acked) and the
    backlog of messages no subscription matched yet.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"The 'capacity' parameter must be >= 1. Got {capacity} instead.")
        self.capacity = capacity
        self._cond = threading.Condition()
        self._subscriptions: dict[tuple[str, ...], _Subscription] = {}
        self._backlog: deque[_Message] = deque()
        self._seq = itertools.count(1)

    @classmethod
    def named(cls, name: str, capacity: int = 100_000) -> MemoryBroker:
        """The process-wide broker called ``name``, created on first use with ``capacity``."""
        with _NAMED_LOCK:
            broker = _NAMED.get(name)
            if broker is None:
                broker = _NAMED[name] = cls(capacity)
            return broker

    @staticmethod
    def forget_named(name: str | None = None) -> None:
        """Drop the named broker ``name`` (all of them when ``None``); tests call this."""
        with _NAMED_LOCK:
            if name is None:
                _NAMED.clear()
            else:
                _NAMED.pop(name, None)

    def publish(
        self, topic: str, payload: bytes, *, msg_id: str | None = None, timeout: float = 30.0
    ) -> None:
        """Queue a message for every matching subscription, waiting up to ``timeout`` for room."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                targets = [s for s in self._subscriptions.values() if s.matches(topic)]
                full = (
                    any(s.size() >= self.capacity for s in targets)
                    if targets
                    else len(self._backlog) >= self.capacity
                )
                if not full:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(
                        f"in-memory queue full: {self.capacity} messages not yet acked",
                        topic=topic,
                        hint="the reader is slower than the publisher or stopped acking; "
                        "raise 'capacity' or slow the publisher",
                    )
                self._cond.wait(left)
            message = _Message(topic, payload, msg_id)
            if not targets:
                self._backlog.append(message)
            for sub in targets:
                sub.queued.append((next(self._seq), message))
            self._cond.notify_all()

    def subscribe(self, filters: Sequence[str]) -> _Subscription:
        """The subscription for ``filters``, created (and fed the matching backlog) if new."""
        key = tuple(filters)
        with self._cond:
            sub = self._subscriptions.get(key)
            if sub is None:
                sub = self._subscriptions[key] = _Subscription(key)
                keep: deque[_Message] = deque()
                for message in self._backlog:
                    if sub.matches(message.topic):
                        sub.queued.append((next(self._seq), message))
                    else:
                        keep.append(message)
                self._backlog = keep
                self._cond.notify_all()
            return sub

    def unsubscribe(self, filters: Sequence[str]) -> None:
        """Forget the subscription for ``filters`` and the messages it held."""
        with self._cond:
            self._subscriptions.pop(tuple(filters), None)
            self._cond.notify_all()

    def depth(self, filters: Sequence[str] | None = None) -> int:
        """Messages queued for ``filters`` (the backlog when ``None``), not counting in flight."""
        with self._cond:
            if filters is None:
                return len(self._backlog)
            sub = self._subscriptions.get(tuple(filters))
            return len(sub.queued) if sub else 0

    def _take(
        self, sub: _Subscription, holder: int, max_messages: int, timeout: float
    ) -> list[Delivery]:
        with self._cond:
            if not sub.queued and timeout > 0:
                self._cond.wait_for(lambda: bool(sub.queued), timeout)
            out: list[Delivery] = []
            now = time.time_ns()
            while sub.queued and len(out) < max_messages:
                seq, m = sub.queued.popleft()
                sub.in_flight[seq] = (m, holder)
                out.append(
                    Delivery(m.payload, m.topic, now, (sub, seq, holder), m.msg_id, m.redelivered)
                )
            return out

    def _ack(self, tokens: Sequence[tuple[_Subscription, int, int]]) -> None:
        with self._cond:
            for sub, seq, holder in tokens:
                entry = sub.in_flight.get(seq)
                if entry is not None and entry[1] == holder:
                    del sub.in_flight[seq]
            self._cond.notify_all()

    def _release(self, sub: _Subscription, holder: int) -> None:
        """Put ``holder``'s unacked messages back at the front of ``sub``, in order."""
        with self._cond:
            back = sorted(seq for seq, (_, h) in sub.in_flight.items() if h == holder)
            for seq in reversed(back):
                message, _ = sub.in_flight.pop(seq)
                message.redelivered = True
                sub.queued.appendleft((seq, message))
            if back:
                self._cond.notify_all()


class MemoryTransport:
    """The :class:`~loopline.stream.transport.Transport` over a :class:`MemoryBroker`.

    Without ``broker`` it uses the process-wide broker named ``config.name``. ``topics``
    are the filters this transport reads (subscribed on the first :meth:`receive`).
    """

    def __init__(
        self,
        config: MemoryTransportConfig,
        *,
        broker: MemoryBroker | None = None,
        topics: Sequence[str] = ("#",),
        publish_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.broker = broker or MemoryBroker.named(config.name, config.capacity)
        self.topics = tuple(topics)
        self.publish_timeout = publish_timeout
        self._sub: _Subscription | None = None
        self._holder = 0

    def open(self) -> None:
        """Start a new holder identity; deliveries of an earlier opening can no longer ack."""
        if not self._holder:
            self._holder = next(_HOLDERS)

    def _require_open(self) -> int:
        if not self._holder:
            raise TransportError(
                "memory transport is not open", transport=self.config.name, hint="call open()"
            )
        return self._holder

    def publish(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> None:
        self._require_open()
        self.broker.publish(topic, payload, msg_id=msg_id, timeout=self.publish_timeout)

    def flush(self, timeout: float = 10.0) -> None:
        """Nothing to wait for: a publish is in the broker when it returns."""

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        holder = self._require_open()
        if not self.topics or max_messages <= 0:
            return []
        if self._sub is None:
            self._sub = self.broker.subscribe(self.topics)
        return self.broker._take(self._sub, holder, max_messages, timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self.broker._ack([d.token for d in deliveries])

    def pending(self) -> int:
        """Messages queued for this transport's subscription (at most ``capacity``)."""
        return self.broker.depth(self.topics) if self._sub is not None else 0

    def close(self) -> None:
        """Hand unacked deliveries back to the subscription; safe to call twice."""
        if self._holder and self._sub is not None:
            self.broker._release(self._sub, self._holder)
        self._holder = 0
