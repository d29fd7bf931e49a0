"""The audit and replay commands of `muster` (registered by muster.cli.build_parser):

    muster replay [--projections a,b] [--from-archive] [--since ID|TIME] [--redeliver] [--workers N]
                  [--wait | --inline] [--attach JOB]
    muster projections checksum [--projections a,b] [--json]
    muster audit verify [--dir PATH]
    muster trim [--dry-run]
    muster worker ops                                   (run through muster.cli.run_worker)

Each is a thin entrypoint: arguments in, the work done by replay.py, jobs.py, muster.projections.families,
verify.py or trim.py, a report and an exit code out (cli.py's: 0 done, 1 failed, 2 usage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from muster import keys
from muster.connection import async_client, require_redis, rq_client, text
from muster.errors import CommandFailed, CommandUsage
from muster.ids import is_id, lowest_id_at
from muster.settings import Settings

T = TypeVar("T")


def _with_redis(
    settings: Settings, command: str, work: Callable[[aioredis.Redis], Awaitable[T]]
) -> T:
    require_redis(settings, command)

    async def run() -> T:
        client = async_client(settings)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise CommandFailed(f"muster {command}: cannot reach Redis: {exc}") from exc


def since_id(raw: str) -> str:
    """An event id, or an RFC 3339 time → the lowest event id at that time."""
    if is_id(raw):
        return raw
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an event id or an RFC 3339 time (2024-05-01T12:00:00Z): {raw!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(lowest_id_at(int(moment.timestamp() * 1000)))


# --- replay -------------------------------------------------------------------------------------
def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    from muster.ops import jobs
    from muster.ops.replay import ReplayError, ReplayRequest
    from muster.projections import families

    require_redis(settings, "replay")
    if args.attach:
        return _attach(settings, args.attach)
    try:
        chosen = families.parse_families(args.projections)
    except ValueError as exc:
        raise CommandUsage(f"muster replay: {exc}") from None
    if "deliveries" in chosen and not args.redeliver:
        raise CommandUsage(
            "muster replay: delivery status is not in the log; rebuilding it routes every "
            "delivery again: add --redeliver (email, SMS and webhooks are sent again)"
        )
    request = ReplayRequest(
        projections=chosen if args.projections else None,
        from_archive=args.from_archive,
        since=args.since,
        redeliver=args.redeliver,
        batch=args.batch,
        workers=args.workers,
    )
    if args.inline:
        return _inline(settings, request)
    connection = rq_client(settings)
    try:
        job = jobs.enqueue_replay(connection, request)
        print(f"replay queued as job {job.id} on {keys.QUEUE_OPS}: {jobs.describe(request)}")
        if not args.wait:
            print(f"`muster worker ops` runs it; watch it with `muster replay --attach {job.id}`")
            return 0
        if not jobs.watch(job):
            print(f"muster replay: failed: {jobs.failure_of(job)}", file=sys.stderr)
            return 1
        _print_result(job.return_value())
        return 0
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CommandFailed(f"muster replay: cannot reach Redis: {exc}") from exc
    except ReplayError as exc:
        raise CommandFailed(f"muster replay: {exc}") from exc
    finally:
        connection.close()


def _attach(settings: Settings, job_id: str) -> int:
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from muster.ops import jobs

    connection = rq_client(settings)
    try:
        try:
            job = Job.fetch(job_id, connection=connection)
        except NoSuchJobError:
            raise CommandFailed(
                f"muster replay: no job {job_id} (finished jobs are kept 7 days)"
            ) from None
        if not jobs.watch(job):
            print(f"muster replay: failed: {jobs.failure_of(job)}", file=sys.stderr)
            return 1
        _print_result(job.return_value())
        return 0
    finally:
        connection.close()


def _inline(settings: Settings, request: Any) -> int:
    """Run the replay in this process (no ops worker needed: a restore before anything runs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from muster.ops import jobs
    from muster.ops.replay import ReplayError

    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10} events/s"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("starting", total=None, rate="-")

        def progress(phase: str, done: int, total: int, rate: float) -> None:
            bar.update(
                task, description=phase, completed=done, total=total or None, rate=f"{rate:,.0f}"
            )

        try:
            result = _with_redis(
                settings, "replay", lambda _: jobs.run_replay(settings, request, progress)
            )
        except ReplayError as exc:
            raise CommandFailed(f"muster replay: {exc}") from exc
    _print_result(msgspec.to_builtins(result))
    return 0


def _print_result(result: Any) -> None:
    if not isinstance(result, dict):
        return
    what = "restored" if result.get("restored") else "replayed"
    print(
        f"{what} {result['events']} events from the {result['source']} into "
        f"{', '.join(result['projections'])} in {result['seconds']} s "
        f"({result['events_per_second']:,.0f} events/s in {result.get('workers', 1)} worker "
        f"process(es); {result['dropped_keys']} keys dropped first)"
    )


