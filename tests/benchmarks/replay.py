"""Replay benchmark: rebuilding projections from 1M events, and archive appends with fsync.

    python tests/benchmarks/replay.py [--events N] [--people P] [--teams T] [--team-share S]
                                      [--partitions K] [--batch B] [--archive-dir DIR] [--check]

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts its own redis-server on a free loopback port in a temp dir (no AOF, no RDB), with
   zset-max-listpack-entries as `muster up` and deploy/redis.conf set it (--listpack, 1024:
   homes stay compact listpacks; 128 is Redis's default);
2. writes N events (default 1,000,000) to the event log, as the api would: P people (10,000)
   and T teams (200) are created, each person follows 3 teams and 2 people (~150 followers a
   team), then the rest is posts (a share S, 2 %, as teams; 20 % public, 10 % replies), DMs
   (25 %) and follows or unfollows (0.1 %, --follow-changes; each backfills or takes back up
   to 800 posts) — printed as a table before the figures;
3. archive appends with fsync: events appended by the audit worker's writer (PartitionArchive:
   flock, tail, write, fsync per batch) to an archive in a temp dir (or DIR), for batch
   sizes 1, 16 and 256 (the consumer loop's default) on a sample, then the whole log at 256
   — records/s, MB/s and fsyncs/s;
4. replay from the log: `muster replay`'s own code (muster.ops.replay.replay) rebuilding
   the default projections (graph, posts, timelines, DMs, audit index), then the timeline
   families alone and the audit index alone — events/s, and per event the CPU Redis and
   this process spent and the zset inserts Redis made (the fan-out), which say what bounds it;
5. total loss: FLUSHALL, then `replay --from-archive` restores the event log, the write side
   and every projection from the archive; with --check, every projection's checksum after
   4 and after 5 must be equal.
Goal: replay >= 50,000 events/s. Exit status 1 when --check finds a difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the suite's redis_server helper

import redis.asyncio as aioredis  # noqa: E402
from redis_server import start_redis_server  # noqa: E402

from muster import eventlog, events, keys  # noqa: E402
from muster.archive import Entry, PartitionArchive  # noqa: E402
from muster.connection import async_client, text  # noqa: E402
from muster.ops.replay import ReplayRequest, replay  # noqa: E402
from muster.projections import families as projections  # noqa: E402
from muster.settings import Settings  # noqa: E402

GOAL = 50_000
LOAD_BATCH = 5_000
SAMPLE = 20_000  # records per archive batch-size sample (batch 1 gets fewer: 2,000)
DMS_SHARE = 0.25


class Ids:
    """Snowflake ids a millisecond apart, from a fixed start (the log is a past week)."""

    def __init__(self, start: datetime) -> None:
        self.ms = int(start.timestamp() * 1000)
        self.seq = 0

    def next(self) -> tuple[str, datetime]:
        self.seq += 1
        if self.seq == 32:
            self.seq, self.ms = 0, self.ms + 1
        return str(self.ms << 16 | self.seq), datetime.fromtimestamp(self.ms / 1000, UTC)


def make_events(
    count: int,
    people: int,
    teams: int,
    team_share: float = 0.02,
    follow_changes: float = 0.001,
    seed: int = 7,
) -> list[events.Event]:
    rng = random.Random(seed)
    ids = Ids(datetime.now(UTC) - timedelta(days=7))
    out: list[events.Event] = []

    def new(event_class: type[Any], **fields: Any) -> None:
        event_id, at = ids.next()
        out.append(event_class(id=event_id, at=at, **fields))

    persons = [f"p{i:05d}" for i in range(people)]
    team_names = [f"team{i:03d}" for i in range(teams)]
    for handle in persons:
        email = f"{handle}@example.com" if rng.random() < 0.3 else None
        new(
            events.AccountCreated,
            actor="admin",
            handle=handle,
            account_id=ids.next()[0],
            kind="person",
            role="member",
            display_name=handle,
            email=email,
            token_hash=f"{rng.getrandbits(256):064x}",
        )
    for team in team_names:
        new(
            events.AccountCreated, actor="admin", handle=team, account_id=ids.next()[0], kind="team"
        )
        for poster in rng.sample(persons, 3):
            new(events.PosterGranted, actor="admin", account=team, poster=poster)
    following: dict[str, set[str]] = {p: set() for p in persons}
    for person in persons:
        for target in rng.sample(team_names, 3) + rng.sample(persons, 2):
            if target != person and target not in following[person]:
                following[person].add(target)
                new(events.AccountFollowed, actor=person, follower=person, account=target)
    posts: list[str] = []
    while len(out) < count:
        roll = rng.random()
        author = rng.choice(persons)
        if roll < follow_changes:
            target = rng.choice(team_names)
            if target in following[author]:
                following[author].discard(target)
                new(events.AccountUnfollowed, actor=author, follower=author, account=target)
            else:
                following[author].add(target)
                new(events.AccountFollowed, actor=author, follower=author, account=target)
        elif roll < follow_changes + DMS_SHARE:
            new(
                events.DirectMessageSent,
                actor=author,
                recipient=rng.choice(persons),
                text=f"dm {len(out)}: can you check the dashboard?",
            )
        else:
            as_account = rng.choice(team_names) if rng.random() < team_share else author
            reply = rng.choice(posts) if posts and rng.random() < 0.1 else None
            new(
                events.PostPublished,
                actor=author,
                author=author,
                as_account=as_account,
                text=f"post {len(out)}: status update, all systems nominal so far",
                visibility="public" if rng.random() < 0.2 else "internal",
                severity="critical" if rng.random() < 0.01 else "info",
                in_reply_to=reply,
            )
            posts.append(out[-1].id)
    return out


async def load_log(redis: aioredis.Redis, batch: list[events.Event], partitions: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for event in batch:
            eventlog.append(pipe, event, partitions)
        await pipe.execute()


async def read_log(redis: aioredis.Redis, partitions: int) -> dict[int, list[Entry]]:
    found: dict[int, list[Entry]] = {}
    for p in range(partitions):
        start = "-"
        entries: list[Entry] = []
        while True:
            page: Any = await redis.xrange(keys.events(p), start, "+", count=10_000)
            if not page:
                break
            entries += [Entry(keys.events(p), text(i), f[events.STREAM_FIELD]) for i, f in page]
            start = "(" + text(page[-1][0])
        found[p] = entries
    return found


def archive_append(
    root: Path, partition: int, entries: list[Entry], batch: int
) -> tuple[float, int]:
    """Append in batches of `batch`, each under the lock with one fsync: (seconds, bytes)."""
    part = PartitionArchive(root, partition, segment_bytes=Settings().archive_segment_bytes)
    started = time.perf_counter()
    for start in range(0, len(entries), batch):
        with part.locked():
            part.append(part.tail(), entries[start : start + batch])
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (root / f"p{partition}").glob("segment-*.jsonl"))
    return seconds, size


async def measured(redis: aioredis.Redis, settings: Settings, request: ReplayRequest) -> list[str]:
    """Run one replay; its figures: events, seconds, events/s, Redis and client CPU per
    event, zset inserts per event (Redis counts them, inside scripts too)."""
    await redis.config_resetstat()
    cpu0 = await redis.info("cpu")
    ours0 = resource.getrusage(resource.RUSAGE_SELF)
    result = await replay(redis, settings, request)
    ours1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1 = await redis.info("cpu")
    stats = await redis.info("commandstats")
    server = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_user", "used_cpu_sys"))
    client = (ours1.ru_utime - ours0.ru_utime) + (ours1.ru_stime - ours0.ru_stime)
    zadds = int(stats.get("cmdstat_zadd", {}).get("calls", 0))
    per = max(result.events, 1)
    return [
        f"{result.events:,}",
        f"{result.seconds:.1f}",
        f"{result.events_per_second:,.0f}",
        f"{server / per * 1e6:.1f}",
        f"{client / per * 1e6:.1f}",
        f"{zadds / per:.1f}",
    ]


def row(*cells: object) -> str:
    return "  ".join(f"{c!s:>14}" if i else f"{c!s:<44}" for i, c in enumerate(cells))


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="muster-replay-bench-"))
    archive_root = Path(args.archive_dir) if args.archive_dir else work / "archive"
    server = start_redis_server(work / "redis")
    status = 0
    try:
        settings = Settings(
            redis_url=server.url, partitions=args.partitions, archive_dir=archive_root
        )
        redis = async_client(settings)
        try:
            await redis.config_set("zset-max-listpack-entries", args.listpack)
            print(
                f"redis-server {server.url} (zset-max-listpack-entries {args.listpack}), archive in {archive_root}, python {sys.version.split()[0]}, {os.cpu_count()} cores"
            )
            started = time.perf_counter()
            history = make_events(
                args.events, args.people, args.teams, args.team_share, args.follow_changes
            )
            kinds = Counter(type(e).__name__ for e in history)
            print(f"made {len(history):,} events in {time.perf_counter() - started:.1f} s:")
            for name, count in kinds.most_common():
                print(f"    {name:<22} {count:>10,}")
            started = time.perf_counter()
            for start in range(0, len(history), LOAD_BATCH):
                await load_log(redis, history[start : start + LOAD_BATCH], args.partitions)
            print(f"appended to the event log in {time.perf_counter() - started:.1f} s")
            del history

            # --- archive appends with fsync ------------------------------------------------
            log = await read_log(redis, args.partitions)
            print()
            print(
                row(
                    "archive append (flock + write + fsync)",
                    "records",
                    "seconds",
                    "records/s",
                    "MB/s",
                    "fsyncs/s",
                )
            )
            sample = log[0][:SAMPLE]
            for batch in (1, 16, 256):
                entries = sample[: 2_000 if batch == 1 else SAMPLE]
                root = work / f"archive-sample-{batch}"
                seconds, size = archive_append(root, 0, entries, batch)
                print(
                    row(
                        f"  batch {batch}",
                        f"{len(entries):,}",
                        f"{seconds:.2f}",
                        f"{len(entries) / seconds:,.0f}",
                        f"{size / seconds / 1e6:.1f}",
                        f"{len(entries) / batch / seconds:,.0f}",
                    )
                )
                shutil.rmtree(root)
            total, seconds, size = 0, 0.0, 0
            for p, entries in log.items():
                took, written = archive_append(archive_root, p, entries, 256)
                total, seconds, size = total + len(entries), seconds + took, size + written
            print(
                row(
                    "  batch 256, the whole log",
                    f"{total:,}",
                    f"{seconds:.2f}",
                    f"{total / seconds:,.0f}",
                    f"{size / seconds / 1e6:.1f}",
                    f"{total / 256 / seconds:,.0f}",
                )
            )
            del log

            # --- replay from the log ---------------------------------------------------------
            print()
            print(
                row(
                    "replay (muster.ops.replay.replay)",
                    "events",
                    "seconds",
                    "events/s",
                    "redis µs/ev",
                    "client µs/ev",
                    "zadd/ev",
                )
            )
            runs = [
                ("log → default projections", ReplayRequest(batch=args.batch)),
                (
                    "log → graph, posts, timelines, dms",
                    ReplayRequest(projections=projections.TIMELINE_FAMILIES, batch=args.batch),
                ),
                ("log → audit index", ReplayRequest(projections=("audit",), batch=args.batch)),
            ]
            for name, request in runs:
                print(row(f"  {name}", *await measured(redis, settings, request)))
            before = await projections.checksum(redis, args.partitions) if args.check else None

            # --- total loss: restore from the archive ----------------------------------------
            await redis.flushall()
            request = ReplayRequest(from_archive=True, batch=args.batch)
            print(
                row(
                    "  archive → restore all (empty Redis)",
                    *await measured(redis, settings, request),
                )
            )
            info: Any = await redis.info("memory")
            print(
                f"\nRedis used_memory after the restore: {int(info['used_memory']) / 2**20:,.0f} MiB"
            )
            print(
                f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes share the {os.cpu_count()} cores)"
            )
            print(f"goal: replay >= {GOAL:,} events/s")
            if before is not None:
                after = await projections.checksum(redis, args.partitions)
                # The log replay leaves the write side alone (this log was written without it).
                same = {
                    f: before.families[f] == after.families[f]
                    for f in before.families
                    if f != "accounts"
                }
                print(f"projections equal after the log replay and after the restore: {same}")
                if not all(same.values()):
                    status = 1
        finally:
            await redis.aclose()
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--team-share", type=float, default=0.02, help="share of posts by teams")
    parser.add_argument(
        "--follow-changes",
        type=float,
        default=0.001,
        help="share of follows/unfollows after the start (each backfills up to 800 posts)",
    )
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument(
        "--listpack", type=int, default=1024, help="zset-max-listpack-entries (muster up: 1024)"
    )
    parser.add_argument("--batch", type=int, default=2_000, help="replay batch (events)")
    parser.add_argument("--archive-dir", help="where the archive goes (default: a temp dir)")
    parser.add_argument("--check", action="store_true", help="compare checksums (slow)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
