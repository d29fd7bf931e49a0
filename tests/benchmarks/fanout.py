"""Fan-out benchmark: one post to 100k followers, Muster's fan-out against two baselines.

    python tests/benchmarks/fanout.py [--followers N] [--repeats R] [--skiplist-followers M]
    python tests/benchmarks/fanout.py --cluster [--followers N] [--repeats R] [--partitions K]
                                      [--masters M] [--accounts A]

With --cluster it measures the timeline worker's fan-out on a local Redis Cluster against
one redis-server, as ratios (fanout_cluster.py says how); without, as follows.

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts its own redis-server on a free loopback port in a temp dir (no AOF, no RDB);
2. builds the follower graph of one account exactly as the timeline worker does: N person
   handles in its keys.followers hash (partition 0 of MUSTER_PARTITIONS=1, channels "app");
3. fans posts out to all N home timelines (capped at MUSTER_TIMELINE_MAX = 800), with
   - ours: muster.projections.fanout.Fanout.to_followers, the timeline worker's code;
   - (a) naive: the client pages the follower hash (HSCAN, 2,000 a page) and sends one
     redis-py pipeline per page, ZADD + ZREMRANGEBYRANK per home;
   - (b) lua: the same pages, each handed to a Lua script in ARGV that does ZADD + trim
     per home server-side;
   every method R times, interleaved, each time a new post id, and checks after every run
   (untimed) that each of the N homes holds the post and at most 800 entries;
4. does so with homes empty (deleted before each run) and full (800 older entries each, the
   steady state of an active reader: every insert trims one), under Redis's default
   zset-max-listpack-entries (128: an 800-entry home is a skiplist) and raised to 1024 (an
   800-entry home stays one compact listpack); prefilling N skiplist homes costs ~1 min and
   ~10 GB, so that one case uses M followers (default 10,000; --skiplist-followers N for all);
5. prints, per case and method: wall time per post (median of R), timeline inserts/s, the
   redis-server and client CPU spent, the ratios ours/(a) and ours/(b) (goal: ours ≥ 0.7 x
   (b), about 0.25 s per 100k-follower post), and Redis bytes per timeline entry (MEMORY USAGE
   of full homes / 800, and the growth of used_memory / entries; goal ≤ 100 B).
Both baselines' times include reading the follower pages, as ours does; the time of those
reads alone is printed too ("pages only"). Every method inserts what Muster stores in a
home, keys.home_member(post id) (newest first), and trims ranks cap.. — the same inserts.
Wall times suffer when other processes compete for the CPUs (the load average is printed);
redis-server's CPU time per post is the steadier figure. Exit status 1 if a post is missing
from a home.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the suite's redis_server helper

import redis.asyncio as aioredis  # noqa: E402
from redis_server import RedisServer, start_redis_server  # noqa: E402

from muster import keys  # noqa: E402
from muster.connection import async_client, text, texts  # noqa: E402
from muster.ids import IdGenerator, lowest_id_at  # noqa: E402
from muster.projections.fanout import FANOUT_BATCH, Fanout  # noqa: E402
from muster.settings import Settings  # noqa: E402

CAP = Settings().timeline_max  # MUSTER_TIMELINE_MAX's default, 800
BATCH = 2000  # the baselines' page size (the issue's); ours uses FANOUT_BATCH
ACCOUNT = "ops"
SMALL_ACCOUNT = "ops_small"  # the first M followers, for the skiplist full-home case
GOAL_RATIO = 0.7  # ours ≥ 0.7 x (b)
GOAL_WALL_S = 0.25  # per 100k-follower post
GOAL_BYTES = 100  # per timeline entry
DEFAULT_LISTPACK = 128  # Redis 7's zset-max-listpack-entries default
BIG_LISTPACK = 1024  # ≥ MUSTER_TIMELINE_MAX: a full home stays a listpack

# (b): KEYS none (standalone Redis)   ARGV: home member, home prefix, cap, handles...
_LUA_BATCH = """
local id, prefix, cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  local home = prefix .. ARGV[i]
  redis.call('ZADD', home, 0, id)
  redis.call('ZREMRANGEBYRANK', home, cap, -1)
end
return #ARGV - 3
"""

# ARGV: payload (DUMP of a full home), home prefix, handles...
_PREFILL = """
for i = 3, #ARGV do
  redis.call('RESTORE', ARGV[2] .. ARGV[i], 0, ARGV[1], 'REPLACE')
