"""End-to-end benchmark: one post → every follower's webhook, SMS or email, against rq.

    python tests/benchmarks/e2e.py [--sizes 1000,5000,50000] [--channels webhook,sms,email]
                                   [--rq-max 1000] [--aof always] [--repeats 1]

Not a test (pytest does not collect it): a command that prints figures, what a user sees
between "post" and "it is in every inbox". In one run it
1. starts its own redis-server on a free loopback port in a temp dir, persisted as `muster up`
   runs it (AOF, `appendfsync always`, zset-max-listpack-entries 1024), the local peers of
   sinks.py in a process of their own (webhooks, a Twilio-compatible SMS API, SMTP; each
   arrival timestamped on CLOCK_MONOTONIC, which every process shares), and the real processes
   `muster up` runs: `muster api`, `muster worker timeline`, two `... delivery` (as
   MUSTER_UP_DELIVERY_WORKERS; `--delivery-workers N`), `... audit` (MUSTER_PARTITIONS=1,
   default settings but MUSTER_WEBHOOK_ALLOW_PRIVATE=1);
2. through the API as admin: three teams, `hooks`, `texts`, `mails`, each with an
   `all_members` enrolment on one channel (webhook, sms, email), and a member `poster` who
   may post as each; then members with every contact point (their own webhook URL and
   secret, a phone, an address) until there are N of them, waiting until the timeline
   worker has enrolled every one (so the post is made to an idle, settled system);
3. per size N and channel: one `POST /v1/posts` as the channel's team (severity info). The
   clock starts just before the request; the figures are the arrivals at the sinks, in
   seconds after the 202: first, p50, p99, last, and messages/s = N / (last arrival - start);
   plus, sampled every 20 ms, when the timeline worker had routed 50 % and 100 % of the
   requests (XLEN of the delivery stream) and when the delivery worker had read them (its
   group's entries-read): where the time goes, when it goes somewhere;
4. per size and channel, rq job-per-message on the same sinks: "the post" enqueues one job
   per recipient (min(N, --rq-max) of them, timed: it is part of the path), one rq
   SimpleWorker works them in burst mode; each job does what delivery.py's rq baseline does
   (reads the post and the account, renders and signs with Muster's functions, sends over a
   kept connection, records the status). Same figures, and ours / rq of messages/s.
Exit status 1 if a message is missing or arrived twice under one id.

Goals (issue 12): a post to 5,000 webhook followers reaches the last one within 2 s of the
202; ≥ 3,000 webhooks/s end to end; ≥ 10 x rq on every channel.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: redis_server and benchmarks._servers

import httpx  # noqa: E402
import redis  # noqa: E402
from benchmarks import _peers as peers  # noqa: E402
from benchmarks import delivery as part  # noqa: E402
from benchmarks._servers import (  # noqa: E402
    ADMIN_TOKEN,
    call,
    cpu_ticks,
    machine_busy_ticks,
    muster,
    percentile,
    spawn,
    tail,
    wait_for_port,
)
from redis_server import free_port, start_redis_server  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402

from muster import keys  # noqa: E402

TEAMS = {"webhook": "hooks", "sms": "texts", "email": "mails"}
POSTER = "poster"
GOAL_LAST_S = 2.0  # 5,000 webhook followers, last arrival after the 202
GOAL_WEBHOOKS = 3000.0
GOAL_RATIO = 10.0
CREATE_THREADS = 8
SAMPLE_S = 0.02


def log(message: str) -> None:
    print(message, flush=True)


def member(i: int) -> str:
    return f"m{i:06d}"


class NodeReceiver(peers.Sinks):
    """receiver.js: webhooks to a plain Node.js http server instead of sinks.py."""

    def __init__(self) -> None:
        self.http_port, self.smtp_port = free_port(), 0
        self.process = subprocess.Popen(
            ["node", str(HERE / "receiver.js"), str(self.http_port)], stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready", "receiver.js did not start"
        self.client = httpx.Client(base_url=self.http_url, timeout=10)


@dataclass
class System:
    port: int
    client: redis.Redis
    sinks: peers.Sinks
    hooks: peers.Sinks  # where the webhooks go: sinks, or receiver.js
    work: Path
    poster_token: str = ""
    members: int = 0
    processes: dict[str, Any] = field(default_factory=dict)
    profile: Path | None = None

    def pids(self) -> dict[str, int]:
        """Every process on the path, for CPU shares: ours, redis-server, the receivers."""
        pids = {name: process.pid for name, process in self.processes.items()}
        pids["redis"] = self.redis_pid
        pids["sinks"] = self.sinks.process.pid
        if self.hooks is not self.sinks:
            pids["receiver"] = self.hooks.process.pid
        return pids

    redis_pid: int = 0

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return call(self.port, method, path, ADMIN_TOKEN, body)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} exited:\n{tail(self.work / f'{name}.log')}")


def start(
    stack: contextlib.ExitStack, work: Path, aof: str, receiver: str, deliveries: int
) -> System:
    server = start_redis_server(work / "redis", appendonly=aof != "no", appendfsync=aof)
    stack.callback(server.kill)
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=30)
    client.config_set("zset-max-listpack-entries", 1024)
    sinks = peers.Sinks()
    stack.callback(sinks.close)
    hooks = sinks
    if receiver == "node":
        hooks = NodeReceiver()
        stack.callback(hooks.close)
    port = free_port()
    env = peers.worker_env(server.url, sinks)
    env.update(
        MUSTER_ADMIN_TOKEN=ADMIN_TOKEN,
        MUSTER_API_HOST="127.0.0.1",
        MUSTER_API_PORT=str(port),
        MUSTER_API_WORKERS="1",
        MUSTER_PARTITIONS="1",
        MUSTER_DATA_DIR=str(work / "var"),
    )
    system = System(port, client, sinks, hooks, work)
    assert server.process is not None
    system.redis_pid = server.process.pid
    system.processes["api"] = spawn(stack, muster("api"), env, work / "api.log")
    wait_for_port(port, system.processes["api"], work / "api.log")
    for kind in ("timeline", "audit"):
        system.processes[kind] = spawn(stack, muster("worker", kind), env, work / f"{kind}.log")
    for number in range(1, deliveries + 1):  # as `muster up` runs MUSTER_UP_DELIVERY_WORKERS
        name = "delivery" if number == 1 else f"delivery{number}"
        system.processes[name] = spawn(
            stack, muster("worker", "delivery"), env, work / f"{name}.log"
        )
    system.poster_token = system.admin(
        "POST", "/v1/accounts", {"handle": POSTER, "kind": "person", "role": "member"}
    )["token"]
    for channel, team in TEAMS.items():
        system.admin("POST", "/v1/accounts", {"handle": team, "kind": "team"})
        system.admin("PUT", f"/v1/accounts/{team}/posters/{POSTER}")
        system.admin(
            "PUT",
            f"/v1/accounts/{team}/enrolments",
            {"followers": "all_members", "channels": [channel], "mandatory": True},
        )
    return system


def grow(system: System, n: int) -> None:
    """Members up to n, each with every contact point; waits until all are enrolled."""
    if n <= system.members:
        return
    started = time.monotonic()
    url = system.hooks.http_url

    def create(i: int) -> None:
        handle = member(i)
        system.admin(
            "POST",
            "/v1/accounts",
            {
                "handle": handle,
                "kind": "person",
                "role": "member",
                "email": f"{handle}@example.test",
                "phone": f"+1555{i:07d}",
                "webhook_url": f"{url}/hooks/{handle}",
            },
        )

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(create, range(system.members, n)))
    created = time.monotonic()
    system.members = n
    # poster and admin are members too: every team has n + 2 followers once all are enrolled
    deadline = time.monotonic() + 120 + n / 200
    for team in TEAMS.values():
        while int(system.client.hlen(keys.followers(0, team))) < n + 2:
            system.check_alive()
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{team}: enrolments not projected:\n{tail(system.work / 'timeline.log')}"
                )
            time.sleep(0.1)
    log(
        f"  {n:,} members: created through the api in {created - started:.1f} s, all enrolled"
        f" {time.monotonic() - created:.1f} s later"
    )


class Sampler(threading.Thread):
    """Every SAMPLE_S: how many requests were routed to, and read from, a delivery stream."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(connection_pool=client.connection_pool)
        self.stream = stream
        self.samples: list[tuple[float, int, int]] = []
        self.halt = threading.Event()

    def counts(self) -> tuple[int, int]:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xinfo_stream(self.stream)
            pipe.xinfo_groups(self.stream)
            info, groups = pipe.execute()
        read = next((int(g["entries-read"] or 0) for g in groups if g["name"] == b"delivery"), 0)
        return int(info["entries-added"]), read

    def run(self) -> None:
        while not self.halt.wait(SAMPLE_S):
            self.samples.append((time.monotonic(), *self.counts()))

    def when(self, base: tuple[int, int], n: int, which: int, share: float) -> float | None:
        """When `share` of the n requests had been added (which=1) or read (which=2)."""
        goal = base[which - 1] + max(1, int(n * share))
        return next((s[0] for s in self.samples if s[which] >= goal), None)


