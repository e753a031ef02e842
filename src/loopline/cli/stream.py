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
from rich.table import Table

from loopline.cli.console import console, err_console, fail, print_json
from loopline.cli.project import project_config
from loopline.errors import ConfigError, LooplineError

if TYPE_CHECKING:
    from loopline.config import LooplineConfig, StreamPipelineConfig
    from loopline.stream.status import StreamStatus

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
        spec = _pipeline(cfg, pipeline)
        if spec.transport.kind == "nats" and (worker is not None or workers is not None):
            changes: dict[str, Any] = {}
            if worker is not None:
                changes["worker"] = worker
            if workers is not None:
                changes["workers"] = workers
            transport = type(spec.transport).model_validate(spec.transport.model_dump() | changes)
            spec = spec.model_copy(update={"transport": transport})
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


@stream.command("simulate")
def simulate(
    devices: Annotated[int, typer.Option(help="Number of simulated devices.")] = 50,
    rate: Annotated[float, typer.Option(help="Messages per second, all devices together.")] = 500,
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 10,
    url: Annotated[str, typer.Option(help="MQTT broker URL.")] = "mqtt://127.0.0.1:1883",
    pipeline: Annotated[
        str | None, typer.Option(help="Publish on this pipeline's transport instead of --url.")
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

        if pipeline is not None:
            transport_config: Any = _pipeline(project_config(config), pipeline).transport
            transport_config = transport_config.model_copy(update={"topics": []})
        else:
            transport_config = MqttTransportConfig(url=url, qos=1 if qos else 0)
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
            with _stop_on_signals() as stop:
                report = sim.run(transport, truth_path=truth, stop=stop)
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
