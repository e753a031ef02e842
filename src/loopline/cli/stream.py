"""``loopline stream``: run a real-time pipeline, the MQTT → JetStream gateway, the device
simulator, and list alerts."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from loopline.cli.console import console, err_console, fail, print_json
from loopline.cli.project import project_config
from loopline.errors import ConfigError, LooplineError

if TYPE_CHECKING:
    from loopline.config import LooplineConfig, NatsTransportConfig, StreamPipelineConfig
    from loopline.stream.status import StreamStatus
    from loopline.stream.transport import Transport

stream = typer.Typer(
    name="stream",
    help="Real-time pipelines: run, gateway, simulate devices, list alerts.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="loopline.yaml (default: ./loopline.yaml)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT: the loop flushes, acks and returns."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda _sig, _frame: stop.set())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _pipeline(cfg: LooplineConfig, name: str) -> StreamPipelineConfig:
    if name not in cfg.streams:
        raise ConfigError(
            f"no stream pipeline named {name!r}",
            known=sorted(cfg.streams) or "none",
            hint="declare it under 'streams:' in loopline.yaml",
        )
    return cfg.streams[name]


def _with_worker(
    name: str, spec: StreamPipelineConfig, worker: int | None, workers: int | None
) -> StreamPipelineConfig:
    """``spec`` with ``--worker`` / ``--workers`` applied (NATS partitions only)."""
    if worker is None and workers is None:
        return spec
    transport = spec.transport
    if transport.kind != "nats":
        raise ConfigError(
            f"--worker / --workers split a NATS pipeline's partitions; pipeline {name!r} "
            f"reads {transport.kind}",
            hint="to share an MQTT stream between processors set transport.shared_group",
        )
    changes = {k: v for k, v in {"worker": worker, "workers": workers}.items() if v is not None}
    try:
        updated = type(transport).model_validate(transport.model_dump() | changes)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        raise ConfigError(
            f"bad --worker / --workers for pipeline {name!r}: {problems}",
            hint="worker is an index from 0 to workers - 1",
        ) from exc
    return spec.model_copy(update={"transport": updated})


def _status_json(status: StreamStatus) -> dict[str, Any]:
    return {k: v for k, v in vars(status).items() if not k.startswith("_")}


@stream.command("run")
def run(
    pipeline: Annotated[str, typer.Argument(help="Name under 'streams:' in loopline.yaml.")],
    config: ConfigOption = None,
    worker: Annotated[
        int | None, typer.Option(help="NATS transport: this worker's index (overrides config).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="NATS transport: how many workers share the partitions.")
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option(help="Stop after this many messages (default: run until stopped).")
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a message.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a pipeline until SIGTERM / Ctrl-C: flush the micro-batch, ack, exit 0."""
    try:
        from loopline.stream.processor import StreamProcessor

        cfg = project_config(config)
        spec = _with_worker(pipeline, _pipeline(cfg, pipeline), worker, workers)
        if metrics_port is not None:
            spec = spec.model_copy(update={"metrics_port": metrics_port})
        processor = StreamProcessor(pipeline, spec, config=cfg)
        live = console.is_terminal and not as_json

        def show(status: StreamStatus) -> None:
            if live:
                console.print(status.line(), end="\r", soft_wrap=True)

        with _stop_on_signals() as stop:
            status = processor.run(
                stop, max_messages=max_messages, idle_exit=idle_exit, on_status=show
            )
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json(_status_json(status))
    else:
        console.print(status.line())


@stream.command("gateway")
def gateway(
    name: Annotated[str, typer.Argument(help="Name under 'gateways:' in loopline.yaml.")],
    config: ConfigOption = None,
    max_messages: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
) -> None:
    """Bridge MQTT device topics into JetStream subjects partitioned by device id."""
    try:
        from loopline.stream.gateway import Gateway

        cfg = project_config(config)
        if name not in cfg.gateways:
            raise ConfigError(
                f"no gateway named {name!r}",
                known=sorted(cfg.gateways) or "none",
                hint="declare it under 'gateways:' in loopline.yaml",
            )
        with _stop_on_signals() as stop:
            stats = Gateway(cfg.gateways[name]).run(stop, max_messages=max_messages)
    except LooplineError as exc:
        fail(exc)
    console.print(f"forwarded {stats.forwarded:,} messages ({stats.unroutable:,} unroutable)")


