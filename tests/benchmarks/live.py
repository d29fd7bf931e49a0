"""Live-stream benchmark: post → SSE latency with 200 connected streams at 200 posts/s.

    python tests/benchmarks/live.py [--rate 200] [--seconds 10] [--followers 200]

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts its own redis-server on a free loopback port in a temp dir (no AOF, no RDB), the
   real API (`python -m muster.cli api`, one uvicorn worker) and a real timeline worker
   (`python -m muster.cli worker timeline`), with MUSTER_PARTITIONS=1;
2. through the API as `admin` (MUSTER_ADMIN_TOKEN): creates team `ops`, a member `poster`
   allowed to post as `ops`, and F members enrolled to follow `ops` (channel app), and
   waits until the timeline worker has projected the enrolments;
3. from a separate receiver process (asyncio on uvloop, raw HTTP/1.1 over sockets: httpx
   would itself be the bottleneck) opens one `GET /v1/stream` per follower, each with that
   follower's token, and waits until every stream has started;
4. publishes R posts/s for W + S seconds through `POST /v1/posts` as `ops` (paced on a clock,
   over a few keep-alive connections); each post's text carries its number and its send time
   (CLOCK_MONOTONIC, which both processes share);
5. the receiver timestamps each chunk as it arrives and records, per (post, stream), receive
   time - send time; it then waits for stragglers (bounded) and reports.
It prints p50/p99/max latency over the S measured seconds (the first W seconds warm up),
latency per second of the run (a growing figure means something cannot keep up), how many
of the expected events arrived (must be all: accepted posts x F), duplicates and order
faults, and the CPU each process used. Goal: p99 < 100 ms. Exit status 1 if an event is
missing, duplicated or out of order, or a post was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
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

import redis  # noqa: E402
from benchmarks._servers import (  # noqa: E402
    ADMIN_TOKEN,
    call,
    clean_env,
    cpu_ticks,
    machine_busy_ticks,
    muster,
    percentile,
    spawn,
    tail,
    wait_for_port,
)
from redis_server import RedisServer, free_port, start_redis_server  # noqa: E402

from muster import keys  # noqa: E402
from muster.ids import id_time_ms  # noqa: E402

TEAM = "ops"
POSTER = "poster"
GOAL_P99_MS = 100.0
STAGES = (
    "send → post id (api)",
    "post id → LIVE entry (worker)",
    "LIVE entry → received (hub, SSE)",
)
POOL = 8  # publisher keep-alive connections
DRAIN_TIMEOUT_S = 20.0  # how long the receiver waits for stragglers after the last post
_MARK = re.compile(rb"bench (\d+) (\d+) (\d+)")  # number, monotonic ns, wall µs at send
_POST_ID = re.compile(rb'"id":"(\d+)"')
_ID = re.compile(rb"^id: (\d+)-(\d+)$", re.MULTILINE)


def _loop_run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- the receiver (its own process: `live.py --receive`, config and expectations on stdin) ---
class _Stream(asyncio.Protocol):
    """One SSE connection: HTTP/1.1 chunked body → SSE events → (post number, latency)."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = bytearray()  # raw bytes not yet de-chunked
        self.text = bytearray()  # de-chunked SSE text not yet split into events
        self.head_done = False
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.latency_ns: dict[int, int] = {}
        self.stages_us: dict[int, tuple[int, int, int]] = {}  # ingest, worker, delivery
        self.duplicates = 0
        self.disorder = 0
        self.unmarked = 0
        self.last_id = (0, 0)
        self.failure: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cast(asyncio.Transport, transport).write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection closed: {exc}")

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        if not self.started.done():
            self.started.set_exception(ConnectionError(why))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns(), time.time_ns() // 1000
        buffer = self.buffer
        buffer += data
        if not self.head_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            del buffer[: end + 4]
            if head[9:12] != b"200" or b"transfer-encoding: chunked" not in head:
                self._fail(f"unexpected response: {head[:200]!r}")
                return
            self.head_done = True
        while (line := buffer.find(b"\r\n")) >= 0:
            size = int(bytes(buffer[:line]).split(b";")[0], 16)
            if size == 0:
                self._fail("stream ended")
                return
            if len(buffer) < line + 4 + size:
                break
            self.text += buffer[line + 2 : line + 2 + size]
            del buffer[: line + 4 + size]
        text = self.text
        while (end := text.find(b"\n\n")) >= 0:
            self._event(bytes(text[:end]), now)
            del text[: end + 2]

    def _event(self, block: bytes, now: tuple[int, int]) -> None:
        if block.startswith(b"retry:"):
            if not self.started.done():
                self.started.set_result(None)
            return
        if b"\nevent: post\n" not in block:
            return  # a keep-alive comment, or a DM (none are sent here)
        found = _ID.search(block)
        entry = (0, 0)
        if found is not None:
            entry = (int(found[1]), int(found[2]))
            if entry <= self.last_id:
                self.disorder += 1
            self.last_id = entry
        mark = _MARK.search(block)
        if mark is None:
            self.unmarked += 1
            return
        number = int(mark[1])
        if number in self.latency_ns:
            self.duplicates += 1
            return
        self.latency_ns[number] = now[0] - int(mark[2])
        post_id = _POST_ID.search(block)
        if post_id is not None and found is not None:
            # wall-clock stages (ms resolution: ids and LIVE entry ids carry milliseconds)
            accepted_us = id_time_ms(int(post_id[1])) * 1000
            announced_us = entry[0] * 1000
            self.stages_us[number] = (
                accepted_us - int(mark[3]),
                announced_us - accepted_us,
                now[1] - announced_us,
            )


