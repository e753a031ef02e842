"""Load generator for the serving benchmarks: N keep-alive connections, D seconds, latencies.

Run alone (any HTTP/1.1 server)::

    .venv/bin/python benchmarks/serve_load.py http://127.0.0.1:8000/v1/models/churn/predict \\
        -X POST -H "X-API-Key: secret" --body '{"row": {...}}' -c 32 -d 10

or import it from another benchmark (``serve_predict.py``, ``serve_recommend.py``): build a
:class:`LoadSpec` and call :func:`measure`, which runs the generator in a process of its
own (pinned to ``cpu`` when given) and returns a :class:`LoadResult`.

Two generators, same spec, same result:
  wrk     ``wrk`` (Debian package ``wrk``) when it is on PATH: one thread, a Lua script that
          cycles through the pre-formatted requests; latency percentiles from wrk's own
          histogram; errors = socket errors + non-2xx/3xx responses. No per-kind figures.
  python  this module on raw asyncio streams (uvloop when installed): each connection
          sends a request, reads the response (Content-Length or chunked), records the
          latency in ns and the status, and sends the next: a closed loop, like wrk. It
          costs ~40-60 µs of CPU per request, far less than any server under test.

Requests: a list of templates (method, path, headers, body), cycled in order by every
connection, each connection starting at another offset; a mix such as 4 recommendation
GETs then 1 event POST is a list of 5 templates. Each template has a ``kind``; the Python
generator reports every kind on its own beside the total.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve()


@dataclass
class RequestTemplate:
    """One request: ``body`` is sent as is (``str`` UTF-8 encoded); Content-Length is added."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    kind: str = "request"

    def raw(self, host: str) -> bytes:
        body = self.body.encode()
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadSpec:
    """What to send where: ``url`` is ``http://host:port``; stop after ``duration`` seconds
    or ``count`` requests (whichever comes first; 0 = no limit)."""

    url: str
    requests: list[RequestTemplate]
    concurrency: int = 32
    duration: float = 10.0
    count: int = 0
    timeout: float = 30.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadSpec:
        templates = [RequestTemplate(**r) for r in data.pop("requests")]
        return cls(requests=templates, **data)


@dataclass
class LoadResult:
    """Requests/s and latency percentiles (ms) of one load run; ``kinds``: per kind, from the
    Python generator only."""

    generator: str
    concurrency: int
    requests: int
    seconds: float
    errors: int
    statuses: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    kinds: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# -- the Python generator --------------------------------------------------------------------


