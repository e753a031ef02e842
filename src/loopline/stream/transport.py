"""The one interface every transport offers (MQTT, NATS JetStream, the in-process queue).

A transport delivers messages in batches and is told when they are safe to forget: the
processor calls :meth:`Transport.ack` only after the data they carried is durable, so a
crash before that means the broker delivers them again (at-least-once). Receiving is
bounded: a transport holds at most its configured number of unacknowledged messages, so a
slow sink slows intake instead of growing memory.

A new broker (AMQP, CoAP ...) is one module in ``transports/`` implementing this Protocol;
the processor does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Delivery:
    """One received message: its bytes, where it came from and the handle to ack it by.

    ``msg_id`` is a transport-level id when the broker carries one (``Nats-Msg-Id``);
    payload ids are read by the decoder. ``received_ns`` is ``time.time_ns()`` on receipt.
    """

    payload: bytes
    topic: str
    received_ns: int
    token: Any = field(default=None, repr=False)
    msg_id: str | None = None
    redelivered: bool = False


class Transport(Protocol):
    """Publish and receive messages on a broker.

    ``open`` connects (and subscribes when the transport was configured with something to
    read); ``receive`` returns up to ``max_messages`` deliveries, waiting at most
    ``timeout`` seconds for the first; ``ack`` confirms deliveries (a no-op at QoS 0);
    ``publish`` sends one message (``msg_id`` becomes a dedupe header where the broker has
    one); ``flush`` waits until every publish so far is confirmed by the broker.
    """

    def open(self) -> None: ...

    def publish(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> None: ...

    def flush(self, timeout: float = 10.0) -> None: ...

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]: ...

    def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    def pending(self) -> int:
        """Messages received from the broker but not yet handed out by :meth:`receive`."""
        ...

    def close(self) -> None: ...