# --- checksum, verify, trim --------------------------------------------------------------------
def run_checksum(args: argparse.Namespace, settings: Settings) -> int:
    from muster.projections import families

    try:
        chosen = families.parse_families(args.projections) if args.projections else families.ALL
    except ValueError as exc:
        raise CommandUsage(f"muster projections checksum: {exc}") from None
    result = _with_redis(
        settings,
        "projections checksum",
        lambda client: families.checksum(client, settings.partitions, chosen),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "digest": result.digest,
                    "families": {
                        name: {"digest": digest, "keys": count}
                        for name, (digest, count) in result.families.items()
                    },
                },
                indent=2,
            )
        )
        return 0
    for name, (digest, count) in result.families.items():
        print(f"{name:<11} {digest}  {count} keys")
    print(f"{'total':<11} {result.digest}")
    return 0


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    from muster.ops.verify import verify

    root: Path = args.dir or settings.archive_dir
    if not root.is_dir():
        raise CommandFailed(f"muster audit verify: no archive at {root}")
    recorded = _recorded_heads(settings) if args.dir is None else {}
    reports = verify(root, recorded)
    if not reports:
        print(f"{root}: no partitions archived yet")
        return 0
    damaged = False
    for report in reports:
        for warning in report.warnings:
            print(f"partition {report.partition}: warning: {warning}")
        if report.damage is not None:
            damaged = True
            print(f"DAMAGED {report.damage.describe()}")
        else:
            print(
                f"partition {report.partition}: intact, {report.records} records in "
                f"{report.segments} segment{'s' if report.segments != 1 else ''}"
            )
    return 1 if damaged else 0


def _recorded_heads(settings: Settings) -> dict[int, tuple[int, str]]:
    """Redis's record of each partition's last archived record, when Redis is reachable."""
    if settings.redis_url is None:
        return {}

    async def read(client: aioredis.Redis) -> dict[int, tuple[int, str]]:
        heads: dict[int, tuple[int, str]] = {}
        for p in range(settings.partitions):
            raw = await client.hmget(keys.archive_head(p), "n", "hash")
            if raw[0] is not None and raw[1] is not None:
                heads[p] = (int(raw[0]), text(raw[1]))
        return heads

    try:
        return _with_redis(settings, "audit verify", read)
    except CommandFailed as exc:
        print(f"warning: {exc}; checking the files only", file=sys.stderr)
        return {}


def run_trim(args: argparse.Namespace, settings: Settings) -> int:
    from muster.trim import trim

    reports = _with_redis(
        settings, "trim", lambda client: trim(client, settings, dry_run=args.dry_run)
    )
    verb = "would trim" if args.dry_run else "trimmed"
    for report in reports:
        held = ", ".join(f"{name} {value}" for name, value in sorted(report.bounds.items()))
        print(
            f"{report.stream}: {verb} {report.trimmed} entries below {report.minid or '-'} ({held})"
        )
        for group in report.dead_groups:
            print(
                f"{report.stream}: group {group} is dead (lags, consumers silent)", file=sys.stderr
            )
    return 0


# --- parsers ------------------------------------------------------------------------------------
def _between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


_batch = _between(1, 100_000)


def add_commands(commands: Any) -> None:
    """Add replay, projections, audit and trim to `muster`'s subcommands."""
    from muster.ops.replay import DEFAULT_BATCH
    from muster.projections.families import DEFAULT_REPLAY, FAMILIES

    families = ", ".join(FAMILIES)
    replay = commands.add_parser(
        "replay",
        help="rebuild projections from the event log or the archive (an rq job)",
        description="Drop the chosen projections and rebuild them from the event log (or the "
        "archive), as an rq job that `muster worker ops` runs. From the archive into an empty "
        "Redis it restores everything: the event log, accounts, follows, posts, DMs, timelines. "
        "Email, SMS and webhooks are not sent again unless --redeliver.",
    )
    replay.add_argument(
        "--projections",
        metavar="A,B",
        help=f"which ({families}); default {','.join(DEFAULT_REPLAY)}",
    )
    replay.add_argument("--from-archive", action="store_true", help="read the archive, not the log")
    replay.add_argument(
        "--since",
        type=since_id,
        metavar="ID|TIME",
        help="apply events from this event id or RFC 3339 time on, on top (nothing dropped)",
    )
    replay.add_argument(
        "--redeliver", action="store_true", help="route deliveries again (sends what has no status)"
    )
    how = replay.add_mutually_exclusive_group()
    how.add_argument("--wait", action="store_true", help="show progress until the job ends")
    how.add_argument("--inline", action="store_true", help="run here instead of as an rq job")
    how.add_argument("--attach", metavar="JOB", help="watch a replay job started earlier")
    replay.add_argument(
        "--workers",
        type=_between(1, 1024),
        metavar="N",
        help="processes applying the partitions side by side (at most one per partition); "
        "default: one per partition up to the CPUs here",
    )
    replay.add_argument("--batch", type=_batch, default=DEFAULT_BATCH, help=argparse.SUPPRESS)
    replay.set_defaults(run=run_replay, process="replay")

    proj = commands.add_parser("projections", help="projection checks")
    proj_commands = proj.add_subparsers(
        dest="projections_command", required=True, metavar="COMMAND"
    )
    digest = proj_commands.add_parser(
        "checksum",
        help="a digest of the projections' content: equal before a drop and after a rebuild",
    )
    digest.add_argument("--projections", metavar="A,B", help=f"which ({families}); default all")
    digest.add_argument("--json", action="store_true", help="JSON instead of text")
    digest.set_defaults(run=run_checksum, process="projections")

    audit = commands.add_parser("audit", help="the audit archive")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    check = audit_commands.add_parser(
        "verify",
        help="check every hash chain of the archive; exit 1 at the first broken record",
    )
    check.add_argument("--dir", type=Path, help="archive directory (default MUSTER_ARCHIVE_DIR)")
    check.set_defaults(run=run_verify, process="audit")

    trim = commands.add_parser(
        "trim",
        help="trim the event log below what every group and the archive hold (the audit "
        "worker does this every minute)",
    )
    trim.add_argument("--dry-run", action="store_true", help="report only")
    trim.set_defaults(run=run_trim, process="trim")
