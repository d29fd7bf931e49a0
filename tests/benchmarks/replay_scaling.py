"""Replay scaling: the same history replayed on one Redis and on a local Redis Cluster.

    python tests/benchmarks/replay_scaling.py [--events N] [--partitions K] [--masters M]
                                              [--workers W] [--batch B] [--people P] [--teams T]

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts a redis-server and a cluster of M masters (default 3, no replicas) on free loopback
   ports in a temp dir, all without persistence (tests/redis_server.py, tests/redis_cluster.py),
   with zset-max-listpack-entries 1024 as `muster up` sets it;
2. writes the same N events (default 200,000; replay.py's mix: people, teams, follows, posts,
   DMs) to the event log of each, in K partitions (default 12: 4 per master);
3. replays the default projections (`muster replay`'s own code) on each, first in one process
   (--workers 1) then in W worker processes (default: min(K, CPUs), as `muster replay` picks),
   and prints events/s, the CPU per event the replay's processes and the Redis servers spent,
   and each run's ratio to the first (one redis-server, one process): the baseline of the
   same run, so a busy machine skews all four alike; then the CPU seconds of the busiest
   replay worker (its start-up included) and of the busiest Redis server, and the events/s
   the run would reach if each had a core of its own (events / the busier of the two), with
   its ratio to the first run's: what the work spread allows, whatever the machine's load;
4. sizes on paper what reaches GOAL events/s: the worker processes the client side needs at
   the CPU per event measured with W workers (each worker reads the whole history, so that
   figure includes the reading every worker repeats), and the masters the server side needs
   at the measured Redis CPU per event (each master a core, used up to SERVER_SHARE).
On a machine with fewer cores than W workers plus the Redis servers, the workers and Redis
share the cores, and the ratios say how far the work spread, not how far it would go with a
core each. Exit status 1 when the checksums of the replays differ.
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


def server_cpu(servers: Sequence[RedisServer]) -> list[float]:
    """Seconds of CPU each server has used."""
    found = []
    for server in servers:
        with server.client() as client:
            info: Any = client.info("cpu")
        found.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return found


def own_cpu() -> float:
    """Seconds of CPU this process and its finished children (replay workers) have used."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


async def measure(
    client: aioredis.Redis,
    settings: Settings,
    servers: Sequence[RedisServer],
    batch: int,
    workers: int,
) -> dict[str, float]:
    server0, own0 = server_cpu(servers), own_cpu()
    result = await replay(client, settings, ReplayRequest(batch=batch, workers=workers))
    spent = [b - a for a, b in zip(server0, server_cpu(servers), strict=True)]
    own = own_cpu() - own0
    per = max(result.events, 1)
    busiest = max(max(result.worker_cpu_seconds), max(spent))
    return {
        "events": result.events,
        "seconds": result.seconds,
        "rate": result.events_per_second,
        "server_us": sum(spent) / per * 1e6,
        "client_us": own / per * 1e6,
        "workers": result.workers,
        "worker_s": max(result.worker_cpu_seconds),
        "master_s": max(spent),
        "a_core_each": per / busiest,
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
        workers = args.workers or min(args.partitions, os.cpu_count() or 1)
        print(row("replay, default projections", "workers", "events", "seconds", "events/s", "vs first", "redis µs/ev", "client µs/ev", "busiest wkr s", "busiest redis s", "a core each", "vs first"))  # fmt: skip
        figures: dict[tuple[str, int], dict[str, float]] = {}
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
                for w in dict.fromkeys((1, workers)):
                    f = await measure(client, settings, servers, args.batch, w)
                    figures[name, w] = f
                    checksums[name, w] = await projections.checksum(client, args.partitions)
                    first = next(iter(figures.values()))
                    print(row(f"  {name}", f"{f['workers']:.0f}", f"{f['events']:,.0f}", f"{f['seconds']:.1f}", f"{f['rate']:,.0f}", f"{f['rate'] / first['rate']:.2f}x", f"{f['server_us']:.1f}", f"{f['client_us']:.1f}", f"{f['worker_s']:.1f}", f"{f['master_s']:.1f}", f"{f['a_core_each']:,.0f}", f"{f['a_core_each'] / first['a_core_each']:.2f}x"))  # fmt: skip
            finally:
                await client.aclose()
        same = len({c.digest for c in checksums.values()}) == 1
        print(f"the same projections in every run (checksum): {same}")
        if not same:
            status = 1
        # --- on paper ---------------------------------------------------------------------
        many = figures[f"cluster, {args.masters} masters", workers]
        client_us = many["client_us"]
        server_us = many["server_us"]
        processes = GOAL * client_us / 1e6
        masters = GOAL * server_us / 1e6 / SERVER_SHARE
        print(
            f"to reach {GOAL:,} events/s at the costs measured on the cluster with {workers} "
            f"workers: the client side needs {GOAL:,} x {client_us:.1f} µs = {processes:.1f} "
            f"cores of replay workers (each worker's reading of the whole history included, "
            f"at this worker count); Redis needs {GOAL:,} x {server_us:.1f} µs = "
            f"{GOAL * server_us / 1e6:.1f} cores, that is {masters:.1f} masters at "
            f"{SERVER_SHARE:.0%} of a core each"
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
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (default min(partitions, CPUs))"
    )
    parser.add_argument("--batch", type=int, default=2_000, help="replay batch (events)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
