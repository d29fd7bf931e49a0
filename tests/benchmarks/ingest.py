"""Ingest benchmark: POST /v1/posts through the real HTTP stack against a bare one-XADD endpoint.

    python tests/benchmarks/ingest.py [--seconds 10] [--concurrency 32] [--rounds 1]
        [--aof no|everysec|always] [--floor] [--profile DIR] [--no-pin] [--target both|api|bare]

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts its own redis-server on a free loopback port in a temp dir (AOF off by default:
   the throughput figure; `--aof always` shows what durability costs);
2. serves bare_asgi.py (a raw ASGI callable: read body, one XADD, 202 JSON) with uvicorn
   exactly as `muster api` runs the API: one worker, loop/http "auto" (uvloop, httptools);
3. starts the real API (`python -m muster.cli api`), which makes `admin` from
   MUSTER_ADMIN_TOKEN; creates a person `bench` and posts with its token;
4. drives each target in turn (`--rounds` times, alternating) with C keep-alive HTTP/1.1
   connections for N measured seconds after a 1 s warm-up, from a separate load-generator
   process: the same request bytes, posted back to back on each connection;
5. prints posts/s, p50/p99 latency, the CPU each process used and the server's CPU per post,
   the ratio api/bare (goal ≥ 0.6), and checks that nothing was lost: every 202 is an
   entry in the stream (XLEN grew by exactly the number of 202s).

`--floor` also drives fastapi_floor.py (the bare endpoint's XADD as a plain FastAPI route):
what the framework alone costs. `--profile DIR` samples each server with py-spy (pip install
py-spy) during its runs and leaves collapsed stacks in DIR.

The load generator is a raw asyncio (uvloop) HTTP/1.1 client written here, not httpx, which
would itself be the bottleneck: it needs about a third of a core to saturate the bare
endpoint. Every process's CPU share is printed so you can see which one limits the figure:
a server at ~100% of its core is the bottleneck, as it should be. On a machine with ≥ 2 CPUs
the HTTP server is pinned to one CPU and redis-server + the load generator to the others
(--no-pin lets the scheduler place them), so each server gets one whole core. When other
processes compete for that core, posts/s drops for whichever target ran then, while the
server's CPU µs per post barely moves: the second ratio printed, bare/api µs per post, is the
one to trust on a busy machine. Exit status 1 if an event was lost or a request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: redis_server and benchmarks._servers

from benchmarks._servers import (  # noqa: E402
    ADMIN_TOKEN,
    STOP_TIMEOUT_S,
    call,
    clean_env,
    cpu_ticks,
    percentile,
    spawn,
    wait_for_port,
)
from redis_server import RedisServer, free_port, start_redis_server  # noqa: E402

from muster import keys  # noqa: E402

STREAM = keys.events(0)  # MUSTER_PARTITIONS=1: every post lands here, as the bare XADD does
POST_TEXT = "Benchmark: water main break on 5th street, avoid the area until further notice."
GOAL = 0.6  # the target: api posts/s ≥ 0.6 x the bare endpoint's


# --- the load generator (runs in its own process: `ingest.py --generate`, config on stdin) ----
class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: write a request, wait for the whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(ConnectionError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


@dataclass
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)  # requests sent inside the window
    in_window: int = 0  # 202s completed inside the window
    accepted: int = 0  # every 202, warm-up and tail included (compared with XLEN)
    statuses: dict[int, int] = field(default_factory=dict)
    sample_error: str | None = None
    failures: list[str] = field(default_factory=list)


async def _client(
    conn: _Connection, request: bytes, window: tuple[int, int], tally: _Tally
) -> None:
    begin, end = window
    clock = time.perf_counter_ns
    while (sent := clock()) < end:
        try:
            status, body = await conn.request(request)
        except ConnectionError as exc:
            tally.failures.append(str(exc))
            return
        done = clock()
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status == 202:
            tally.accepted += 1
            if begin <= sent and done <= end:
                tally.in_window += 1
                tally.latencies_ns.append(done - sent)
        elif tally.sample_error is None:
            tally.sample_error = body[:300].decode(errors="replace")


async def _generate(config: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    body = json.dumps({"text": POST_TEXT}).encode()
    request = (
        f"POST {config['path']} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{config['port']}\r\n"
        f"Authorization: Bearer {config['token']}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    connections = []
    for _ in range(config["concurrency"]):
        opening = loop.create_connection(_Connection, "127.0.0.1", config["port"])
        _, conn = await asyncio.wait_for(opening, timeout=10)
        connections.append(conn)
    watched: dict[str, int] = config["watch"]
    tally = _Tally()
    start = time.perf_counter_ns()
    begin = start + int(config["warmup"] * 1e9)
    end = begin + int(config["seconds"] * 1e9)
    clients = [
        asyncio.create_task(_client(conn, request, (begin, end), tally)) for conn in connections
    ]
    await asyncio.sleep(max(0.0, (begin - time.perf_counter_ns()) / 1e9))
    ticks_before = {name: cpu_ticks(pid) for name, pid in watched.items()}
    wall_before = time.perf_counter_ns()
    await asyncio.sleep(max(0.0, (end - time.perf_counter_ns()) / 1e9))
    ticks_after = {name: cpu_ticks(pid) for name, pid in watched.items()}
    wall = (time.perf_counter_ns() - wall_before) / 1e9
    await asyncio.wait_for(asyncio.gather(*clients), timeout=30)
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    hz = os.sysconf("SC_CLK_TCK")
    latencies = sorted(tally.latencies_ns)
    return {
        "posts_per_s": tally.in_window / config["seconds"],
        "in_window": tally.in_window,
        "accepted": tally.accepted,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "sample_error": tally.sample_error,
        "failures": tally.failures[:5],
        "p50_ms": percentile(latencies, 50) / 1e6,
        "p99_ms": percentile(latencies, 99) / 1e6,
        "cpu": {name: (ticks_after[name] - ticks_before[name]) / hz / wall for name in watched},
        "cpu_s": {name: (ticks_after[name] - ticks_before[name]) / hz for name in watched},
        "latencies_us": [ns // 1000 for ns in latencies],
    }


def generator_main() -> None:
    config = json.loads(sys.stdin.read())
    config["watch"]["generator"] = os.getpid()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        result = asyncio.run(_generate(config))
    else:
        result = uvloop.run(_generate(config))
    Path(config["output"]).write_text(json.dumps(result))


# --- the orchestration ----------------------------------------------------------------------
@dataclass
class Placement:
    """Which CPUs the HTTP server gets, and which redis-server and the load generator share."""

    server: set[int] | None
    others: set[int] | None

    @classmethod
    def choose(cls, pin: bool) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2:
            return cls(None, None)
        return cls({cpus[0]}, set(cpus[1:]))

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (the scheduler places server, redis-server and generator)"
        return (
            f"HTTP server pinned to CPU {sorted(self.server)}; redis-server and load "
            f"generator to CPU {sorted(self.others or ())}"
        )


def _pin(pid: int, cpus: set[int] | None) -> None:
    if cpus is not None:
        os.sched_setaffinity(pid, cpus)


def _start(
    stack: contextlib.ExitStack,
    command: list[str],
    env: dict[str, str],
    port: int,
    log: Path,
    placement: Placement,
) -> subprocess.Popen[bytes]:
    process = spawn(stack, command, env, log)
    _pin(process.pid, placement.server)
    wait_for_port(port, process, log)
    return process


@dataclass
class Target:
    name: str
    port: int
    token: str
    pid: int


def start_bare(
    stack: contextlib.ExitStack, redis: RedisServer, work: Path, placement: Placement
) -> Target:
    port = free_port()
    env = clean_env(redis_url=redis.url)
    command = [sys.executable, str(HERE / "bare_asgi.py"), str(port)]
    process = _start(stack, command, env, port, work / "bare.log", placement)
    return Target("bare ASGI", port, "unused", process.pid)


def start_floor(
    stack: contextlib.ExitStack, redis: RedisServer, work: Path, placement: Placement
) -> Target:
    port = free_port()
    env = clean_env(redis_url=redis.url)
    command = [sys.executable, str(HERE / "fastapi_floor.py"), str(port)]
    process = _start(stack, command, env, port, work / "floor.log", placement)
    return Target("FastAPI floor", port, "unused", process.pid)


def start_api(
    stack: contextlib.ExitStack, redis: RedisServer, work: Path, placement: Placement
) -> Target:
    """`muster api` itself, with `admin` from MUSTER_ADMIN_TOKEN; posts as person `bench`."""
    port = free_port()
    env = clean_env(
        redis_url=redis.url,
        admin_token=ADMIN_TOKEN,
        api_host="127.0.0.1",
        api_port=str(port),
        api_workers="1",
        partitions="1",
        data_dir=str(work / "var"),
    )
    command = [sys.executable, "-m", "muster.cli", "api"]
    process = _start(stack, command, env, port, work / "api.log", placement)
    created = call(port, "POST", "/v1/accounts", ADMIN_TOKEN, {"handle": "bench", "kind": "person"})
    return Target("muster api", port, created["token"], process.pid)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
done = function(summary, latency, requests)
  local q = {}
  for i = 1, 1000 do q[i] = latency:percentile(i / 10) end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, "quantiles_us": [%s]}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    table.concat(q, ",")))
end
"""