def _percentile(values: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (ns), in ms."""
    if not values:
        return 0.0
    rank = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[rank] / 1e6


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.find(b"\r\n", at + 2)
        length = int(lower[at + 17 : end])
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    if lower.startswith(b"http/1.0"):
        return status, b"\r\nconnection: keep-alive" in lower
    return status, b"\r\nconnection: close" not in lower


class _Recorder:
    def __init__(self, kinds: list[str], count: int) -> None:
        self.latency = {kind: array("q") for kind in kinds}
        self.statuses: dict[str, dict[int, int]] = {kind: {} for kind in kinds}
        self.left = count or -1
        self.first = 0
        self.last = 0

    def ticket(self) -> bool:
        if self.left == 0:
            return False
        self.left -= 1
        return True

    def record(self, kind: str, status: int, started: int, ended: int) -> None:
        self.latency[kind].append(ended - started)
        by_status = self.statuses[kind]
        by_status[status] = by_status.get(status, 0) + 1
        self.last = max(self.last, ended)


async def _connection(
    spec: LoadSpec, raws: list[tuple[str, bytes]], offset: int, deadline: int, rec: _Recorder
) -> None:
    parts = urlsplit(spec.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    i = offset
    while time.perf_counter_ns() < deadline and rec.ticket():
        kind, raw = raws[i % len(raws)]
        i += 1
        started = time.perf_counter_ns()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(raw)
            status, keep = await asyncio.wait_for(_read_response(reader), spec.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, keep = 0, False
        rec.record(kind, status, started, time.perf_counter_ns())
        if not keep and writer is not None:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _run_python(spec: LoadSpec) -> LoadResult:
    parts = urlsplit(spec.url)
    netloc = parts.netloc
    raws = [(t.kind, t.raw(netloc)) for t in spec.requests]
    kinds = list(dict.fromkeys(kind for kind, _ in raws))
    rec = _Recorder(kinds, spec.count)
    rec.first = time.perf_counter_ns()
    deadline = rec.first + int((spec.duration or 1e9) * 1e9)
    step = max(1, len(raws) // max(1, spec.concurrency))
    await asyncio.gather(
        *(_connection(spec, raws, n * step, deadline, rec) for n in range(spec.concurrency))
    )
    seconds = (max(rec.last, rec.first + 1) - rec.first) / 1e9
    everything: list[int] = sorted(v for kind in kinds for v in rec.latency[kind])
    statuses: dict[str, int] = {}
    per_kind: dict[str, dict[str, float]] = {}
    for kind in kinds:
        values = sorted(rec.latency[kind])
        for status, n in rec.statuses[kind].items():
            statuses[str(status)] = statuses.get(str(status), 0) + n
        per_kind[kind] = {
            "requests": len(values),
            "rps": len(values) / seconds,
            "errors": sum(n for s, n in rec.statuses[kind].items() if not 200 <= s < 400),
            "p50_ms": _percentile(values, 50),
            "p90_ms": _percentile(values, 90),
            "p99_ms": _percentile(values, 99),
        }
    return LoadResult(
        generator="python",
        concurrency=spec.concurrency,
        requests=len(everything),
        seconds=seconds,
        errors=sum(n for s, n in statuses.items() if not 200 <= int(s) < 400),
        statuses=statuses,
        p50_ms=_percentile(everything, 50),
        p90_ms=_percentile(everything, 90),
        p99_ms=_percentile(everything, 99),
        max_ms=everything[-1] / 1e6 if everything else 0.0,
        kinds=per_kind,
    )


def run_python(spec: LoadSpec) -> LoadResult:
    """Run the Python generator in this process (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run_python(spec))
    return uvloop.run(_run_python(spec))


# -- wrk -------------------------------------------------------------------------------------

_LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50": %d, "p90": %d, "p99": %d, "max": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    level = "=" * 4
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script: the templates pre-formatted, cycled from a per-connection offset."""
    lines = ["local reqs = {}"]
    for t in spec.requests:
        headers = ", ".join(
            f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in t.headers.items()
        )
        body = _lua_string(t.body) if t.body else "nil"
        lines.append(
            f"reqs[#reqs + 1] = wrk.format({_lua_string(t.method)}, {_lua_string(t.path)}, "
            f"{{{headers}}}, {body})"
        )
    lines += [
        "local i = 0",
        "request = function()",
        "  i = i % #reqs + 1",
        "  return reqs[i]",
        "end",
    ]
    return "\n".join(lines) + _LUA_DONE


def run_wrk(spec: LoadSpec, *, cpu: int | None = None) -> LoadResult:
    """Run wrk (one thread, ``concurrency`` connections) on ``spec``; needs ``duration``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not on PATH (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(spec))
    try:
        command = [
            wrk,
            "-t1",
            f"-c{spec.concurrency}",
            f"-d{max(1, round(spec.duration))}s",
            f"--timeout={max(1, round(spec.timeout))}s",
            "-s",
            script.name,
            spec.url,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, preexec_fn=_pin(cpu)
        )
        out, err = done.stdout, done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"wrk exited with {done.returncode}: {(err or out)[-1000:]}")
    finally:
        os.unlink(script.name)
    if problems := [ln for ln in err.splitlines() if script.name in ln]:
        raise RuntimeError("wrk could not run its script: " + "; ".join(problems))
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    errors = socket_errors + data["status"]
    return LoadResult(
        generator="wrk",
        concurrency=spec.concurrency,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        statuses={"non-2xx/3xx": data["status"], "socket": socket_errors},
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p99_ms=data["p99"] / 1000,
        max_ms=data["max"] / 1000,
    )


# -- servers under test ----------------------------------------------------------------------

SINGLE_THREADED = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def tree_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of process ``pid`` and its live descendants, and the
    seconds their threads spent runnable but waiting for a CPU (``schedstat``), from /proc.

    The wait shows how much other work on the machine held the server back: on a shared
    machine, latency can grow while CPU per request does not.
    """
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, todo = set(), [pid]
    while todo:
        current = todo.pop()
        tree.add(current)
        todo += [child for child, parent in parents.items() if parent == current]
    waited = 0
    for process in tree:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{process}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    waited += int(
                        Path(f"/proc/{process}/task/{task}/schedstat").read_text().split()[1]
                    )
    return sum(times.get(p, 0.0) for p in tree), waited / 1e9


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_ready(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} was not ready after {timeout:.0f} s")


@contextlib.contextmanager
def server(
    command: list[str],
    ready_url: str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    cpu: int | None = None,
    log: Path | None = None,
    timeout: float = 180.0,
) -> Iterator[int]:
    """Start a server (its own session, pinned to ``cpu``, one BLAS / OpenMP thread), wait
    until ``ready_url`` answers 200, yield its pid, and stop its whole process group."""
    environment = os.environ | SINGLE_THREADED | (env or {})
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(open(log, "wb")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pin(cpu),
        )
        try:
            wait_ready(ready_url, timeout, proc)
            yield proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass
class ServerRun:
    """One load on a running server: the load's result and the server's CPU per request."""

    load: LoadResult
    cpu_ms_per_request: float
    cpu_share: float = 0.0  # server CPU seconds per second of load (1.0 = one core busy)
    wait_share: float = 0.0  # seconds its threads waited for a CPU, per second of load


def load_server(
    pid: int,
    spec: LoadSpec,
    *,
    warmup: float = 2.0,
    generator: str = "auto",
    cpu: int | None = None,
) -> ServerRun:
    """Warm up for ``warmup`` seconds, then measure ``spec`` and the server tree's CPU."""
    if warmup:
        measure(replace(spec, duration=warmup, count=0), generator=generator, cpu=cpu)
    cpu_before, wait_before = tree_usage(pid)
    result = measure(spec, generator=generator, cpu=cpu)
    cpu_after, wait_after = tree_usage(pid)
    used, waited, seconds = cpu_after - cpu_before, wait_after - wait_before, result.seconds or 1
    return ServerRun(
        result, used / max(result.requests, 1) * 1000, used / seconds, waited / seconds
    )


