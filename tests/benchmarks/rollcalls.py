"""Roll-call benchmark: 50,000 answers to a 100,000-person roll-call through the real API,
while another client reads the report.

    python tests/benchmarks/rollcalls.py [--audience 100000] [--answers 50000] [--clients 16]
        [--partitions 8] [--posts 10000] [--profile DIR]

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts its own redis-server on a free loopback port in a temp dir (no AOF, no RDB), the
   real API (`python -m muster.cli api`, one uvicorn worker) and a real timeline worker, with
   MUSTER_PARTITIONS=8 (the report sums every partition);
2. creates the audience in bulk: N member accounts, each an AccountCreated applied by the
   write side and appended to the log in pipelines (the api's create_account without its
   per-account round trips), then an `all_members` enrolment of team `ops` through the API,
   which the timeline worker expands into N follows — the real path;
3. opens a roll-call as `ops` (POST /v1/posts with `rollcall`) and waits until the worker has
   recorded the whole audience (its walk: RollCallAudienceRecorded pages);
4. reads GET /v1/rollcalls/{id} 300 times with nothing else running: the idle baseline;
5. from a separate load process (asyncio, raw HTTP/1.1 keep-alive connections: httpx would be
   the bottleneck) sends A answers (`POST /v1/rollcalls/{id}/responses`, each with its own
   person's token, 1 in 10 "help") over C connections, while this process reads the report
   in a loop (one request at a time, 20 ms apart); then checks the final report counts them
   all;
6. sends P plain posts (`POST /v1/posts`, one person's token) from the same load process
   over the same C connections: the baseline for answers/s.
`--profile DIR` samples the api with py-spy (pip install py-spy) while the answers are sent and
leaves its collapsed stacks in DIR/api-answers.txt (speedscope, flamegraph.pl).
It prints answers/s and posts/s and their ratio, the api's CPU per answer and per post (the
steadier ratio when other processes compete for the CPUs), the answers' p50/p99, the report's p50/p99
under load against idle (and the ratio), what the report said at the end, and each process's
share of a core. Exit status 1 if an answer was refused or the report does not count them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SELF = Path(__file__).resolve()
HERE = SELF.parent
sys.path.insert(0, str(HERE.parent))  # tests/: redis_server and benchmarks._servers

import redis.asyncio as aioredis  # noqa: E402
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

from muster import eventlog, events, keys  # noqa: E402
from muster.api import accounts  # noqa: E402
from muster.ids import IdGenerator  # noqa: E402
from muster.writeside import WriteSide  # noqa: E402

TEAM = "ops"
POSTER = "poster"
BULK = 2000
"""Accounts per pipeline when making the audience."""
SETTLE_TIMEOUT_S = 600.0
IDLE_READS = 300
READ_PAUSE_S = 0.02
OPTIONS = [
    {"key": "safe", "label": "Safe", "kind": "ok"},
    {"key": "help", "label": "Need help", "kind": "help"},
]


# --- HTTP/1.1 over asyncio streams: cheap enough to load one api process from one core ---
class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, token: str, body: bytes = b""
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


async def _drive(port: int, jobs: list[list[str]], clients: int) -> dict[str, Any]:
    """Each job [method, path, token, body] once, over `clients` connections."""
    queue = iter(jobs)
    latencies: list[int] = []
    statuses: dict[int, int] = {}

    async def client() -> None:
        conn = Connection(port)
        for method, path, token, body in queue:
            start = time.perf_counter_ns()
            status, _ = await conn.request(method, path, token, body.encode())
            latencies.append(time.perf_counter_ns() - start)
            statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "count": len(latencies),
        "seconds": elapsed,
        "statuses": statuses,
        "p50_ms": percentile(latencies, 50) / 1e6,
        "p99_ms": percentile(latencies, 99) / 1e6,
    }


def load_main() -> None:
    """`rollcalls.py --load FILE`: run the jobs in FILE, print what happened (JSON)."""
    spec = json.loads(Path(sys.argv[sys.argv.index("--load") + 1]).read_text())
    result = _run(_drive(spec["port"], spec["jobs"], spec["clients"]))
    print(json.dumps(result), flush=True)


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- the run ------------------------------------------------------------------------------
async def make_audience(redis: aioredis.Redis, count: int, partitions: int) -> list[str]:
    """`count` members, as the api's create_account writes them; their tokens."""
    ids = IdGenerator(int(await redis.incr(keys.NODE_COUNTER)))
    writeside = WriteSide(redis, partitions=partitions)
    tokens = []
    for start in range(0, count, BULK):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(count, start + BULK)):
                token = accounts.new_token()
                tokens.append(token)
                account_id = ids.next()
                created = events.AccountCreated(
                    id=account_id,
                    actor="admin",
                    at=events.utcnow(),
                    handle=f"m{i:06d}",
                    account_id=account_id,
                    kind="person",
                    role="member",
                    display_name=f"Member {i}",
                    token_hash=accounts.hash_token(token),
                )
                await writeside.apply(pipe, created)
                await writeside.apply_global(pipe, created)  # the token
                eventlog.append(pipe, created, partitions)
            await pipe.execute()
    return tokens