def drive_wrk(
    args: argparse.Namespace, target: Target, redis: RedisServer, placement: Placement, work: Path
) -> dict[str, Any]:
    """--wrk: the same run with wrk as the load generator (one thread, C connections): a warm-up
    run, then the measured one, CPU counted around it; wrk's latency histogram stands in for
    the per-request latencies (1,000 quantiles)."""
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    env = dict(os.environ, BENCH_TOKEN=target.token, BENCH_BODY=json.dumps({"text": POST_TEXT}))
    url = f"http://127.0.0.1:{target.port}/v1/posts"

    def wrk(seconds: float) -> subprocess.Popen[bytes]:
        command = ["wrk", "-t1", f"-c{args.concurrency}", f"-d{max(1, round(seconds))}s"]
        process = subprocess.Popen(
            [*command, "--timeout", "10s", "-s", str(script), url],
            env=env,
            stdout=subprocess.PIPE,
        )
        _pin(process.pid, placement.others)
        return process

    wrk(args.warmup).communicate(timeout=args.warmup + 60)
    before = _settled_xlen(redis)  # the warm-up's last requests are still being answered
    profiler = _profiler(args, target, placement)
    process = wrk(args.seconds)
    watched = {"server": target.pid, "redis": _pid(redis), "generator": process.pid}
    ticks_before = {name: cpu_ticks(pid) for name, pid in watched.items()}
    wall_before = time.perf_counter()
    ticks_after = dict(ticks_before)
    while process.poll() is None:  # its CPU is only readable while it runs
        ticks_after = {name: cpu_ticks(pid) for name, pid in watched.items()}
        wall = time.perf_counter() - wall_before
        time.sleep(0.05)
    out, _ = process.communicate(timeout=60)
    line = next(x for x in out.decode().splitlines() if x.startswith("WRK "))
    found = json.loads(line[4:])
    hz = os.sysconf("SC_CLK_TCK")
    accepted = found["requests"] - found["non2xx"]
    seconds = found["duration_us"] / 1e6
    quantiles = sorted(int(q) for q in found["quantiles_us"])
    if profiler is not None:
        profiler.wait(timeout=STOP_TIMEOUT_S + args.seconds)
    return {
        "posts_per_s": accepted / seconds,
        "in_window": accepted,
        "accepted": accepted,
        "statuses": {"202": accepted} | ({"non-2xx": found["non2xx"]} if found["non2xx"] else {}),
        "sample_error": None,
        "failures": [f"{found['errors']} socket errors"] if found["errors"] else [],
        "p50_ms": percentile(quantiles, 50) / 1e3,
        "p99_ms": percentile(quantiles, 99) / 1e3,
        "cpu": {n: (ticks_after[n] - ticks_before[n]) / hz / wall for n in watched},
        "cpu_s": {n: (ticks_after[n] - ticks_before[n]) / hz * seconds / wall for n in watched},
        "latencies_us": quantiles,
        "xlen_delta": _xlen(redis) - before,
        # wrk counts the answers it read: requests still in flight when it stops were sent
        # (and appended) but not counted, at most one per connection.
        "uncounted_max": args.concurrency,
    }