def format_server(run: ServerRun) -> str:
    """``server CPU 1.23 ms/req, 0.85 core busy, 0.10 s/s waiting for a CPU``."""
    return (
        f"server CPU {run.cpu_ms_per_request:6.2f} ms/req, {run.cpu_share:4.2f} core busy, "
        f"{run.wait_share:4.2f} s/s waiting for a CPU"
    )


def one_core_estimate(run: ServerRun) -> str:
    """What the server would do with one CPU to itself, from its CPU per request alone:
    at most 1000 / (CPU ms per request) req/s, and by Little's law (closed loop, ``c``
    requests always in flight) a mean latency of at least ``c`` x CPU ms per request.
    A bound, not a measurement: it ignores waiting on anything but the CPU."""
    ms = run.cpu_ms_per_request
    if not ms:
        return "one-core estimate: -"
    return (
        f"one-core estimate: <= {1000 / ms:,.0f} req/s, mean latency >= "
        f"{run.load.concurrency * ms:.1f} ms at c={run.load.concurrency}"
    )


# -- driver API ------------------------------------------------------------------------------


def _pin(cpu: int | None) -> Any:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def pick_generator(choice: str = "auto") -> str:
    """``wrk`` when asked for or (``auto``) when it is on PATH, else ``python``."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return choice


def measure(spec: LoadSpec, *, generator: str = "auto", cpu: int | None = None) -> LoadResult:
    """Run one load in a process of its own (pinned to ``cpu``) and return its result.

    The Python generator is used when ``spec.count`` is set (wrk only runs for a duration)
    or when ``generator`` is ``python`` or wrk is missing.
    """
    chosen = "python" if spec.count else pick_generator(generator)
    if chosen == "wrk":
        return run_wrk(spec, cpu=cpu)
    payload = json.dumps(asdict(spec))
    out = subprocess.run(
        [sys.executable, str(HERE), "_spec"],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=_pin(cpu),
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return LoadResult(**data)


def format_result(result: LoadResult) -> str:
    text = (
        f"{result.rps:9,.0f} req/s  p50 {result.p50_ms:7.2f} ms  p90 {result.p90_ms:7.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}/{result.requests}"
    )
    for kind, k in result.kinds.items() if len(result.kinds) > 1 else ():
        text += (
            f"\n    {kind:<16}{k['rps']:9,.0f} req/s  p50 {k['p50_ms']:7.2f} ms  "
            f"p99 {k['p99_ms']:7.2f} ms  errors {k['errors']:.0f}"
        )
    return text


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_spec":  # child: spec on stdin, result on stdout
        spec = LoadSpec.from_dict(json.loads(sys.stdin.read()))
        print(json.dumps(asdict(run_python(spec))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="http://host:port/path")
    parser.add_argument("-X", "--method", default="GET")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--body", default="", help="request body (a file with @path)")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("-n", "--count", type=int, default=0, help="stop after N requests")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--cpu", type=int, default=None, help="pin the generator to this CPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    body = Path(args.body[1:]).read_text() if args.body.startswith("@") else args.body
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if body and "content-type" not in {k.lower() for k in headers}:
        headers["Content-Type"] = "application/json"
    parts = urlsplit(args.url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    spec = LoadSpec(
        url=f"{parts.scheme}://{parts.netloc}",
        requests=[RequestTemplate(args.method, path, headers, body)],
        concurrency=args.concurrency,
        duration=args.duration,
        count=args.count,
    )
    result = measure(spec, generator=args.generator, cpu=args.cpu)
    if args.json:
        print(json.dumps(asdict(result) | {"rps": result.rps}))
    else:
        print(f"{result.generator}, {result.concurrency} connections: {format_result(result)}")


if __name__ == "__main__":
    main()