async def caught_up(redis: aioredis.Redis, partitions: int) -> bool:
    for p in range(partitions):
        for group in await redis.xinfo_groups(keys.events(p)):
            if group["name"] in (b"timeline", "timeline") and (
                group.get("lag") or group.get("pending")
            ):
                return False
    return True


async def settle(redis: aioredis.Redis, partitions: int, what: str) -> float:
    start = time.monotonic()
    quiet = 0
    while quiet < 3:  # caught up three polls running: an expansion may append more
        quiet = quiet + 1 if await caught_up(redis, partitions) else 0
        if time.monotonic() - start > SETTLE_TIMEOUT_S:
            raise SystemExit(f"the timeline worker did not finish {what} in {SETTLE_TIMEOUT_S}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def read_reports(
    port: int, token: str, path: str, *, count: int | None, stop: asyncio.Event | None
) -> tuple[list[int], dict[str, Any]]:
    conn = Connection(port)
    latencies: list[int] = []
    last: dict[str, Any] = {}
    while (count is None or len(latencies) < count) and not (stop and stop.is_set()):
        start = time.perf_counter_ns()
        status, body = await conn.request("GET", path, token)
        latencies.append(time.perf_counter_ns() - start)
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {body[:200]!r}")
        last = json.loads(body)
        await asyncio.sleep(READ_PAUSE_S)
    return sorted(latencies), last


