"""MQTT 5 / 3.1.1 transport on paho-mqtt 2.x: QoS 0 and 1, persistent sessions, manual acks.

Receiving: paho's network thread appends each message to a bounded inbox that
:meth:`MqttTransport.receive` drains; a QoS 1 message is PUBACKed only when
:meth:`MqttTransport.ack` is called, so the broker redelivers whatever was not acked when
the connection or the process died (at-least-once). MQTT 5's Receive Maximum caps the
unacked messages the broker sends; with a persistent session (fixed ``client_id``,
``session_expiry`` > 0) messages published while the reader is away wait in the broker.
Publishing keeps an application window: at most ``publish_window`` unconfirmed QoS 1
publishes, because paho's 16-bit message ids fail past 65,535 outstanding.

>>> from loopline.config.streams import MqttTransportConfig
>>> tx = MqttTransport(MqttTransportConfig(url="mqtts://user:pw@broker.example:8884"))
>>> tx.redacted_url, tx.host, tx.port, tx.uses_tls
('mqtts://user:***@broker.example:8884', 'broker.example', 8884, True)
"""

from __future__ import annotations

import itertools
import logging
import socket
import ssl
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from loopline.config.streams import MqttTransportConfig
from loopline.errors import ConfigError, MissingDependencyError, TransportError
from loopline.stream.transport import Delivery

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
    from paho.mqtt.subscribeoptions import SubscribeOptions
except ImportError as exc:  # pragma: no cover - the stream extra is installed in tests
    raise MissingDependencyError("paho-mqtt", "stream") from exc

__all__ = ["MqttTransport"]

log = logging.getLogger(__name__)

_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}
_MAX_SESSION_EXPIRY = 0xFFFFFFFF
_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id (MQTT 3.1.1 and 5)


