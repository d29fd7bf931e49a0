"""Fan-out on a Redis Cluster against one redis-server: what `fanout.py --cluster` runs.

    python tests/benchmarks/fanout.py --cluster [--followers N] [--repeats R]
                                                [--partitions K] [--masters M] [--accounts A]

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts a redis-server and a cluster of M masters (default 3, no replicas), both without
   persistence and with zset-max-listpack-entries 1024 as `muster up` sets it;
2. builds on each the follower graph as the timeline worker keeps it with K partitions
   (default 12): N followers (default 100,000) of one account, each in the followers hash of
   their own partition (so a partition's share of a post's fan-out runs on the master of
   that partition's slot), and A accounts (default 12) with N / A followers each;
3. publishes with the timeline worker's own code (Timeline.publish, routing and live
   announcements off: the home timelines' write path), homes emptied before every run, R
   runs of each case interleaved between the two set-ups:
   - "one post": one post of the big account into N homes (a big fan-out's latency);
   - "A at once": one post of each of the A accounts, published by A tasks at once (as
     several timeline worker processes would), N inserts in all;
   and checks after each run (untimed) that every follower's home holds the post;
4. prints per case the median wall time, homes inserted per second and its ratio cluster /
   one node, the CPU of the Redis servers (all, and the busiest) and of this client, and the
   inserts per second with a core each (inserts / the busier of the client and the busiest
   server) with its ratio: what the spread allows on a machine with cores to spare.
The cluster spreads a fan-out's work over the masters: one post's pages go out on one
pipeline to every master at once, then each partition's further pages in turn. On a machine
with fewer cores than masters, they share the cores; the busiest master's CPU says what one
master with a core of its own would take. Exit status 1 if a post is missing from a home.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the suite's redis_server and redis_cluster

import redis.asyncio as aioredis  # noqa: E402
from redis_cluster import LocalCluster  # noqa: E402
from redis_server import RedisServer, start_redis_server  # noqa: E402

from muster import keys  # noqa: E402
from muster.connection import async_client  # noqa: E402
from muster.events import PostPublished, utcnow  # noqa: E402
from muster.ids import IdGenerator  # noqa: E402
from muster.projections.timeline import Timeline  # noqa: E402
from muster.settings import Settings  # noqa: E402

LISTPACK = 1024
CHUNK = 5_000
BIG = "ops"

# KEYS: a followers hash   ARGV: cursor, home member, home prefix → {cursor, homes, with it}
_VERIFY = """
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', 5000)
local fields = page[2]
local homes, found = 0, 0
for i = 1, #fields, 2 do
  homes = homes + 1
  if redis.call('ZSCORE', ARGV[3] .. fields[i], ARGV[2]) then found = found + 1 end