async def _receive(config: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    streams: list[_Stream] = []
    for token in config["tokens"]:
        request = (
            f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{config['port']}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        _, stream = await loop.create_connection(
            functools.partial(_Stream, request), "127.0.0.1", config["port"]
        )
        streams.append(stream)
    await asyncio.wait_for(asyncio.gather(*(s.started for s in streams)), timeout=30)
    print(json.dumps({"ready": len(streams)}), flush=True)
    expected = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    accepted: list[int] = expected["accepted"]
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(len(s.latency_ns) >= len(accepted) for s in streams):
            break
        await asyncio.sleep(0.05)
    measured_from: int = expected["measured_from"]
    per_second: dict[int, list[int]] = {}
    measured: list[int] = []
    missing = 0
    rate = expected["rate"]
    for s in streams:
        for number in accepted:
            latency = s.latency_ns.get(number)
            if latency is None:
                missing += 1
                continue
            per_second.setdefault(number // rate, []).append(latency)
            if number >= measured_from:
                measured.append(latency)
    measured.sort()
    stages = [
        sorted(
            s.stages_us[n][i]
            for s in streams
            for n in accepted
            if n >= measured_from and n in s.stages_us
        )
        for i in range(3)
    ]
    return {
        "stages_ms": {
            name: [
                percentile(values, 50) / 1e3,
                percentile(values, 99) / 1e3,
                (values[-1] / 1e3) if values else 0.0,
            ]
            for name, values in zip(STAGES, stages, strict=True)
        },
        "connections": len(streams),
        "received": sum(len(s.latency_ns) for s in streams),
        "expected": len(accepted) * len(streams),
        "missing": missing,
        "unexpected": sum(len(set(s.latency_ns) - set(accepted)) for s in streams),
        "duplicates": sum(s.duplicates for s in streams),
        "disorder": sum(s.disorder for s in streams),
        "unmarked": sum(s.unmarked for s in streams),
        "failures": [s.failure for s in streams if s.failure][:5],
        "measured": len(measured),
        "p50_ms": percentile(measured, 50) / 1e6,
        "p90_ms": percentile(measured, 90) / 1e6,
        "p99_ms": percentile(measured, 99) / 1e6,
        "p999_ms": percentile(measured, 99.9) / 1e6,
        "max_ms": (measured[-1] / 1e6) if measured else 0.0,
        "per_second": {
            str(second): [
                percentile(sorted(values), 50) / 1e6,
                percentile(sorted(values), 99) / 1e6,
                max(values) / 1e6,
            ]
            for second, values in sorted(per_second.items())
        },
    }


def receiver_main() -> None:
    config = json.loads(sys.stdin.readline())
    result = _loop_run(_receive(config))
    print(json.dumps(result), flush=True)


# --- the publisher (runs in the orchestrating process) ---------------------------------------
class _Poster(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: write a request, wait for the whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
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
        total = end + 4 + int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < total:
            return
        del self.buffer[:total]
        waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


@dataclass
class Published:
    accepted: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    post_ms: list[int] = field(default_factory=list)  # 202 round trips, µs
    late_us: list[int] = field(default_factory=list)  # send time - scheduled time
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core
    cpu_s: dict[str, float] = field(default_factory=dict)
    others: float = 0.0  # cores busy with processes not in this benchmark
    lag_after: int = 0


async def publish(
    port: int, token: str, rate: int, total: int, watch: dict[str, int], client: redis.Redis
) -> Published:
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[_Poster] = asyncio.Queue()
    for _ in range(POOL):
        _, poster = await loop.create_connection(_Poster, "127.0.0.1", port)
        idle.put_nowait(poster)
    out = Published()
    head = (
        f"POST /v1/posts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    )

    async def one(poster: _Poster, number: int, due: int) -> None:
        sent = time.perf_counter_ns()
        text = f"bench {number} {sent} {time.time_ns() // 1000}"
        body = json.dumps({"text": text, "as": TEAM}).encode()
        data = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        status = await poster.request(data)
        out.post_ms.append((time.perf_counter_ns() - sent) // 1000)
        out.late_us.append((sent - due) // 1000)
        out.statuses[status] = out.statuses.get(status, 0) + 1
        if status == 202:
            out.accepted.append(number)
        idle.put_nowait(poster)

    interval = 1_000_000_000 // rate
    ticks = {name: cpu_ticks(pid) for name, pid in watch.items()}
    busy = machine_busy_ticks()
    began = time.perf_counter_ns()
    start = began + 20_000_000
    tasks = []
    for number in range(total):
        due = start + number * interval
        delay = (due - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        poster = await idle.get()
        tasks.append(asyncio.create_task(one(poster, number, due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    wall = (time.perf_counter_ns() - began) / 1e9
    hz = os.sysconf("SC_CLK_TCK")
    out.cpu_s = {n: (cpu_ticks(pid) - ticks[n]) / hz for n, pid in watch.items()}
    out.cpu = {n: used / wall for n, used in out.cpu_s.items()}
    out.others = ((machine_busy_ticks() - busy) / hz - sum(out.cpu_s.values())) / wall
    groups: Any = client.xinfo_groups(keys.events(0))
    out.lag_after = sum(int(g.get("lag") or 0) + int(g["pending"]) for g in groups)
    while not idle.empty():
        transport = idle.get_nowait().transport
        if transport is not None:
            transport.close()
    out.accepted.sort()
    return out


# --- the orchestration -------------------------------------------------------------------------
@dataclass
class Stack:
    api_port: int
    api_pid: int
    worker_pid: int
    poster_token: str
    reader_tokens: list[str]


def start(stack: contextlib.ExitStack, server: RedisServer, work: Path, followers: int) -> Stack:
    port = free_port()
    env = clean_env(
        redis_url=server.url,
        admin_token=ADMIN_TOKEN,
        api_host="127.0.0.1",
        api_port=str(port),
        api_workers="1",
        partitions="1",
        data_dir=str(work / "var"),
    )
    api = spawn(stack, muster("api"), env, work / "api.log")
    wait_for_port(port, api, work / "api.log")
    worker = spawn(stack, muster("worker", "timeline"), env, work / "worker.log")

    def admin(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return call(port, method, path, ADMIN_TOKEN, body)

    admin("POST", "/v1/accounts", {"handle": TEAM, "kind": "team"})
    poster = admin("POST", "/v1/accounts", {"handle": POSTER, "kind": "person", "role": "member"})
    admin("PUT", f"/v1/accounts/{TEAM}/posters/{POSTER}")
    handles = [f"reader_{i:04d}" for i in range(followers)]
    tokens = [
        admin("POST", "/v1/accounts", {"handle": h, "kind": "person", "role": "member"})["token"]
        for h in handles
    ]
    admin(
        "PUT",
        f"/v1/accounts/{TEAM}/enrolments",
        {"followers": handles, "channels": ["app"], "mandatory": False},
    )
    deadline = time.monotonic() + 30
    with server.client() as client:
        while int(client.hlen(keys.followers(0, TEAM))) < followers:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the timeline worker did not project the enrolments:\n"
                    f"{tail(work / 'worker.log')}"
                )
            time.sleep(0.05)
    return Stack(port, api.pid, worker.pid, poster["token"], tokens)


def run(args: argparse.Namespace) -> tuple[Published, dict[str, Any]]:
    total = args.rate * (args.warmup + args.seconds)
    with (
        tempfile.TemporaryDirectory(prefix="muster-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        server = start_redis_server(work / "redis")
        stack.callback(server.kill)
        s = start(stack, server, work, args.followers)
        receiver = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--receive"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        stack.callback(_kill, receiver)
        assert receiver.stdin is not None
        assert receiver.stdout is not None
        receiver.stdin.write(json.dumps({"port": s.api_port, "tokens": s.reader_tokens}).encode())
        receiver.stdin.write(b"\n")
        receiver.stdin.flush()
        ready = receiver.stdout.readline()
        if not ready:
            raise SystemExit("the receiver failed to open its streams")
        assert server.process is not None
        watch = {
            "api": s.api_pid,
            "timeline worker": s.worker_pid,
            "redis-server": server.process.pid,
            "receiver": receiver.pid,
            "publisher": os.getpid(),
        }
        with server.client() as client:
            published = cast(
                Published,
                _loop_run(publish(s.api_port, s.poster_token, args.rate, total, watch, client)),
            )
        expected = {
            "accepted": published.accepted,
            "measured_from": args.rate * args.warmup,
            "rate": args.rate,
        }
        out, _ = receiver.communicate(
            json.dumps(expected).encode() + b"\n", timeout=DRAIN_TIMEOUT_S + 30
        )
        if receiver.returncode != 0:
            raise SystemExit(f"the receiver failed with {receiver.returncode}")
        return published, json.loads(out.decode().strip().splitlines()[-1])


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def report(args: argparse.Namespace, published: Published, r: dict[str, Any]) -> bool:
    posts = len(published.accepted)
    print(
        f"\nlive benchmark: {args.followers} SSE streams (one per follower of `{TEAM}`), "
        f"{args.rate} posts/s through POST /v1/posts for {args.warmup} s warm-up + "
        f"{args.seconds} s measured"
    )
    print(
        f"  api: `muster api` (1 uvicorn worker), 1 timeline worker, MUSTER_PARTITIONS=1; "
        f"{os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
    )
    post_ms = sorted(published.post_ms)
    late = sorted(published.late_us)
    print(
        f"\nposts: {posts} accepted of {sum(published.statuses.values())} "
        f"{dict(sorted(published.statuses.items()))}; POST round trip p50 "
        f"{percentile(post_ms, 50) / 1e3:.1f} ms, p99 {percentile(post_ms, 99) / 1e3:.1f} ms; "
        f"sends late vs schedule p99 {percentile(late, 99) / 1e3:.1f} ms, "
        f"max {late[-1] / 1e3 if late else 0:.1f} ms"
    )
    print(f"timeline group lag + pending right after the last post: {published.lag_after}")
    print(
        "CPU (share of one core, publishing window): "
        + ", ".join(f"{name} {share:.0%}" for name, share in published.cpu.items())
        + f"; other processes on this machine {published.others:.0%}"
    )
    if r["received"]:
        print(
            f"api CPU per delivered event: {published.cpu_s['api'] / r['received'] * 1e6:.1f} µs "
            "(all api work in the window, posts included, over posts x streams)"
        )
    print(
        f"\nevents: {r['received']} received of {r['expected']} expected "
        f"({posts} posts x {r['connections']} streams); missing {r['missing']}, "
        f"duplicates {r['duplicates']}, out of order {r['disorder']}, "
        f"unexpected {r['unexpected']}, unmarked {r['unmarked']}"
    )
    if r["failures"]:
        print(f"  stream failures: {r['failures']}")
    print("\nlatency per second of the run (post sent → event received), ms:")
    print(f"{'second':>7}{'p50':>9}{'p99':>9}{'max':>9}")
    for second, (p50, p99, top) in r["per_second"].items():
        note = "  (warm-up)" if int(second) < args.warmup else ""
        print(f"{second:>7}{p50:>9.1f}{p99:>9.1f}{top:>9.1f}{note}")
    print(
        f"\npost → SSE latency over {r['measured']} measured events: p50 {r['p50_ms']:.1f} ms, "
        f"p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, p99.9 {r['p999_ms']:.1f} ms, "
        f"max {r['max_ms']:.1f} ms"
    )
    print("stages (wall clock, ms resolution), ms:")
    for name, (p50, p99, top) in r["stages_ms"].items():
        print(f"  {name:<34} p50 {p50:>7.1f}  p99 {p99:>7.1f}  max {top:>7.1f}")
    complete = (
        r["missing"] == 0
        and r["duplicates"] == 0
        and r["disorder"] == 0
        and posts == sum(published.statuses.values())
    )
    meets = r["p99_ms"] < GOAL_P99_MS
    print(
        f"p99 {r['p99_ms']:.1f} ms {'meets' if meets else 'MISSES'} the goal of < "
        f"{GOAL_P99_MS:.0f} ms; "
        + ("every expected event arrived once, in order" if complete else "FAILED: see above")
    )
    return complete


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=200, help="posts per second (200)")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds (10)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured seconds first (1)")
    parser.add_argument("--followers", type=int, default=200, help="SSE streams (200)")
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receiver_main()
        return 0
    if min(args.rate, args.seconds, args.followers) < 1 or args.warmup < 0:
        parser.error("need --rate, --seconds, --followers ≥ 1 and --warmup ≥ 0")
    published, result = run(args)
    return 0 if report(args, published, result) else 1


if __name__ == "__main__":
    sys.exit(main())