def _settled_xlen(redis: RedisServer) -> int:
    """XLEN once it has not grown for 0.2 s (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    length = _xlen(redis)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _xlen(redis)
        if now == length:
            break
        length = now
    return length


def drive(
    args: argparse.Namespace,
    target: Target,
    redis: RedisServer,
    placement: Placement,
    work: Path,
) -> dict[str, Any]:
    """One load-generator run against `target`; its figures, and how much the stream grew."""
    if args.wrk:
        return drive_wrk(args, target, redis, placement, work)
    config = {
        "port": target.port,
        "path": "/v1/posts",
        "token": target.token,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "watch": {"server": target.pid, "redis": _pid(redis)},
        "output": str(work / "generator.json"),
    }
    before = _xlen(redis)
    profiler = _profiler(args, target, placement)
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--generate"],
        stdin=subprocess.PIPE,
    )
    _pin(process.pid, placement.others)
    try:
        process.communicate(json.dumps(config).encode(), timeout=args.seconds + args.warmup + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise SystemExit("the load generator did not finish in time") from None
    if process.returncode != 0:
        raise SystemExit(f"the load generator failed with {process.returncode}")
    result: dict[str, Any] = json.loads(Path(config["output"]).read_text())
    result["xlen_delta"] = _xlen(redis) - before
    if profiler is not None:
        profiler.wait(timeout=STOP_TIMEOUT_S + args.seconds)
    return result


def _profiler(
    args: argparse.Namespace, target: Target, placement: Placement
) -> subprocess.Popen[bytes] | None:
    """--profile DIR: py-spy samples the server for the run; collapsed stacks to DIR/<target>-N.txt.

    The files open in https://www.speedscope.app or flamegraph.pl. py-spy runs on the
    generator's CPU(s); it pauses the server briefly for each sample (250 Hz), so
    throughput under --profile is a little lower.
    """
    if args.profile is None:
        return None
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH: pip install py-spy")
    args.profile.mkdir(parents=True, exist_ok=True)
    slug = target.name.replace(" ", "-")
    number = len(list(args.profile.glob(f"{slug}-*.txt"))) + 1
    out = args.profile / f"{slug}-{number}.txt"
    command = [spy, "record", "--pid", str(target.pid), "--rate", "250"]
    command += ["--duration", str(round(args.warmup + args.seconds)), "--format", "raw"]
    process = subprocess.Popen(
        [*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _pin(process.pid, placement.others)
    return process


def _xlen(redis: RedisServer) -> int:
    with redis.client() as client:
        return int(client.xlen(STREAM))


def _pid(redis: RedisServer) -> int:
    assert redis.process is not None
    return redis.process.pid


def _implementations() -> str:
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn loop=auto→{loop}, http=auto→{http}, 1 worker, access log off"


@dataclass
class Summary:
    """One target's runs together: throughput over all measured windows, merged latencies."""

    posts_per_s: float
    p50_ms: float
    p99_ms: float
    server_us_per_post: float

    @classmethod
    def of(cls, runs: list[dict[str, Any]], seconds: float) -> Summary:
        posts = sum(r["in_window"] for r in runs)
        latencies = sorted(us for r in runs for us in r["latencies_us"])
        cpu_s = sum(r["cpu_s"]["server"] for r in runs)
        return cls(
            posts_per_s=posts / (seconds * len(runs)),
            p50_ms=percentile(latencies, 50) / 1e3,
            p99_ms=percentile(latencies, 99) / 1e3,
            server_us_per_post=cpu_s / posts * 1e6 if posts else 0.0,
        )