@dataclass
class Figures:
    n: int
    first: float
    p50: float
    p99: float
    last: float
    rate: float
    complete: bool
    stages: str = ""
    cpu: str = ""

    def row(self) -> str:
        return (
            f"{self.first:.2f} / {self.p50:.2f} / {self.p99:.2f} / {self.last:.2f}"
            f" | {self.rate:,.0f}"
        )


def sink(system: System, channel: str) -> peers.Sinks:
    return system.hooks if channel == "webhook" else system.sinks


def wait_arrivals(system: System, channel: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sink(system, channel).received(channel)[0] < n:
        system.check_alive()
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


def figures(system: System, channel: str, n: int, start: float, zero: float) -> Figures:
    """Arrival figures in seconds after `zero` (the 202, or rq's start); rate from `start`."""
    times = sorted(sink(system, channel).client.get("/times").json()[channel])
    got, distinct = sink(system, channel).received(channel)
    if not times:
        return Figures(n, 0, 0, 0, 0, 0, False)
    ms = [int((t - zero) * 1000) for t in times]
    return Figures(
        n,
        ms[0] / 1000,
        percentile(ms, 50) / 1000,
        percentile(ms, 99) / 1000,
        ms[-1] / 1000,
        len(times) / max(1e-9, times[-1] - start),
        got == n and distinct == n,
    )


class Cpu:
    """Each process's share of a core, and the machine's busy share, over a span."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before = {name: cpu_ticks(pid) for name, pid in pids.items()}
        self.machine = machine_busy_ticks()
        self.started = time.monotonic()

    def report(self) -> str:
        seconds = max(1e-9, time.monotonic() - self.started)
        hz = os.sysconf("SC_CLK_TCK")
        shares = {
            name: (cpu_ticks(pid) - self.before[name]) / hz / seconds
            for name, pid in self.pids.items()
        }
        machine = (machine_busy_ticks() - self.machine) / hz / seconds
        ours = ", ".join(f"{name} {share:.0%}" for name, share in shares.items() if share >= 0.01)
        return f"cpu: {ours}; whole machine {machine:.0%} of {os.cpu_count()} cores"


def profiler(system: System, name: str) -> list[subprocess.Popen[bytes]]:
    """--profile DIR: py-spy samples the timeline and delivery workers through the run."""
    if system.profile is None:
        return []
    system.profile.mkdir(parents=True, exist_ok=True)
    spies = []
    for kind in ("timeline", "delivery"):
        out = system.profile / f"{name}-{kind}.txt"
        spies.append(
            subprocess.Popen(
                [
                    *("py-spy", "record", "--pid", str(system.processes[kind].pid)),
                    *("--rate", "200", "--format", "raw", "--output", str(out)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(1.0)  # py-spy attaches
    return spies


def run_ours(system: System, channel: str, n: int, number: int = 1) -> Figures:
    sink(system, channel).reset()
    stream = keys.deliveries(0, channel)
    sampler = Sampler(system.client, stream)
    base = sampler.counts()
    spies = profiler(system, f"{n}-{channel}-{number}")
    sampler.start()
    cpu = Cpu(system.pids())
    start = time.monotonic()
    call(
        system.port,
        "POST",
        "/v1/posts",
        system.poster_token,
        {"as": TEAMS[channel], "text": part.POST_TEXT, "visibility": "public"},
    )
    accepted = time.monotonic()
    wait_arrivals(system, channel, n, timeout=60 + n / 100)
    usage = cpu.report()
    sampler.halt.set()
    sampler.join()
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
    result = figures(system, channel, n, start, accepted)
    result.cpu = usage
    marks = []
    for label, which in (("routed", 1), ("read", 2)):
        for share in (0.5, 1.0):
            at = sampler.when(base, n, which, share)
            marks.append(f"{label} {share:.0%} {'-' if at is None else f'{at - accepted:.2f}'}")
    result.stages = ", ".join(marks)
    return result


def run_rq(system: System, channel: str, m: int) -> Figures:
    sink(system, channel).reset()
    newest: list[bytes] = system.client.zrevrange(keys.account_log(0, TEAMS[channel]), 0, 0)  # type: ignore[assignment]
    post_id = newest[0].decode()
    queue = Queue(f"e2e-{channel}", connection=system.client)
    start = time.monotonic()
    queue.enqueue_many(
        [
            Queue.prepare_data(part.rq_deliver, args=(channel, post_id, member(i)), result_ttl=60)
            for i in range(m)
        ]
    )
    SimpleWorker([queue], connection=system.client).work(burst=True, logging_level="WARNING")
    return figures(system, channel, m, start, start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,5000,50000", help="followers, ascending")
    parser.add_argument("--channels", default="webhook,sms,email")
    parser.add_argument("--rq-max", type=int, default=1000, help="rq jobs per run at most")
    parser.add_argument("--aof", default="always", choices=("always", "everysec", "no"))
    parser.add_argument(
        "--receiver",
        default="sinks",
        choices=("sinks", "node"),
        help="webhooks to sinks.py, or to receiver.js (a plain Node.js http server)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the timeline and delivery workers; stacks to DIR"
    )
    parser.add_argument(
        "--delivery-workers",
        type=int,
        default=2,
        help="delivery worker processes (default 2: MUSTER_UP_DELIVERY_WORKERS of muster up)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per size and channel")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    channels = [c for c in args.channels.split(",") if c]

    ok = True
    rows: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="muster-bench-e2e-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        system = start(stack, Path(tmp), args.aof, args.receiver, args.delivery_workers)
        system.profile = args.profile
        part.RQ.redis = system.client
        part.RQ.http = httpx.Client(base_url=system.sinks.http_url, timeout=10)
        part.RQ.smtp_port = system.sinks.smtp_port
        stack.callback(part.close_rq, part.RQ)
        log(
            f"end-to-end benchmark: sizes {sizes}, channels {channels}, AOF {args.aof}, "
            f"{args.delivery_workers} delivery worker(s); "
            f"{os.cpu_count()} cores; load average {part.load_average()}"
        )
        for n in sizes:
            grow(system, n)
            for channel in channels:
                ours_runs = [
                    run_ours(system, channel, n, number) for number in range(1, args.repeats + 1)
                ]
                m = min(n, args.rq_max)
                rq = run_rq(system, channel, m)
                ours = sorted(ours_runs, key=lambda f: f.last)[len(ours_runs) // 2]
                for run in ours_runs:
                    ok = ok and run.complete
                    log(
                        f"  {n:,} {channel}: ours {run.row()}/s  [{run.stages}]"
                        + ("" if run.complete else "  MISSING or DUPLICATED")
                    )
                    log(f"      {run.cpu}")
                ok = ok and rq.complete
                log(f"  {m:,} {channel}: rq   {rq.row()}/s")
                rows.append(
                    f"| {n:,} | {channel} | {ours.row()} | {rq.rate:,.0f} ({m:,}) "
                    f"| {ours.rate / max(rq.rate, 1e-9):.1f} |"
                )
                if n == 5000 and channel == "webhook":
                    log(
                        f"  goal: last webhook ≤ {GOAL_LAST_S} s after the 202: "
                        f"{'met' if ours.last <= GOAL_LAST_S else 'NOT met'} ({ours.last:.2f} s)"
                    )
        log("")
        log(
            "| followers | channel | ours: first / p50 / p99 / last (s after 202) | ours msg/s | rq msg/s (jobs) | ours / rq |"
        )
        log("| ---: | --- | --- | ---: | ---: | ---: |")
        for row in rows:
            log(row)
        log(f"every message delivered, each id once: {'yes' if ok else 'NO'}")
        log(f"load average after: {part.load_average()}")
        log(
            f"goals: ≥ {GOAL_WEBHOOKS:,.0f} webhooks/s end to end, ≥ {GOAL_RATIO:.0f} x rq on every channel"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