async def load(
    port: int, work: Path, name: str, jobs: list[list[str]], clients: int, path: str, token: str
) -> tuple[dict[str, Any], list[int]]:
    """The jobs from the load process while this one reads the report."""
    spec = work / f"{name}.json"
    spec.write_text(json.dumps({"port": port, "jobs": jobs, "clients": clients}))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SELF), "--load", str(spec),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    stop = asyncio.Event()
    reader = asyncio.create_task(read_reports(port, token, path, count=None, stop=stop))
    out, _ = await process.communicate()
    stop.set()
    latencies, _ = await reader
    if process.returncode != 0:
        raise SystemExit(f"the load process failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result, latencies


def _profiler(directory: Path | None, pid: int) -> subprocess.Popen[bytes] | None:
    if directory is None:
        return None
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH: pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    return subprocess.Popen(
        [*command, "--output", str(directory / "api-answers.txt")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def share(ticks: int, seconds: float) -> str:
    return f"{100 * ticks / os.sysconf('SC_CLK_TCK') / seconds:.0f} %"


async def run(args: argparse.Namespace, server: RedisServer, work: Path) -> int:
    port = free_port()
    env = clean_env(
        redis_url=server.url,
        admin_token=ADMIN_TOKEN,
        api_host="127.0.0.1",
        api_port=str(port),
        api_workers="1",
        partitions=str(args.partitions),
    )
    with contextlib.ExitStack() as stack:
        api = spawn(stack, muster("api"), env, work / "api.log")
        wait_for_port(port, api, work / "api.log")
        worker = spawn(stack, muster("worker", "timeline"), env, work / "worker.log")
        redis = aioredis.Redis.from_url(server.url)
        try:
            return await _measure(args, port, redis, api.pid, worker.pid, server, work)
        except BaseException:
            print(f"--- api.log\n{tail(work / 'api.log')}\n--- worker.log\n"
                  f"{tail(work / 'worker.log')}", file=sys.stderr)  # fmt: skip
            raise
        finally:
            await redis.aclose()


async def _measure(
    args: argparse.Namespace,
    port: int,
    redis: aioredis.Redis,
    api_pid: int,
    worker_pid: int,
    server: RedisServer,
    work: Path,
) -> int:
    def admin(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return call(port, method, path, ADMIN_TOKEN, body)

    admin("POST", "/v1/accounts", {"handle": TEAM, "kind": "team"})
    poster = admin("POST", "/v1/accounts", {"handle": POSTER, "kind": "person", "role": "member"})
    admin("PUT", f"/v1/accounts/{TEAM}/posters/{POSTER}")

    start = time.monotonic()
    tokens = await make_audience(redis, args.audience, args.partitions)
    made = time.monotonic() - start
    admin("PUT", f"/v1/accounts/{TEAM}/enrolments",
          {"followers": "all_members", "channels": ["app"], "mandatory": True})  # fmt: skip
    enrolled = await settle(redis, args.partitions, "the enrolment")
    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    post = call(port, "POST", "/v1/posts", poster["token"], {
        "text": "Benchmark: are you safe?", "as": TEAM,
        "rollcall": {"options": OPTIONS, "deadline": deadline},
    })  # fmt: skip
    rc = post["id"]
    recorded = await settle(redis, args.partitions, "the roll-call's audience")
    path = f"/v1/rollcalls/{rc}"
    print(f"audience: {args.audience:,} accounts made in {made:.1f} s, enrolled by the worker "
          f"in {enrolled:.1f} s, roll-call audience recorded in {recorded:.1f} s")  # fmt: skip

    idle, report = await read_reports(port, poster["token"], path, count=IDLE_READS, stop=None)
    targeted = report["counts"]["targeted"]
    print(f"targeted: {targeted:,}")

    answers = [
        ["POST", f"{path}/responses", tokens[i],
         json.dumps({"option": "help" if i % 10 == 0 else "safe"})]
        for i in range(args.answers)
    ]  # fmt: skip
    assert server.process is not None
    redis_pid = server.process.pid
    ticks = {"api": cpu_ticks(api_pid), "worker": cpu_ticks(worker_pid),
             "redis": cpu_ticks(redis_pid), "machine": machine_busy_ticks()}  # fmt: skip
    profiler = _profiler(args.profile, api_pid)
    began = time.monotonic()
    answered, busy = await load(port, work, "answers", answers, args.clients, path, poster["token"])
    seconds = time.monotonic() - began
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes what it sampled, then exits
        profiler.wait(timeout=30)
    used = {
        "api": cpu_ticks(api_pid) - ticks["api"],
        "worker": cpu_ticks(worker_pid) - ticks["worker"],
        "redis": cpu_ticks(redis_pid) - ticks["redis"],
    }
    other = machine_busy_ticks() - ticks["machine"] - sum(used.values())
    _, final = await read_reports(port, poster["token"], path, count=1, stop=None)

    posts = [
        ["POST", "/v1/posts", poster["token"], json.dumps({"text": f"plain post {i}"})]
        for i in range(args.posts)
    ]
    api_before = cpu_ticks(api_pid)
    posted, _ = await load(port, work, "posts", posts, args.clients, path, poster["token"])
    post_ticks = cpu_ticks(api_pid) - api_before

    answers_s = answered["count"] / answered["seconds"]
    posts_s = posted["count"] / posted["seconds"]
    idle_p99 = percentile(idle, 99) / 1e6
    busy_p99 = percentile(busy, 99) / 1e6
    print(f"\nanswers: {answered['count']:,} in {answered['seconds']:.1f} s = {answers_s:,.0f}/s "
          f"over {args.clients} connections; p50 {answered['p50_ms']:.1f} ms, "
          f"p99 {answered['p99_ms']:.1f} ms; statuses {answered['statuses']}")  # fmt: skip
    print(f"plain posts (baseline): {posted['count']:,} in {posted['seconds']:.1f} s = "
          f"{posts_s:,.0f}/s; p99 {posted['p99_ms']:.1f} ms; statuses {posted['statuses']}")  # fmt: skip
    print(f"answers/s ÷ posts/s = {answers_s / posts_s:.2f}")
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    answer_us = used["api"] * tick_us / answered["count"]
    post_us = post_ticks * tick_us / posted["count"]
    print(f"api CPU per answer {answer_us:,.0f} µs (the report reads included), per plain post "
          f"{post_us:,.0f} µs: post ÷ answer = {post_us / answer_us:.2f} (steadier than the "
          f"rates on a busy machine); redis CPU per answer "
          f"{used['redis'] * tick_us / answered['count']:,.0f} µs")  # fmt: skip
    print(f"report reads idle: {len(idle)}, p50 {percentile(idle, 50) / 1e6:.1f} ms, "
          f"p99 {idle_p99:.1f} ms")  # fmt: skip
    print(f"report reads under load: {len(busy)}, p50 {percentile(busy, 50) / 1e6:.1f} ms, "
          f"p99 {busy_p99:.1f} ms, max {busy[-1] / 1e6:.1f} ms; p99 ÷ idle p99 = "
          f"{busy_p99 / idle_p99:.1f}")  # fmt: skip
    print(f"CPU while answering ({seconds:.1f} s): api {share(used['api'], seconds)}, worker "
          f"{share(used['worker'], seconds)}, redis {share(used['redis'], seconds)}, "
          f"everything else (load generator, this reader, other users) "
          f"{share(other, seconds)} of one core")  # fmt: skip
    counts = final["counts"]
    print(f"final report: answered {counts['answered']:,}, by option {counts['by_option']}, "
          f"help open {final['help_open']:,}")  # fmt: skip
    helps = sum(1 for i in range(args.answers) if i % 10 == 0)
    ok = (
        answered["statuses"] == {"200": args.answers}
        and counts["answered"] == args.answers
        and final["help_open"] == helps
    )
    if not ok:
        print("FAILED: an answer was refused or the report does not count them all")
    return 0 if ok else 1


def main() -> int:
    if "--load" in sys.argv:
        load_main()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--audience", type=int, default=100_000, help="people asked (100,000)")
    parser.add_argument("--answers", type=int, default=50_000, help="answers sent (50,000)")
    parser.add_argument("--clients", type=int, default=16, help="answering connections (16)")
    parser.add_argument("--partitions", type=int, default=8, help="MUSTER_PARTITIONS (8)")
    parser.add_argument("--posts", type=int, default=10_000, help="baseline posts (10,000)")
    parser.add_argument("--profile", type=Path, help="py-spy the api into this directory")
    args = parser.parse_args()
    if not 1 <= args.answers <= args.audience or min(args.clients, args.posts) < 1:
        parser.error("need 1 ≤ --answers ≤ --audience, --clients ≥ 1 and --posts ≥ 1")
    with tempfile.TemporaryDirectory(prefix="muster-bench-") as tmp:
        work = Path(tmp)
        server = start_redis_server(work)
        try:
            return _run(run(args, server, work))  # type: ignore[no-any-return]
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