end
return #ARGV - 2
"""

# KEYS: followers hash   ARGV: cursor, post id, home prefix, cap → {cursor, homes, with id, over cap}
_VERIFY = """
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', 5000)
local fields = page[2]
local homes, found, over = 0, 0, 0
for i = 1, #fields, 2 do
  local home = ARGV[3] .. fields[i]
  homes = homes + 1
  if redis.call('ZSCORE', home, ARGV[2]) then found = found + 1 end
  if redis.call('ZCARD', home) > tonumber(ARGV[4]) then over = over + 1 end
end
return {page[1], homes, found, over}
"""


def machine_busy_s() -> float:
    """CPU seconds all CPUs of the machine spent busy (not idle or waiting for I/O)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    wall_s: float
    redis_cpu_s: float
    client_cpu_s: float


@dataclass
class Case:
    """One home state under one Redis configuration: every method's runs."""

    title: str
    followers: int
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def median(self, method: str, attribute: str = "wall_s") -> float:
        return float(statistics.median(getattr(r, attribute) for r in self.runs[method]))


Method = Callable[[str, str], Awaitable[None]]  # (account, post id)


class Bench:
    def __init__(self, server: RedisServer, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.redis: aioredis.Redis = async_client(Settings(redis_url=server.url))
        self.fanout = Fanout(self.redis, partitions=1, cap=CAP)
        self.lua = self.redis.register_script(_LUA_BATCH)
        self.prefill_script = self.redis.register_script(_PREFILL)
        self.verify_script = self.redis.register_script(_VERIFY)
        self.ids = IdGenerator(node=1)
        self.prefix = keys.home_prefix(0)
        self.handles = [f"person_{i:06d}" for i in range(args.followers)]
        self.failures: list[str] = []
        self.methods: dict[str, Method] = {
            "ours": self.ours,
            "(a) naive": self.naive,
            "(b) lua": self.server_side,
            "pages only": self.pages_only,
        }

    @property
    def redis_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    # --- set-up -----------------------------------------------------------------------------
    async def build_graph(self) -> None:
        """The follower hashes the timeline worker keeps: handle → channels csv."""
        for account, count in ((ACCOUNT, len(self.handles)), (SMALL_ACCOUNT, self.small)):
            source = keys.followers(0, account)
            for start in range(0, count, 10_000):
                chunk = self.handles[start : min(count, start + 10_000)]
                await self.redis.hset(source, mapping=dict.fromkeys(chunk, "app"))

    @property
    def small(self) -> int:
        return min(int(self.args.skiplist_followers), len(self.handles))

    async def clear_homes(self, count: int) -> None:
        for start in range(0, count, BATCH):
            await self.redis.unlink(*(self.prefix + h for h in self.handles[start : start + BATCH]))

    async def prefill(self, count: int) -> float:
        """Give the first `count` homes CAP entries older than any post here; seconds taken."""
        began = time.perf_counter()
        oldest = lowest_id_at(int(time.time() * 1000) - 86_400_000)
        entries = [oldest + i for i in range(CAP)]
        members = [keys.home_member(str(i)) for i in entries]
        template = "bench:template"
        await self.redis.unlink(template)
        await self.redis.zadd(template, dict.fromkeys(members, 0))
        payload: Any = await self.redis.dump(template)
        await self.redis.unlink(template)
        for start in range(0, count, BATCH):
            await self.prefill_script(
                args=[payload, self.prefix, *self.handles[start : min(count, start + BATCH)]]
            )
        for handle in (self.handles[0], self.handles[count - 1]):
            if await self.redis.zcard(self.prefix + handle) != CAP:
                raise SystemExit(f"prefill failed: {handle}'s home is not full")
        return time.perf_counter() - began

    # --- the methods ------------------------------------------------------------------------
    async def ours(self, account: str, post_id: str) -> None:
        await self.fanout.to_followers(account, post_id, public=False)

    async def _pages(self, account: str) -> AsyncIterator[list[str]]:
        source = keys.followers(0, account)
        cursor: Any = 0
        page: Any
        while True:
            cursor, page = await self.redis.hscan(source, cursor, count=BATCH)
            if page:
                yield texts(page)
            if int(cursor) == 0:
                return

    async def naive(self, account: str, post_id: str) -> None:
        async for handles in self._pages(account):
            async with self.redis.pipeline(transaction=False) as pipe:
                for handle in handles:
                    home = self.prefix + handle
                    pipe.zadd(home, {keys.home_member(post_id): 0})
                    pipe.zremrangebyrank(home, CAP, -1)
                await pipe.execute()

    async def server_side(self, account: str, post_id: str) -> None:
        async for handles in self._pages(account):
            await self.lua(args=[keys.home_member(post_id), self.prefix, CAP, *handles])

    async def pages_only(self, account: str, post_id: str) -> None:
        async for _ in self._pages(account):
            pass

    async def verify(self, account: str, post_id: str, count: int, label: str) -> None:
        member = keys.home_member(post_id)
        cursor: Any = "0"
        homes = found = over = 0
        while True:
            cursor, h, f, o = await self.verify_script(
                keys=[keys.followers(0, account)], args=[cursor, member, self.prefix, CAP]
            )
            homes, found, over = homes + h, found + f, over + o
            if int(cursor) == 0:
                break
        if homes != count or found != count or over:
            self.failures.append(
                f"{label}: {found} of {count} homes hold post {post_id}, "
                f"{over} over {CAP} entries ({homes} homes scanned)"
            )

    # --- measuring --------------------------------------------------------------------------
    async def measure(self, case: Case, account: str, *, empty: bool) -> None:
        for _ in range(self.args.repeats):
            for name, method in self.methods.items():
                if empty and name != "pages only":
                    await self.clear_homes(case.followers)
                post_id = self.ids.next()
                redis_before, client_before = _cpu_s(self.redis_pid), time.process_time()
                began = time.perf_counter()
                await method(account, post_id)
                wall = time.perf_counter() - began
                run = Run(
                    wall,
                    _cpu_s(self.redis_pid) - redis_before,
                    time.process_time() - client_before,
                )
                case.runs.setdefault(name, []).append(run)
                if name != "pages only":
                    await self.verify(account, post_id, case.followers, f"{case.title} {name}")

    async def bytes_per_entry(self, count: int) -> float:
        """MEMORY USAGE (all nested values counted) of full homes, per entry."""
        sample = self.handles[: min(count, 200)]
        sizes: list[Any] = [
            await self.redis.memory_usage(self.prefix + h, samples=0) for h in sample
        ]
        return statistics.fmean(sizes) / CAP

    async def used_memory(self) -> int:
        info: Any = await self.redis.info("memory")
        return int(info["used_memory"])

    async def encoding(self, handle: str) -> str:
        return text(await self.redis.object("encoding", self.prefix + handle))


@dataclass
class Memory:
    listpack_entries: int
    encoding: str
    usage_per_entry: float
    growth_per_entry: float
    homes: int


async def run(args: argparse.Namespace, server: RedisServer) -> tuple[list[Case], list[Memory]]:
    bench = Bench(server, args)
    cases: list[Case] = []
    memory: list[Memory] = []
    n = len(bench.handles)
    busy, own = machine_busy_s(), _cpu_s(bench.redis_pid) + time.process_time()
    began = time.perf_counter()
    try:
        await bench.build_graph()
        for listpack in (DEFAULT_LISTPACK, BIG_LISTPACK):
            await bench.redis.config_set("zset-max-listpack-entries", listpack)
            label = f"zset-max-listpack-entries {listpack}"
            empty = Case(f"{label}, empty homes", n)
            await bench.measure(empty, ACCOUNT, empty=True)
            cases.append(empty)
            full_n = n if listpack >= CAP else bench.small
            account = ACCOUNT if full_n == n else SMALL_ACCOUNT
            await bench.clear_homes(n)
            before = await bench.used_memory()
            took = await bench.prefill(full_n)
            grown = await bench.used_memory() - before
            print(f"  ({label}: prefilled {full_n:,} homes x {CAP} entries in {took:.1f} s)")
            memory.append(
                Memory(
                    listpack,
                    await bench.encoding(bench.handles[0]),
                    await bench.bytes_per_entry(full_n),
                    grown / (full_n * CAP),
                    full_n,
                )
            )
            full = Case(f"{label}, full homes ({CAP} entries)", full_n)
            await bench.measure(full, account, empty=False)
            cases.append(full)
            await bench.clear_homes(n)
        others = machine_busy_s() - busy - (_cpu_s(bench.redis_pid) + time.process_time() - own)
        print(
            f"  (other processes on this machine kept {others / (time.perf_counter() - began):.0%}"
            " of a core busy during the run)"
        )
    finally:
        await bench.redis.aclose()
    if bench.failures:
        for failure in bench.failures:
            print(f"  !! {failure}")
        raise SystemExit(1)
    return cases, memory


def report(args: argparse.Namespace, cases: list[Case], memory: list[Memory]) -> None:
    print(
        f"\nfan-out benchmark: one post to N followers' home timelines (cap {CAP}), "
        f"{args.repeats} interleaved run(s) per method, median shown"
    )
    print(
        f"  ours: Fanout.to_followers (server-side HSCAN pages of {FANOUT_BATCH}); (a), (b): "
        f"client HSCAN pages of {BATCH} + pipeline / Lua; {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
    )
    header = (
        f"{'method':<12}{'followers':>10}{'wall s':>9}{'per 100k s':>11}{'inserts/s':>12}"
        f"{'redis cpu s':>12}{'client cpu s':>13}{'min wall s':>11}"
    )
    for case in cases:
        print(f"\n{case.title}")
        print(header)
        print("-" * len(header))
        for name in case.runs:
            wall = case.median(name)
            rate = case.followers / wall
            print(
                f"{name:<12}{case.followers:>10,}{wall:>9.3f}{wall * 100_000 / case.followers:>11.3f}"
                f"{rate:>12,.0f}{case.median(name, 'redis_cpu_s'):>12.2f}"
                f"{case.median(name, 'client_cpu_s'):>13.2f}"
                f"{min(r.wall_s for r in case.runs[name]):>11.3f}"
            )
        if "ours" not in case.runs:
            continue
        ours = case.median("ours")
        a, b = case.median("(a) naive"), case.median("(b) lua")
        ratio_b = b / ours
        per_100k = ours * 100_000 / case.followers
        print(
            f"ratio ours/(a) = {a / ours:.2f}   ratio ours/(b) = {ratio_b:.2f} "
            f"(inserts/s over inserts/s): {'meets' if ratio_b >= GOAL_RATIO else 'MISSES'} "
            f"the goal ≥ {GOAL_RATIO}; {per_100k:.3f} s per 100k-follower post: "
            f"{'meets' if per_100k <= GOAL_WALL_S else 'MISSES'} the goal ≤ {GOAL_WALL_S} s"
        )
    print("\nRedis bytes per timeline entry (full homes of 800 entries)")
    header = (
        f"{'zset-max-listpack-entries':<27}{'encoding':>10}{'MEMORY USAGE/800':>18}"
        f"{'used_memory Δ/entry':>21}{'homes':>9}"
    )
    print(header)
    print("-" * len(header))
    for m in memory:
        verdict = "meets" if m.usage_per_entry <= GOAL_BYTES else "MISSES"
        print(
            f"{m.listpack_entries:<27}{m.encoding:>10}{m.usage_per_entry:>18.1f}"
            f"{m.growth_per_entry:>21.1f}{m.homes:>9,}   {verdict} ≤ {GOAL_BYTES} B"
        )
    print("every post reached every follower's home, no home over the cap")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--followers", type=int, default=100_000, help="followers (100,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method and case (3)")
    parser.add_argument(
        "--skiplist-followers",
        type=int,
        default=10_000,
        help="followers in the full-home case at the default listpack limit (10,000)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="compare one redis-server with a local cluster instead (fanout_cluster.py)",
    )
    parser.add_argument("--partitions", type=int, default=12, help="with --cluster (12)")
    parser.add_argument("--masters", type=int, default=3, help="with --cluster (3)")
    parser.add_argument(
        "--accounts", type=int, default=12, help="with --cluster: posts at once (12)"
    )
    args = parser.parse_args()
    if args.cluster:
        from benchmarks import fanout_cluster

        return fanout_cluster.run(args)
    if args.followers < 1 or args.repeats < 1 or args.skiplist_followers < 1:
        parser.error("need --followers, --repeats and --skiplist-followers ≥ 1")
    with tempfile.TemporaryDirectory(prefix="muster-bench-") as tmp:
        server = start_redis_server(Path(tmp) / "redis")
        try:
            began = time.perf_counter()
            cases, memory = asyncio.run(run(args, server))
        finally:
            server.kill()
    report(args, cases, memory)
    print(f"(whole run {time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