class _Inbox:
    """A bounded FIFO filled by the network thread; a full inbox blocks it (TCP backpressure).

    ``put`` runs once per message on paho's thread, so it only signals a reader that waits.
    It never blocks before ``open()`` has returned (``blocking`` False): a resumed session
    resends its unacked QoS 1 messages before the SUBACK that ``open()`` waits for, and a
    blocked network thread would never read that SUBACK. The broker's receive maximum still
    bounds what it sends meanwhile.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.blocking = False
        self.items: deque[Delivery] = deque()
        self.lock = threading.Lock()
        self.readable = threading.Condition(self.lock)
        self.writable = threading.Condition(self.lock)
        self.readers = 0
        self.closed = False

    def put(self, delivery: Delivery) -> None:
        with self.lock:
            while self.blocking and len(self.items) >= self.capacity and not self.closed:
                self.writable.wait(0.5)
            if not self.closed:
                self.items.append(delivery)
                if self.readers:
                    self.readable.notify()

    def take(self, max_messages: int, timeout: float) -> list[Delivery]:
        with self.lock:
            items = self.items
            if not items and timeout > 0 and not self.closed:
                self.readers += 1
                try:
                    self.readable.wait_for(lambda: bool(items) or self.closed, timeout)
                finally:
                    self.readers -= 1
            n = min(max_messages, len(items))
            out = [items.popleft() for _ in range(n)]
            if n:
                self.writable.notify()
            return out

    def keep(self, predicate: Callable[[Delivery], bool]) -> None:
        with self.lock:
            self.items = deque(d for d in self.items if predicate(d))
            self.writable.notify()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.readable.notify_all()
            self.writable.notify_all()


class _Client(mqtt.Client):
    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        # paho leaves the socket of a failed TLS handshake open (a ResourceWarning later)
        try:
            return super()._ssl_wrap_socket(tcp_sock)
        except (OSError, ValueError) as exc:
            tb = exc.__traceback__
            while tb is not None:
                leaked = tb.tb_frame.f_locals.get("ssl_sock")
                if isinstance(leaked, socket.socket):
                    leaked.close()
                tb = tb.tb_next
            raise


class MqttTransport:
    """The :class:`~loopline.stream.transport.Transport` for an MQTT broker (see module doc).

    ``publish_window`` bounds unconfirmed QoS 1 publishes; ``publish_timeout`` is how long
    :meth:`publish` waits for room before raising; ``connect_timeout`` bounds :meth:`open`.
    """

    def __init__(
        self,
        config: MqttTransportConfig,
        *,
        publish_window: int = 10_000,
        publish_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.publish_window = publish_window
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        parts = urlsplit(config.url)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(
                f"unsupported MQTT URL scheme {parts.scheme!r}",
                url=self._redact(config.url),
                hint="use mqtt://host:1883 or mqtts://host:8883",
            )
        self.uses_tls = _SCHEMES[parts.scheme] or config.tls is not None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if self.uses_tls else 1883)
        self.username = config.username or parts.username
        secret = config.password.get_secret_value() if config.password else None
        self.password = secret or parts.password
        self.redacted_url = self._redact(config.url)
        self.persistent = bool(config.topics) and config.qos == 1 and config.session_expiry > 0
        if self.persistent and not config.client_id:
            raise ConfigError(
                "a persistent MQTT session needs a fixed client_id",
                path="transport.client_id",
                hint="set transport.client_id to a stable id per processor "
                "(or session_expiry: 0 to lose messages sent while it is down)",
            )
        self.client_id = config.client_id or f"loopline-{uuid.uuid4().hex[:16]}"
        self._client: mqtt.Client | None = None
        self._inbox = _Inbox(self._inbox_capacity())
        self._unacked: dict[int, int] = {}
        self._seq = itertools.count(1)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._connect_error: str | None = None
        self._connected_once = False
        self._pub = threading.Condition()
        self._unconfirmed = 0
        self._unwritten = 0
        self._publish_failures: list[str] = []
        self._acks_unconfirmed = False
        self._unsubacked: set[int] = set()

    @staticmethod
    def _redact(url: str) -> str:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        return parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()

    @property
    def connected(self) -> bool:
        """Whether the client is connected to the broker right now."""
        return self._connected.is_set()

    def _filters(self) -> list[str]:
        group = self.config.shared_group
        return [f"$share/{group}/{t}" if group else t for t in self.config.topics]

    def _build_client(self) -> mqtt.Client:
        v5 = self.config.protocol == "5"
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else not self.persistent,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.uses_tls:
            tls = self.config.tls
            client.tls_set(
                ca_certs=tls.ca_file if tls else None,
                certfile=tls.cert_file if tls else None,
                keyfile=tls.key_file if tls else None,
            )
            if tls and tls.insecure:
                client.tls_insecure_set(True)
        # 0 = no paho limit: with one, paho walks every outgoing message on each PUBACK
        # (quadratic: 2k msg/s at a 10k window); publish() keeps the window itself
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def open(self) -> None:
        """Connect, subscribe to the configured topics and start the network thread."""
        if self._client is not None:
            return
        client = self._build_client()
        kwargs: dict[str, Any] = {}
        if self.config.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = self.config.receive_maximum
            if self.persistent:
                expiry = min(int(self.config.session_expiry), _MAX_SESSION_EXPIRY)
                props.SessionExpiryInterval = expiry
            kwargs = {"clean_start": not self.persistent, "properties": props}
        self._inbox = _Inbox(self._inbox_capacity())
        self._connect_error = None
        self._connected_once = False
        self._subscribed.clear()
        try:
            client.connect(self.host, self.port, self.config.keepalive, **kwargs)
        except (OSError, ValueError) as exc:
            raise TransportError(
                f"cannot connect to MQTT broker: {exc}",
                url=self.redacted_url,
                hint="is the broker running and the URL right? for TLS check tls.ca_file",
            ) from exc
        self._client = client
        client.loop_start()
        ready = self._subscribed if self.config.topics else self._connected
        deadline = time.monotonic() + self.connect_timeout
        while not ready.wait(0.05):
            if self._connect_error is not None or time.monotonic() > deadline:
                error = self._connect_error or f"no answer within {self.connect_timeout:g}s"
                self._shutdown()
                raise TransportError(
                    f"MQTT broker refused the connection: {error}",
                    url=self.redacted_url,
                    client_id=self.client_id,
                    hint="check username / password, the ACL and the topic filters",
                )
        with self._inbox.lock:
            self._inbox.blocking = True

    def _inbox_capacity(self) -> int:
        """Room for the broker's window twice over: a resumed session resends its unacked
        messages and then refills a fresh receive-maximum quota."""
        return 2 * self.config.receive_maximum

    def _on_connect(
        self, client: mqtt.Client, _0: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, *_: Any
    ) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            log.warning("MQTT broker %s refused %s: %s", self.redacted_url, self.client_id, reason)
            if not self._connected_once:
                client.disconnect()  # open() fails; no point in retrying
            return
        self._connected_once = True
        self._unacked.clear()
        if flags.session_present:
            self._drop_resent_qos1()
        self._connected.set()
        filters = self._filters()
        # a resumed session keeps its subscriptions (subscribing again would resend retained
        # messages); open() always subscribes, in case the topics changed
        if filters and not (flags.session_present and self._subscribed.is_set()):
            if self.config.protocol == "5":
                opts = SubscribeOptions(qos=self.config.qos)
                client.subscribe([(f, opts) for f in filters])
            else:
                client.subscribe([(f, int(self.config.qos)) for f in filters])
        log.info(
            "connected to MQTT %s (session present: %s)", self.redacted_url, flags.session_present
        )

    def _drop_resent_qos1(self) -> None:
        """The resumed session resends every unacked QoS 1 message: drop the old copies."""
        self._inbox.keep(lambda d: d.token[2] == 0)

    def _on_disconnect(self, _0: Any, _1: Any, _2: Any, reason: ReasonCode, *_: Any) -> None:
        self._connected.clear()
        self._unacked.clear()
        with self._pub:
            self._unwritten = 0  # paho drops QoS 0 packets not yet written
            self._pub.notify_all()
        if self._client is None:
            return
        log.warning(
            "MQTT connection to %s lost (%s); reconnecting (if this repeats, another client "
            "may be using client_id %r)",
            self.redacted_url,
            reason,
            self.client_id,
        )

    def _on_subscribe(self, _0: Any, _1: Any, _2: Any, reasons: list[ReasonCode], *_: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._connect_error = f"subscribe to {self._filters()} failed: {', '.join(failed)}"
            log.warning("MQTT %s", self._connect_error)
        else:
            self._subscribed.set()

    def _on_unsubscribe(self, _0: Any, _1: Any, mid: int, *_: Any) -> None:
        with self._pub:
            self._unsubacked.add(mid)
            self._pub.notify_all()

    def _confirm_acks(self, client: mqtt.Client, timeout: float) -> None:
        """Wait until the broker has read every PUBACK sent so far.

        The broker answers packets in order, so the UNSUBACK of a filter never subscribed
        comes after it handled the acks. Without this, closing the socket while the broker
        is still sending can reset the connection and drop acks it had not read yet.
        """
        rc, mid = client.unsubscribe(f"loopline/ack-barrier/{self.client_id}")
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        with self._pub:
            done = self._pub.wait_for(lambda: mid in self._unsubacked, timeout)
            self._unsubacked.discard(mid or 0)
        if not done:
            log.warning("MQTT broker did not confirm the last acks within %gs", timeout)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        seq = next(self._seq)
        qos = msg.qos
        if qos:
            self._unacked[msg.mid] = seq
        payload: bytes = msg.payload  # type: ignore[assignment]  # paho types bytes | bytearray
        self._inbox.put(
            Delivery(payload, msg.topic, time.time_ns(), (seq, msg.mid, qos), None, msg.dup)
        )

    def _on_publish(self, _0: Any, _1: Any, _2: Any, reason: ReasonCode, *_: Any) -> None:
        with self._pub:
            if self.config.qos:
                self._unconfirmed -= 1
                if reason.is_failure:
                    self._publish_failures.append(str(reason))
            else:
                self._unwritten = max(0, self._unwritten - 1)
            self._pub.notify_all()

    def publish(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> None:
        """Send one message at the configured QoS (``msg_id`` has no MQTT header; ignored).

        Blocks while ``publish_window`` QoS 1 messages are unconfirmed; a QoS 1 message
        published while the connection is down is sent when it comes back.
        """
        client = self._client
        if client is None:
            raise TransportError("MQTT transport is not open", url=self.redacted_url)
        qos = self.config.qos
        with self._pub:
            if qos and self._unconfirmed >= self.publish_window:
                ok = self._pub.wait_for(
                    lambda: self._unconfirmed < self.publish_window, self.publish_timeout
                )
                if not ok:
                    raise TransportError(
                        f"{self._unconfirmed} QoS 1 publishes unconfirmed after "
                        f"{self.publish_timeout:g}s",
                        url=self.redacted_url,
                        hint="the broker is down or too slow",
                    )
            if qos:
                self._unconfirmed += 1
            else:
                self._unwritten += 1
        info = client.publish(topic, payload, qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        with self._pub:
            if qos and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                return  # queued by paho; sent on reconnect
            if qos:
                self._unconfirmed -= 1
            else:
                self._unwritten = max(0, self._unwritten - 1)
        if not qos and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            raise TransportError(
                "MQTT QoS 0 publish dropped: not connected",
                url=self.redacted_url,
                topic=topic,
                hint="the connection is down; use qos 1 to queue messages until it is back",
            )
        raise TransportError(
            f"MQTT publish failed: {mqtt.error_string(info.rc)}", url=self.redacted_url, topic=topic
        )

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every QoS 1 publish so far is PUBACKed (QoS 0: written to the socket)."""
        with self._pub:
            done = self._pub.wait_for(
                lambda: self._unconfirmed <= 0 and self._unwritten <= 0, timeout
            )
            failures, self._publish_failures = self._publish_failures, []
            if not done:
                raise TransportError(
                    f"{self._unconfirmed + self._unwritten} MQTT publishes unconfirmed "
                    f"after {timeout:g}s",
                    url=self.redacted_url,
                    hint="the broker is down or slow; flush again or raise the timeout",
                )
        if failures:
            raise TransportError(
                f"the broker rejected {len(failures)} publishes: {failures[0]}",
                url=self.redacted_url,
                hint="check the ACL for this user and topic",
            )

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, waiting at most ``timeout`` s for the first."""
        return self._inbox.take(max_messages, timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """PUBACK QoS 1 deliveries of the current connection; others are ignored (idempotent)."""
        client = self._client
        if client is None:
            return
        unacked = self._unacked
        mids = []
        for d in deliveries:
            seq, mid, qos = d.token
            if qos and unacked.get(mid) == seq and unacked.pop(mid, None) == seq:
                mids.append(mid)
        if not mids:
            return
        self._acks_unconfirmed = True
        queue = getattr(client, "_packet_queue", None)
        if queue is None:  # a paho without the internal hook: one PUBACK (and wake-up) each
            for mid in mids:
                client.ack(mid, 1)
            return
        # One write for the whole batch: paho's ack() wakes its network thread per message,
        # which costs about a third of the receive path's CPU at 10k+ msg/s.
        queue(mqtt.PUBACK, b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids]), 0, 0)

    def pending(self) -> int:
        """Messages in the inbox not yet handed out (at most ``receive_maximum``)."""
        return len(self._inbox.items)

    def close(self) -> None:
        """Disconnect (the session and its unacked messages stay on the broker); idempotent."""
        if self._client is None:
            return
        if self._unconfirmed > 0 and self._connected.is_set():
            try:
                self.flush(timeout=5.0)
            except TransportError as exc:
                log.warning("closing MQTT transport with unconfirmed publishes: %s", exc)
        if self._acks_unconfirmed and self._connected.is_set():
            self._confirm_acks(self._client, timeout=2.0)
        self._acks_unconfirmed = False
        self._shutdown()

    def _shutdown(self) -> None:
        client, self._client = self._client, None
        self._inbox.close()
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._connected.clear()
        self._unacked.clear()
        with self._pub:
            self._unconfirmed = self._unwritten = 0