class _PartitionPublisher:
    """Publishes each simulated reading to its device's JetStream partition, as the gateway
    does (a payload without a device goes to the partition of ``""``)."""

    def __init__(
        self, transport: Transport, config: NatsTransportConfig, device_field: str
    ) -> None:
        self._transport = transport
        self._config = config
        self._device_field = device_field

    def publish(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> None:
        from loopline.stream.gateway import device_of
        from loopline.stream.transports.nats import partition_of, partition_subject_of

        device = device_of(topic, payload, level=None, field=self._device_field) or ""
        partition = partition_of(device, self._config.partitions)
        subject = partition_subject_of(self._config.subject_prefix, partition)
        self._transport.publish(subject, payload, msg_id=msg_id)

    def flush(self, timeout: float = 10.0) -> None:
        self._transport.flush(timeout)


@stream.command("simulate")
def simulate(
    devices: Annotated[int, typer.Option(help="Number of simulated devices.")] = 50,
    rate: Annotated[float, typer.Option(help="Messages per second, all devices together.")] = 500,
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 10,
    url: Annotated[str, typer.Option(help="MQTT broker URL.")] = "mqtt://127.0.0.1:1883",
    pipeline: Annotated[
        str | None,
        typer.Option(
            help="Publish on this pipeline's transport instead of --url (NATS: to each "
            "device's partition, as the gateway does)."
        ),
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic template.")] = "sensors/{site}/{device}",
    qos: Annotated[int, typer.Option(help="MQTT QoS (0 or 1).")] = 1,
    anomaly_rate: Annotated[float, typer.Option(help="Share of readings starting an anomaly.")] = (
        0.002
    ),
    late: Annotated[float, typer.Option(help="Share of readings published late.")] = 0.0,
    out_of_order: Annotated[float, typer.Option(help="Share of readings reordered.")] = 0.0,
    duplicates: Annotated[float, typer.Option(help="Share of readings sent twice.")] = 0.0,
    malformed: Annotated[float, typer.Option(help="Share of malformed payloads.")] = 0.0,
    truth: Annotated[
        Path | None, typer.Option(help="Write the injected anomalies (ground truth) here.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish realistic sensor readings with injected anomalies and delivery faults."""
    try:
        from loopline.config import MqttTransportConfig
        from loopline.stream.simulator import Simulator, SimulatorConfig
        from loopline.stream.transports.factory import open_transport

        spec = _pipeline(project_config(config), pipeline) if pipeline is not None else None
        transport_config: Any = (
            spec.transport
            if spec is not None
            else MqttTransportConfig(url=url, qos=1 if qos else 0)
        )
        if transport_config.kind == "memory":
            raise ConfigError(
                f"pipeline {pipeline!r} uses an in-process memory transport, which another "
                "process cannot publish to",
                hint="simulate into an MQTT or NATS pipeline, or use --url",
            )
        sim = Simulator(
            SimulatorConfig(
                devices=devices,
                rate=rate,
                duration=duration,
                topic=topic,
                anomaly_rate=anomaly_rate,
                late_fraction=late,
                out_of_order_fraction=out_of_order,
                duplicate_fraction=duplicates,
                malformed_fraction=malformed,
                seed=seed,
            )
        )
        transport = open_transport(transport_config, subscribe=False)
        try:
            publisher: Any = transport
            if spec is not None and transport_config.kind == "nats":
                publisher = _PartitionPublisher(transport, transport_config, spec.device_field)
            with _stop_on_signals() as stop:
                report = sim.run(publisher, truth_path=truth, stop=stop)
        finally:
            transport.close()
    except LooplineError as exc:
        fail(exc)
    summary = {
        "total": report.total,
        "valid": report.valid,
        "duplicates": report.duplicates,
        "malformed": report.malformed,
        "late": report.late,
        "out_of_order": report.out_of_order,
        "anomalies": report.anomalies,
        "seconds": round(report.elapsed, 3),
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"published {report.total:,} messages in {report.elapsed:.1f}s "
        f"({report.rate:,.0f} msg/s): "
        + ", ".join(f"{k} {v:,}" for k, v in summary.items() if k not in ("total", "seconds"))
    )


@stream.command("alerts")
def alerts(
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's alerts.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Alerts raised by stream pipelines, newest first."""
    try:
        from loopline.store.metadata import MetadataStore
        from loopline.stream.alerts import list_alerts

        cfg = project_config(config)
        store = MetadataStore(cfg.stores.metadata_url, base_dir=cfg.project_dir)
        try:
            rows = list_alerts(store, pipeline=pipeline, limit=limit)
        finally:
            store.close()
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json(rows)
        return
    if not rows:
        err_console.print("no alerts")
        return
    table = Table("event time", "pipeline", "device", "metric", "detectors", "value", "score")
    for row in rows:
        table.add_row(
            str(row["event_time"]),
            str(row["pipeline"]),
            str(row["device"]),
            str(row["metric"]),
            ", ".join(row["detectors"]),
            f"{row['value']:.3f}",
            f"{row['score']:.2f}",
        )
    console.print(table)