def report(
    args: argparse.Namespace, placement: Placement, results: dict[str, list[dict[str, Any]]]
) -> bool:
    print(
        f"\ningest benchmark: POST /v1/posts, {args.concurrency} keep-alive connections, "
        f"{args.rounds} round(s) of {args.warmup:g} s warm-up + {args.seconds:g} s measured "
        f"per target, targets alternating; load from {'wrk' if args.wrk else 'the built-in generator'}"
    )
    print(f"  {_implementations()}; redis-server {_aof_label(args.aof)}")
    print(f"  {os.cpu_count()} CPUs: {placement.describe()}\n")
    header = (
        f"{'target':<16}{'posts/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'server':>8}{'µs/post':>9}"
        f"{'redis':>7}{'gen':>6}{'202s':>9}{'XLEN Δ':>9}  other"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for name, runs in results.items():
        for number, r in enumerate(runs, 1):
            cpu = r["cpu"]
            other = {k: v for k, v in r["statuses"].items() if k != "202"}
            label = f"{name} #{number}" if len(runs) > 1 else name
            us = r["cpu_s"]["server"] / r["in_window"] * 1e6 if r["in_window"] else 0.0
            print(
                f"{label:<16}{r['posts_per_s']:>9.0f}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}"
                f"{cpu['server']:>8.0%}{us:>9.0f}{cpu['redis']:>7.0%}{cpu['generator']:>6.0%}"
                f"{r['accepted']:>9}{r['xlen_delta']:>9}  {other or '-'}"
            )
            if not 0 <= r["xlen_delta"] - r["accepted"] <= r.get("uncounted_max", 0):
                ok = False
                print(f"  !! {label}: {r['accepted']} accepted but {r['xlen_delta']} in the stream")
            if other or r["failures"]:
                ok = False
                print(f"  !! {label}: {other} {r['failures']} e.g. {r['sample_error']}")
    print(
        "(server/redis/gen: share of one core each process used in the measured window; "
        "µs/post: server CPU per accepted post)"
    )
    summaries = {name: Summary.of(runs, args.seconds) for name, runs in results.items()}
    if len(results) > 1 and args.rounds > 1:
        print()
        for name, s in summaries.items():
            print(
                f"{name + ' (all)':<16}{s.posts_per_s:>9.0f}{s.p50_ms:>8.2f}{s.p99_ms:>8.2f}"
                f"{'':>8}{s.server_us_per_post:>9.0f}"
            )
    api, bare = summaries.get("muster api"), summaries.get("bare ASGI")
    if api is not None and bare is not None and bare.posts_per_s and api.server_us_per_post:
        ratio = api.posts_per_s / bare.posts_per_s
        verdict = "meets" if ratio >= GOAL else "is BELOW"
        print(
            f"\nratio api/bare posts/s = {api.posts_per_s:.0f} / {bare.posts_per_s:.0f} = "
            f"{ratio:.2f}: {verdict} the goal of ≥ {GOAL:.2f}"
        )
        print(
            f"ratio of server CPU per post (bare/api) = {bare.server_us_per_post:.0f} / "
            f"{api.server_us_per_post:.0f} µs = "
            f"{bare.server_us_per_post / api.server_us_per_post:.2f} (the same ratio, free of "
            "scheduling noise)"
        )
    print("no event lost: every 202 is in the stream" if ok else "\nFAILED: see !! above")
    return ok


def _aof_label(aof: str) -> str:
    return "appendonly no" if aof == "no" else f"appendonly yes, appendfsync {aof}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured s per target run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured s before each run")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate bare/api this many times (default 1)"
    )
    parser.add_argument(
        "--aof",
        choices=("no", "everysec", "always"),
        default="no",
        help="redis-server persistence: no (the throughput figure; default), everysec, always",
    )
    parser.add_argument(
        "--target", choices=("both", "api", "bare"), default="both", help="what to drive"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="server on one CPU, redis-server + generator on the others (default: on)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also drive fastapi_floor.py (one XADD as a plain FastAPI route): the framework's cost",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each server with py-spy during its runs; collapsed stacks into DIR",
    )
    parser.add_argument(
        "--wrk",
        action="store_true",
        help="drive with wrk (apt install wrk) instead of the built-in generator",
    )
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generator_main()
        return 0
    if args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("need --concurrency ≥ 1, --seconds > 0, --warmup ≥ 0, --rounds ≥ 1")
    placement = Placement.choose(args.pin)
    _pin(os.getpid(), placement.others)
    results: dict[str, list[dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="muster-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        redis = start_redis_server(
            work / "redis",
            appendonly=args.aof != "no",
            appendfsync=args.aof if args.aof != "no" else "always",
        )
        stack.callback(redis.kill)
        _pin(_pid(redis), placement.others)
        targets = []
        if args.target in {"both", "bare"}:
            targets.append(start_bare(stack, redis, work, placement))
        if args.floor:
            targets.append(start_floor(stack, redis, work, placement))
        if args.target in {"both", "api"}:
            targets.append(start_api(stack, redis, work, placement))
        for _ in range(args.rounds):
            for target in targets:
                results.setdefault(target.name, []).append(
                    drive(args, target, redis, placement, work)
                )
    return 0 if report(args, placement, results) else 1


if __name__ == "__main__":
    sys.exit(main())
