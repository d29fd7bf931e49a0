"""Replay scaling: the same history replayed on one Redis and on a local Redis Cluster.

    python tests/benchmarks/replay_scaling.py [--events N] [--partitions K] [--masters M]
                                              [--batch B] [--people P] [--teams T]

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts a redis-server and a cluster of M masters (default 3, no replicas) on free loopback
   ports in a temp dir, all without persistence (tests/redis_server.py, tests/redis_cluster.py),
   with zset-max-listpack-entries 1024 as `muster up` sets it;
2. writes the same N events (default 200,000; replay.py's mix: people, teams, follows, posts,
   DMs) to the event log of each, in K partitions (default 12: 4 per master);
3. replays the default projections (`muster replay`'s own code, one worker per partition) on
   each, and prints events/s, the CPU per event this process and the Redis servers spent, and
   the cluster/single ratio;
4. sizes on paper what reaches GOAL events/s: the processes the client side needs at the
   measured CPU per event, and the masters the server side needs at the measured Redis CPU per
   event (each master a core, used up to SERVER_SHARE).
Replay runs in one process; the client's CPU per event bounds it (1e6 / client µs per event)
whatever the number of masters, while the server's share of the work spreads over the masters.
Exit status 1 when the checksums of the two replays differ.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the suite's redis_server and redis_cluster


import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from benchmarks.replay import LOAD_BATCH, load_log, make_events  # noqa: E402
from redis_cluster import LocalCluster, LocalNode  # noqa: E402
from redis_server import RedisServer, start_redis_server  # noqa: E402

from muster.connection import async_client  # noqa: E402
from muster.ops.replay import ReplayRequest, replay  # noqa: E402
from muster.projections import families as projections  # noqa: E402
from muster.settings import Settings  # noqa: E402

GOAL = 50_000
SERVER_SHARE = 0.8
"""Share of a master's core its replay work may take (the rest: replication, live traffic)."""
LISTPACK = 1024


def server_cpu(servers: Sequence[RedisServer]) -> float:
    """Seconds of CPU the servers have used, in all."""
    total = 0.0
    for server in servers:
        with server.client() as client:
            info: Any = client.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    client: aioredis.Redis, settings: Settings, servers: Sequence[RedisServer], batch: int
) -> dict[str, float]:
    server0, own0 = server_cpu(servers), own_cpu()
    result = await replay(client, settings, ReplayRequest(batch=batch))
    server, own = server_cpu(servers) - server0, own_cpu() - own0
    per = max(result.events, 1)
    return {
        "events": result.events,
        "seconds": result.seconds,
        "rate": result.events_per_second,
        "server_us": server / per * 1e6,
        "client_us": own / per * 1e6,
    }


def row(*cells: object) -> str:
    return "  ".join(f"{c!s:>13}" if i else f"{c!s:<30}" for i, c in enumerate(cells))


async def load(client: aioredis.Redis, history: list[Any], partitions: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(history), LOAD_BATCH):
        await load_log(client, history[start : start + LOAD_BATCH], partitions)
    return time.perf_counter() - started


def unpersisted(node: LocalNode) -> None:
    """Like the single server: no AOF, no RDB (the cluster fixture keeps an fsynced AOF)."""
    with node.client() as client:
        client.config_set("appendonly", "no")
        client.config_set("save", "")
        client.config_set("zset-max-listpack-entries", LISTPACK)


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="muster-replay-scaling-"))
    single = start_redis_server(work / "single")
    cluster = LocalCluster(work / "cluster", masters=args.masters, replicas=0)
    status = 0
    try:
        cluster.start()
        for node in cluster.nodes:
            unpersisted(node)
        with single.client() as sync:
            sync.config_set("zset-max-listpack-entries", LISTPACK)
        history = make_events(args.events, args.people, args.teams)
        print(
            f"{len(history):,} events, {args.partitions} partitions; one redis-server vs a "
            f"cluster of {args.masters} masters; python {sys.version.split()[0]}, "
            f"{os.cpu_count()} cores, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        print(row("replay, default projections", "events", "seconds", "events/s", "redis µs/ev", "client µs/ev"))  # fmt: skip
        figures: dict[str, dict[str, float]] = {}
        checksums = {}
        for name, url, servers in (
            ("one redis-server", single.url, [single]),
            (f"cluster, {args.masters} masters", cluster.url, list(cluster.masters())),
        ):
            settings = Settings(redis_url=url, partitions=args.partitions)
            client = async_client(settings)
            try:
                took = await load(client, history, args.partitions)
                print(f"  (loaded {name} in {took:.1f} s)")
                figures[name] = await measure(client, settings, servers, args.batch)
                checksums[name] = await projections.checksum(client, args.partitions)
            finally:
                await client.aclose()
            f = figures[name]
            print(row(f"  {name}", f"{f['events']:,.0f}", f"{f['seconds']:.1f}", f"{f['rate']:,.0f}", f"{f['server_us']:.1f}", f"{f['client_us']:.1f}"))  # fmt: skip
        one, many = figures.values()
        print(f"cluster / single: {many['rate'] / one['rate']:.2f}x")
        same = len({c.digest for c in checksums.values()}) == 1
        print(f"the same projections on both (checksum): {same}")
        if not same:
            status = 1
        # --- on paper ---------------------------------------------------------------------
        client_us = many["client_us"]
        server_us = many["server_us"]
        processes = GOAL * client_us / 1e6
        masters = GOAL * server_us / 1e6 / SERVER_SHARE
        print(
            f"to reach {GOAL:,} events/s at these costs: the client side needs "
            f"{GOAL:,} x {client_us:.1f} µs = {processes:.1f} cores of replay workers; "
            f"Redis needs {GOAL:,} x {server_us:.1f} µs = {GOAL * server_us / 1e6:.1f} cores, "
            f"that is {masters:.1f} masters at {SERVER_SHARE:.0%} of a core each"
        )
    except (redis.RedisError, OSError) as exc:
        print(f"failed: {exc}\n{cluster.tails()}", file=sys.stderr)
        status = 2
    finally:
        cluster.stop()
        single.kill()
        shutil.rmtree(work, ignore_errors=True)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2_000, help="replay batch (events)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
