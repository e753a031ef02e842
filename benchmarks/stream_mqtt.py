"""Benchmark: device readings over MQTT into a loopline stream pipeline, beside the raw client.

Run: ``make bench-stream`` (or ``.venv/bin/python benchmarks/stream_mqtt.py``). It starts
its own Mosquitto (``/usr/sbin/mosquitto``) on a free port with ``max_queued_messages 0``:
Mosquitto's default queue of 1,000 messages per client drops QoS 1 messages in a burst
(``--url`` uses another broker). ``--jetstream`` also measures a bare NATS JetStream pull
consumer (``--nats-url``). Every process is separate: the
publisher (loopline's simulator on a paho publisher), the subscriber under test, and this
driver, which only waits and reads the results.

Cases, same broker, same run:
  bare-mqtt       paho subscriber (MQTT 5, QoS 1, auto-ack) that only parses each JSON payload:
                  the raw client limit
  bare-jetstream  nats-py pull consumer (fetch 500) that parses and acks each message
  loopline        ``loopline stream run``: decode, contract (4 range rules), dedupe, tumbling
                  10 s + sliding 60 s / 10 s windows on 3 metrics, zscore + ewma detectors,
                  alerts, DuckDB sink; QoS 1 acks only after each micro-batch is committed

Throughput: N messages published as fast as the publisher goes; msgs/s = N / (time the
subscriber had them all − first publish). Latency (loopline only): readings published at
fixed rates; per reading, commit time − publish time (the event time ``ts`` is the publish
time to within one 20 ms simulator tick); p50 / p99 after the first second (start-up).
The commit time stored with each row (``_ingested_at``) is taken as its micro-batch's
commit begins; the share of readings whose commit had *finished* within 50 / 100 ms of
their event time comes from the processor's Prometheus latency histogram (commit end −
event time), scraped after the first second and at the end.
Detection: each detector's precision (flagged readings that fall on an injected anomaly, or
within 5 readings after one ends) and recall (injected spike and level-shift episodes with a
flagged reading; a stuck sensor inside the normal range is not a point anomaly), beside a
fixed-threshold baseline, on one stream processed in-process; see
``loopline.stream.ground_truth``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
LOOPLINE = Path(sys.executable).with_name("loopline")

PIPELINE = """
contracts:
  readings:
    columns:
      temperature: {{type: float64, min: -40, max: 125}}
      humidity: {{type: float64, min: 0, max: 100}}
      vibration: {{type: float64, min: 0}}
      battery: {{type: float64, min: 0, max: 100}}
streams:
  bench:
    transport:
      kind: mqtt
      url: {url}
      topics: ["{prefix}/+/+"]
      qos: 1
      client_id: loopline-bench-{run}
      session_expiry: 0
      receive_maximum: {window}
    metrics: [temperature, humidity, vibration]
    contract: readings
    windows:
      - {{kind: tumbling, size: 10s}}
      - {{kind: sliding, size: 60s, slide: 10s}}
    watermark: {{delay: 1s, allowed_lateness: 10s}}
    detectors:
      - {{kind: zscore, threshold: 4.0}}
      - {{kind: ewma, threshold: 4.0}}
    alerts: {{cooldown: 60s}}
    sink: {{max_rows: {max_rows}, max_delay: {max_delay}}}
    metrics_port: {metrics_port}
"""


# -- child processes ---------------------------------------------------------------------


def child_publish(args: argparse.Namespace) -> None:
    """Publish ``count`` readings at ``rate`` (0: as fast as possible) with the simulator."""
    from loopline.config import MqttTransportConfig
    from loopline.stream.simulator import Simulator, SimulatorConfig
    from loopline.stream.transports.factory import open_transport

    devices = 100
    rate = args.rate or 1e6
    duration = args.count / rate
    sim = Simulator(
        SimulatorConfig(
            devices=devices,
            rate=rate,
            duration=duration,
            topic=args.prefix + "/{site}/{device}",
            anomaly_rate=0.0,
            realtime=True,
            seed=args.seed,
        )
    )
    transport = open_transport(MqttTransportConfig(url=args.url, qos=1), subscribe=False)
    first = time.time()
    report = sim.run(transport)
    transport.close()
    print(json.dumps({"first": first, "published": report.total, "end": time.time()}))


def child_bare_mqtt(args: argparse.Namespace) -> None:
    """A bare paho QoS 1 subscriber: parse each payload, stop at ``count``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    done = threading.Event()
    state = {"n": 0, "last": 0.0}
    ready = threading.Event()

    def on_connect(client: Any, *_: Any) -> None:
        client.subscribe([(f"{args.prefix}/+/+", SubscribeOptions(qos=1))])

    def on_subscribe(*_: Any) -> None:
        ready.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        json.loads(msg.payload)
        state["n"] += 1
        if state["n"] >= args.count:
            state["last"] = time.time()
            done.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"bare-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = args.window
    host, port = args.url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port), properties=props)
    client.loop_start()
    ready.wait(10)
    print("ready", flush=True)
    done.wait(args.timeout)
    client.disconnect()
    client.loop_stop()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"n": state["n"], "last": state["last"], "cpu": cpu.ru_utime + cpu.ru_stime}))


