"""Build the transport a pipeline's ``transport:`` section names (MQTT, NATS JetStream, memory).

Each transport module is imported only when its kind is asked for, so a missing optional
client library (paho-mqtt, nats-py) only matters to the pipelines that use it.

>>> from loopline.config.streams import MemoryTransportConfig
>>> tx = open_transport(MemoryTransportConfig(name="factory-doctest"))
>>> type(tx).__name__
'MemoryTransport'
>>> tx.close()
"""

from __future__ import annotations

from loopline.config.streams import MemoryTransportConfig, MqttTransportConfig, NatsTransportConfig
from loopline.errors import ConfigError
from loopline.stream.transport import Transport

__all__ = ["create_transport", "open_transport"]

AnyTransportConfig = MqttTransportConfig | NatsTransportConfig | MemoryTransportConfig


def create_transport(config: AnyTransportConfig, *, subscribe: bool = True) -> Transport:
    """The transport for ``config``, not yet opened.

    ``subscribe=False`` is for publishers (the simulator, alert topics): an MQTT transport
    then subscribes to nothing and a memory transport reads nothing, so a publisher never
    competes with the pipeline for its own messages; an MQTT publisher connects as
    ``<client_id>-pub`` so it does not take over the reader's session.
    """
    if isinstance(config, MqttTransportConfig):
        from loopline.stream.transports.mqtt import MqttTransport

        if not subscribe:  # a second client id: the broker would drop the reader's connection
            pub_id = f"{config.client_id}-pub" if config.client_id else None
            config = config.model_copy(update={"topics": [], "client_id": pub_id})
        return MqttTransport(config)
    if isinstance(config, NatsTransportConfig):
        from loopline.stream.transports.nats import NatsTransport

        return NatsTransport(config)
    if isinstance(config, MemoryTransportConfig):
        from loopline.stream.transports.memory import MemoryTransport

        return MemoryTransport(config, topics=("#",) if subscribe else ())
    raise ConfigError(
        f"unknown transport config {type(config).__name__}",
        path="transport.kind",
        hint="use kind: mqtt, nats or memory",
    )


def open_transport(config: AnyTransportConfig, *, subscribe: bool = True) -> Transport:
    """:func:`create_transport`, then :meth:`~loopline.stream.transport.Transport.open`."""
    transport = create_transport(config, subscribe=subscribe)
    transport.open()
    return transport