end
return {page[1], homes, found}
"""


@dataclass
class Runs:
    wall: list[float] = field(default_factory=list)
    redis: list[float] = field(default_factory=list)
    busiest: list[float] = field(default_factory=list)
    client: list[float] = field(default_factory=list)
    inserts: int = 0


def server_cpu(servers: Sequence[RedisServer]) -> list[float]:
    found = []
    for server in servers:
        with server.client() as client:
            info: Any = client.info("cpu")
        found.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return found


class Setup:
    """One Redis (a server or a cluster) with the follower graph built."""

    def __init__(self, name: str, url: str, servers: Sequence[RedisServer], args: Any) -> None:
        self.name = name
        self.servers = servers
        self.args = args
        self.settings = Settings(
            redis_url=url,
            partitions=args.partitions,
            fanout_on_read_threshold=args.followers + 1,  # fanned out on write, however big
        )
        self.redis: aioredis.Redis = async_client(self.settings)
        self.ids = IdGenerator(node=1)
        self.handles = [f"person_{i:06d}" for i in range(args.followers)]
        share = max(1, args.followers // args.accounts)
        self.small = {
            f"team_{a:02d}": self.handles[a * share : (a + 1) * share] for a in range(args.accounts)
        }
        self.runs: dict[str, Runs] = {}
        self.failures: list[str] = []

    def _by_partition(self, handles: Sequence[str]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for handle in handles:
            found.setdefault(keys.partition_of(handle, self.args.partitions), []).append(handle)
        return found

    async def build(self) -> None:
        for account, handles in ((BIG, self.handles), *self.small.items()):
            for q, share in self._by_partition(handles).items():
                for start in range(0, len(share), CHUNK):
                    chunk = share[start : start + CHUNK]
                    await self.redis.hset(
                        keys.followers(q, account), mapping=dict.fromkeys(chunk, "app")
                    )

    async def empty_homes(self) -> None:
        for q, handles in self._by_partition(self.handles).items():
            for start in range(0, len(handles), CHUNK):
                await self.redis.unlink(*(keys.home(q, h) for h in handles[start : start + CHUNK]))

    def post(self, account: str) -> PostPublished:
        return PostPublished(
            id=self.ids.next(), actor="author", at=utcnow(), author="author", as_account=account,
            text="fan-out benchmark",
        )  # fmt: skip

    async def measure(self, case: str, posts: list[PostPublished]) -> None:
        await self.empty_homes()
        timelines = [
            Timeline(self.redis, self.settings, route=False, announce=False, expand=False)
            for _ in posts
        ]
        before, own = server_cpu(self.servers), time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(t.publish([p]) for t, p in zip(timelines, posts, strict=True)))
        wall = time.perf_counter() - began
        runs_client = time.process_time() - own
        spent = [b - a for a, b in zip(before, server_cpu(self.servers), strict=True)]
        runs = self.runs.setdefault(case, Runs())
        runs.wall.append(wall)
        runs.redis.append(sum(spent))
        runs.busiest.append(max(spent))
        runs.client.append(runs_client)
        runs.inserts = sum(len(self.followers_of(post)) for post in posts)
        for post in posts:
            await self.verify(post)

    def followers_of(self, post: PostPublished) -> list[str]:
        return self.handles if post.as_account == BIG else self.small[post.as_account]

    async def verify(self, post: PostPublished) -> None:
        followers = self.followers_of(post)
        script = self.redis.register_script(_VERIFY)
        homes = found = 0
        for q in range(self.args.partitions):
            cursor: Any = "0"
            while True:
                cursor, h, f = await script(
                    keys=[keys.followers(q, post.as_account)],
                    args=[cursor, keys.home_member(post.id), keys.home_prefix(q)],
                )
                homes, found = homes + h, found + f
                if int(cursor) == 0:
                    break
        if homes != len(followers) or found != homes:
            self.failures.append(
                f"{self.name}: {found} of {len(followers)} homes hold post {post.id} "
                f"({homes} scanned)"
            )


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


async def _run(setups: list[Setup], args: Any) -> None:
    for setup in setups:
        took = time.perf_counter()
        await setup.build()
        print(f"  (built {setup.name}'s follower graph in {time.perf_counter() - took:.1f} s)")
    for _ in range(args.repeats):
        for setup in setups:  # interleaved: a busy moment of the machine hits both alike
            await setup.measure("one post", [setup.post(BIG)])
            await setup.measure(f"{args.accounts} at once", [setup.post(a) for a in setup.small])


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="muster-fanout-cluster-"))
    single = start_redis_server(work / "single")
    cluster = LocalCluster(work / "cluster", masters=args.masters, replicas=0)
    setups: list[Setup] = []
    try:
        cluster.start()
        for node in (single, *cluster.nodes):
            with node.client() as client:
                client.config_set("appendonly", "no")
                client.config_set("save", "")
                client.config_set("zset-max-listpack-entries", LISTPACK)
        setups = [
            Setup("one redis-server", single.url, [single], args),
            Setup(f"cluster, {args.masters} masters", cluster.url, cluster.masters(), args),
        ]
        print(
            f"fan-out on one redis-server vs a cluster of {args.masters} masters: "
            f"{args.followers:,} followers in {args.partitions} partitions; {args.repeats} "
            f"run(s) per case, median; {os.cpu_count()} cores, load "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )

        async def main() -> None:
            try:
                await _run(setups, args)
            finally:
                for setup in setups:
                    await setup.redis.aclose()

        asyncio.run(main())
    finally:
        cluster.stop()
        single.kill()
        shutil.rmtree(work, ignore_errors=True)
    report(setups, args)
    failures = [f for setup in setups for f in setup.failures]
    for failure in failures:
        print(f"  !! {failure}")
    return 1 if failures else 0


def report(setups: list[Setup], args: Any) -> None:
    header = (
        f"{'case':<12}{'redis':<20}{'wall s':>8}{'inserts/s':>11}{'vs one':>8}"
        f"{'redis cpu s':>12}{'busiest s':>10}{'client s':>9}{'a core each':>13}{'vs one':>8}"
    )
    print(header)
    print("-" * len(header))
    one = setups[0]
    for case in one.runs:
        base = one.runs[case]
        for setup in setups:
            runs = setup.runs[case]
            wall, busiest = _median(runs.wall), _median(runs.busiest)
            rate = runs.inserts / wall
            # The busier of the client and the busiest server bounds it given a core each.
            bound = runs.inserts / max(busiest, _median(runs.client))
            base_bound = base.inserts / max(_median(base.busiest), _median(base.client))
            print(
                f"{case:<12}{setup.name:<20}{wall:>8.3f}{rate:>11,.0f}"
                f"{rate / (base.inserts / _median(base.wall)):>7.2f}x"
                f"{_median(runs.redis):>12.2f}{busiest:>10.2f}{_median(runs.client):>9.2f}"
                f"{bound:>13,.0f}{bound / base_bound:>7.2f}x"
            )
    if not any(setup.failures for setup in setups):
        print("every post reached every follower's home")