def child_bare_jetstream(args: argparse.Namespace) -> None:
    """Publish ``count`` messages to a fresh stream, then time a bare pull consumer."""
    import asyncio

    import nats
    from nats.js.api import StreamConfig

    async def main() -> dict[str, float]:
        nc = await nats.connect(args.nats_url)
        js = nc.jetstream()
        name = f"BENCH_{uuid.uuid4().hex[:8]}"
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
        payload = json.dumps({"msg_id": "x", "device": "d1", "ts": time.time(), "t": 1.0})
        futures = [js.publish(f"{name.lower()}.0", payload.encode()) for _ in range(args.count)]
        for start in range(0, len(futures), 2000):
            await asyncio.gather(*futures[start : start + 2000])
        sub = await js.pull_subscribe(f"{name.lower()}.>", durable="bench")
        cpu0 = time.process_time()
        began, n = time.time(), 0
        while n < args.count:
            for msg in await sub.fetch(500, timeout=5):
                json.loads(msg.data)
                await msg.ack()
                n += 1
        elapsed = time.time() - began
        cpu = time.process_time() - cpu0
        await js.delete_stream(name)
        await nc.close()
        return {"n": n, "rate": n / elapsed, "cpu": cpu}

    print(json.dumps(asyncio.run(main())))


# -- driver --------------------------------------------------------------------------------


def _child(role: str, args: argparse.Namespace, **extra: Any) -> list[str]:
    options = {"url": args.url, "nats_url": args.nats_url, "window": args.window} | extra
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    return [sys.executable, str(HERE), role, *flags]


def _last_json(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"a benchmark process printed no result:\n{text[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def publish(args: argparse.Namespace, prefix: str, count: int, rate: float) -> dict[str, Any]:
    out = subprocess.run(
        _child("_publish", args, prefix=prefix, count=count, rate=rate, seed=1),
        capture_output=True,
        text=True,
        check=True,
    )
    return _last_json(out.stdout)


def bare_mqtt(args: argparse.Namespace) -> dict[str, float]:
    prefix = f"bench/{uuid.uuid4().hex[:6]}"
    sub = subprocess.Popen(
        _child("_bare_mqtt", args, prefix=prefix, count=args.messages, timeout=120),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout is not None
    sub.stdout.readline()  # "ready"
    pub = publish(args, prefix, args.messages, 0)
    result = _last_json(sub.stdout.read())
    sub.wait()
    return {
        "msgs_per_s": result["n"] / (result["last"] - pub["first"]),
        "cpu_us_per_msg": result["cpu"] / max(result["n"], 1) * 1e6,
        "received": result["n"],
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _start_processor(
    args: argparse.Namespace, folder: Path, prefix: str, max_delay: str, metrics_port: int
) -> subprocess.Popen[str]:
    (folder / "loopline.yaml").write_text(
        PIPELINE.format(
            url=args.url,
            prefix=prefix,
            run=uuid.uuid4().hex[:6],
            window=args.window,
            max_rows=args.max_rows,
            max_delay=max_delay,
            metrics_port=metrics_port,
        )
    )
    # idle-exit 10 s, not 3: on a loaded machine the publisher's start-up alone takes seconds
    proc = subprocess.Popen(
        [str(LOOPLINE), "-v", "stream", "run", "bench", "--idle-exit", "10", "--json"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    while True:  # wait until it has subscribed (the transport logs its connection)
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("the loopline processor exited early:\n" + "".join(seen[-30:]))
        seen.append(line)
        if "connected to MQTT" in line:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def _stored(folder: Path, warmup: float = 1.0) -> dict[str, Any]:
    """Counts and latency percentiles of the stored readings; latency leaves out the first
    ``warmup`` seconds of the stream (process start-up: imports, tables, the session)."""
    import duckdb

    con = duckdb.connect(str(folder / ".loopline" / "warehouse.duckdb"), read_only=True)
    row = con.execute(
        """WITH r AS (SELECT *, epoch(_ingested_at) - epoch(ts) AS latency,
                             epoch(ts) - min(epoch(ts)) OVER () AS since_start
                      FROM readings)
           SELECT count(*), count(DISTINCT msg_id), max(epoch(_ingested_at)),
                  quantile_cont(latency, 0.5) FILTER (WHERE since_start >= ?),
                  quantile_cont(latency, 0.99) FILTER (WHERE since_start >= ?)
           FROM r""",
        [warmup, warmup],
    ).fetchone()
    con.close()
    assert row is not None
    return dict(zip(["rows", "unique", "last", "p50", "p99"], row, strict=True))


def _scrape(port: int) -> dict[str, float]:
    """The processor's received count and latency histogram (cumulative bucket counts by
    upper bound, seconds) from its Prometheus endpoint; empty if it does not answer."""
    from urllib.request import urlopen

    try:
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("loopline_stream_latency_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            found[bound] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("loopline_stream_messages_total{") and 'outcome="received"' in line:
            found["received"] = float(line.rsplit(" ", 1)[1])
    return found


def _committed_within(
    port: int, pub: subprocess.Popen[str], count: int, warmup: float
) -> dict[str, float]:
    """Share of readings whose commit had FINISHED within 50 / 100 ms of their event time
    (the processor's own latency histogram: commit end − event time), leaving out what was
    committed in the first ``warmup`` seconds: two scrapes, subtracted."""
    time.sleep(warmup)
    first = _scrape(port)
    pub.wait()
    last: dict[str, float] = {}
    for _ in range(100):  # until everything published was received and committed
        last = _scrape(port)
        if last.get("received", 0.0) >= count:
            break
        time.sleep(0.1)
    total = last.get("+Inf", 0.0) - first.get("+Inf", 0.0)
    if not first or total <= 0:
        return {}
    return {
        f"within_{int(float(b) * 1000)}ms": (last.get(b, 0.0) - first.get(b, 0.0)) / total
        for b in ("0.05", "0.1")
    }


def loopline_run(args: argparse.Namespace, count: int, rate: float) -> dict[str, Any]:
    """One processor run: ``rate`` 0 is the throughput case (big micro-batches: the sink
    commits every 250 ms at most), otherwise the latency case (``--max-delay``)."""
    prefix = f"bench/{uuid.uuid4().hex[:6]}"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="loopline-bench-") as tmp:
        folder = Path(tmp)
        proc = _start_processor(
            args, folder, prefix, "250ms" if rate == 0 else args.max_delay, port
        )
        publisher = subprocess.Popen(
            _child("_publish", args, prefix=prefix, count=count, rate=rate, seed=1),
            stdout=subprocess.PIPE,
            text=True,
        )
        within = _committed_within(port, publisher, count, 1.0) if rate else {}
        pub_out, _ = publisher.communicate()
        pub = _last_json(pub_out)
        out, _ = proc.communicate(timeout=300)
        status = json.loads(out[out.index("{") :]) if "{" in out else {}
        stored = _stored(folder)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "published": pub["published"],
        "stored": stored["rows"],
        "unique": stored["unique"],
        "msgs_per_s": stored["rows"] / (stored["last"] - pub["first"]),
        "p50_ms": (stored["p50"] or 0.0) * 1000,
        "p99_ms": (stored["p99"] or 0.0) * 1000,
        **within,
        "status": status,
        "children_cpu": usage.ru_utime + usage.ru_stime,
    }


def detection(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the pipeline in-process on a memory transport; score detectors against the truth."""
    import polars as pl

    from loopline.config import config_from_dict
    from loopline.stream.ground_truth import score_detections
    from loopline.stream.processor import StreamProcessor
    from loopline.stream.simulator import Simulator, SimulatorConfig
    from loopline.stream.transports.memory import MemoryBroker, MemoryTransport

    with tempfile.TemporaryDirectory(prefix="loopline-detect-") as tmp:
        folder = Path(tmp)
        config = config_from_dict(
            {
                "streams": {
                    "detect": {
                        "transport": {"kind": "memory", "name": "detect"},
                        "metrics": ["temperature", "humidity", "vibration"],
                        "detectors": [
                            {"kind": "zscore", "threshold": 4.0},
                            {"kind": "ewma", "threshold": 4.0},
                            {"kind": "hst"},
                            {"kind": "fixed", "low": 12, "high": 32, "metrics": ["temperature"]},
                            {"kind": "fixed", "low": 20, "high": 75, "metrics": ["humidity"]},
                            {"kind": "fixed", "high": 6.5, "metrics": ["vibration"]},
                        ],
                        "sink": {"max_rows": 5000, "max_delay": 0.2},
                    }
                }
            },
            project_dir=folder,
        )
        broker = MemoryBroker(capacity=1_000_000)
        spec = config.streams["detect"]
        reader = MemoryTransport(spec.transport, broker=broker, topics=["sensors/#"])  # type: ignore[arg-type]
        reader.open()
        sim = Simulator(
            SimulatorConfig(
                devices=20,
                rate=1000,
                duration=args.detect_readings / 1000,
                anomaly_rate=0.002,
                realtime=False,
                seed=7,
            )
        )
        writer = MemoryTransport(spec.transport, broker=broker, topics=())  # type: ignore[arg-type]
        writer.open()
        report = sim.run(writer)
        processor = StreamProcessor("detect", spec, config=config, transport=reader)
        processor.run(threading.Event(), max_messages=report.total, idle_exit=2)
        anomalies = processor.sink.read_table(spec.sink.anomalies_table)
    found = anomalies.with_columns(pl.col("detector").str.replace(r"_\d+$", ""))
    return [
        {
            "detector": score.detector,
            "metrics": ",".join(score.metrics),
            "flagged": score.flagged,
            "precision": score.precision,
            "recall": score.recall,
            "episodes": f"{score.episodes_found}/{score.episodes}",
        }
        for score in score_detections(found, report.truth)
    ]


@contextlib.contextmanager
def private_broker() -> Iterator[str]:
    """A Mosquitto of our own: no per-client queue limit, nothing persisted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="loopline-mqtt-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n"
        )
        broker = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            broker.terminate()
            broker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="an MQTT broker (default: start one)")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--rates", default="1000,2500,5000")
    parser.add_argument("--rate-seconds", type=float, default=10)
    parser.add_argument("--window", type=int, default=5000, help="MQTT receive maximum")
    parser.add_argument("--max-rows", type=int, default=5000)
    parser.add_argument("--max-delay", default="20ms", help="micro-batch max_delay (latency runs)")
    parser.add_argument("--jetstream", action="store_true")
    parser.add_argument("--detect-readings", type=int, default=60_000)
    parser.add_argument("--skip", default="", help="comma list of: bare,loopline,latency,detect")
    for hidden in ("--prefix", "--count", "--rate", "--seed", "--timeout"):
        parser.add_argument(hidden, default="0", help=argparse.SUPPRESS)
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        role = sys.argv.pop(1)
        args = parser.parse_args()
        args.count, args.rate = int(args.count), float(args.rate)
        args.seed, args.timeout = int(args.seed), float(args.timeout)
        {
            "_publish": child_publish,
            "_bare_mqtt": child_bare_mqtt,
            "_bare_jetstream": child_bare_jetstream,
        }[role](args)
        return
    args = parser.parse_args()
    if args.url is None:
        with private_broker() as url:
            args.url = url
            measure(args)
    else:
        measure(args)


def measure(args: argparse.Namespace) -> None:
    skip = set(filter(None, args.skip.split(",")))
    print(f"stream benchmark: {args.messages:,} messages, broker {args.url}, {os.cpu_count()} CPUs")
    bare: dict[str, float] = {}
    if "bare" not in skip:
        bare = bare_mqtt(args)
        print(
            f"  bare-mqtt     {bare['msgs_per_s']:>9,.0f} msg/s  "
            f"{bare['cpu_us_per_msg']:6.1f} µs CPU/msg"
        )
        if args.jetstream:
            js = _last_json(
                subprocess.run(
                    _child("_bare_jetstream", args, count=args.messages),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            print(f"  bare-jetstream {js['rate']:>8,.0f} msg/s  (pull, fetch 500, ack each)")
    if "loopline" not in skip:
        run = loopline_run(args, args.messages, 0)
        ratio = f"{run['msgs_per_s'] / bare['msgs_per_s']:.2f}x bare" if bare else ""
        print(
            f"  loopline      {run['msgs_per_s']:>9,.0f} msg/s  {ratio}  "
            f"stored {run['stored']:,} / published {run['published']:,} "
            f"(unique {run['unique']:,})"
        )
    if "latency" not in skip:
        print("  latency (publish → row committed), loopline:")
        for rate in [float(r) for r in args.rates.split(",")]:
            count = int(rate * args.rate_seconds)
            run = loopline_run(args, count, rate)
            done = ""
            if "within_100ms" in run:
                done = f"  done ≤50 ms {run['within_50ms']:6.1%} ≤100 ms {run['within_100ms']:6.1%}"
            print(
                f"    {rate:>7,.0f} msg/s  p50 {run['p50_ms']:6.1f} ms  p99 {run['p99_ms']:6.1f} ms"
                f"{done}  stored {run['stored']:,} / {run['published']:,}"
            )
    if "detect" not in skip:
        print(f"  detection ({args.detect_readings:,} readings, 20 devices; truth: spikes, shifts)")
        for row in detection(args):
            print(
                f"    {row['detector']:<7} {row['metrics']:<32} flagged {row['flagged']:>6,}  "
                f"precision {row['precision']:.3f}  recall {row['recall']:.3f} "
                f"({row['episodes']} episodes)"
            )


if __name__ == "__main__":
    main()
