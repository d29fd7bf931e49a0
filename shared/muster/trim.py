"""Safe trimming of the event log: only below what every group and the archive hold.

For each partition's stream, the lowest entry still needed is the minimum of:
- per consumer group: its oldest pending entry (read, not acknowledged), else the entry after
  its last-delivered id (it has not read further);
- the entry after the highest one the archive holds (keys.archive_head `entry`);
- the oldest entry the audit group dead-lettered (in the dead-letter stream, not archived);
- now - MUSTER_STREAM_RETENTION (entries are kept at least that long).
`XTRIM MINID` removes entries strictly below that minimum, so nothing un-archived or
unprocessed is ever trimmed.

A group that lags while every one of its consumers has been silent longer than
MUSTER_GROUP_DEAD_AFTER, and whose oldest needed entry is older than that too, is dead: it
no longer holds trimming back (it would keep the log forever), and it is reported in the log,
in keys.DEAD_GROUPS and as `muster_dead_groups`. The audit group never stops counting: what
it has not acknowledged may not be archived yet.

Runs in the audit worker every TRIM_INTERVAL_S, and on demand as `muster trim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from muster import keys, streamids
from muster.connection import text
from muster.ids import lowest_id_at
from muster.settings import Settings
from muster.streamids import StreamId

log = structlog.get_logger("muster.trim")

TRIM_INTERVAL_S = 60.0
"""How often the audit worker trims."""
ARCHIVED_IDS_MARGIN_MS = 3600 * 1000
"""keys.archived keeps ids this much older than the log's first entry (event ids come from
the api's clock, entry ids from Redis's)."""


@dataclass(frozen=True, slots=True)
class GroupState:
    group: str
    needs: StreamId  # the lowest entry this group still needs
    lagging: bool
    idle_ms: int  # of its most recently active consumer (a very large number without one)
    dead: bool


@dataclass
class TrimReport:
    partition: int
    stream: str
    bounds: dict[str, str] = field(default_factory=dict)  # what holds trimming → entry id
    minid: str | None = None
    trimmed: int = 0
    dead_groups: list[str] = field(default_factory=list)
    length: int = 0  # entries left


async def _group_states(
    redis: aioredis.Redis, stream: str, last: StreamId, now_ms: int, dead_after_ms: int
) -> list[GroupState]:
    states = []
    for info in await redis.xinfo_groups(stream):
        group = text(info["name"])
        pending = int(info["pending"])
        delivered = streamids.parse(text(info["last-delivered-id"]))
        needs = streamids.after(delivered)
        if pending:
            summary = await redis.xpending(stream, group)
            if summary.get("min") is not None:
                needs = min(needs, streamids.parse(summary["min"]))
        consumers = await redis.xinfo_consumers(stream, group)
        idle_ms = min((int(c["idle"]) for c in consumers), default=1 << 62)
        lagging = pending > 0 or delivered < last
        dead = lagging and idle_ms > dead_after_ms and now_ms - needs[0] > dead_after_ms
        states.append(GroupState(group, needs, lagging, idle_ms, dead))
    return states


async def _audit_dead_letters(redis: aioredis.Redis, p: int, stream: str) -> StreamId | None:
    lowest: StreamId | None = None
    letters: Any = await redis.xrange(keys.dead_letters(p))
    for _, fields in letters:
        if text(fields.get(b"group", b"")) != keys.GROUP_AUDIT:
            continue
        if text(fields.get(b"stream", b"")) != stream:
            continue
        entry = streamids.parse(text(fields[b"entry"]))
        lowest = entry if lowest is None else min(lowest, entry)
    return lowest


async def trim_partition(
    redis: aioredis.Redis,
    settings: Settings,
    p: int,
    *,
    now_ms: int | None = None,
    dry_run: bool = False,
) -> TrimReport:
    stream = keys.events(p)
    report = TrimReport(p, stream)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError:  # no such stream yet
        return report
    report.length = int(info["length"])
    last = streamids.parse(text(info["last-generated-id"]))
    first_entry = info.get("first-entry")
    if not first_entry:
        return report
    first = streamids.parse(text(first_entry[0]))
    dead_after_ms = settings.group_dead_after_s * 1000
    bounds: dict[str, StreamId] = {}
    for state in await _group_states(redis, stream, last, now_ms, dead_after_ms):
        if state.dead:
            report.dead_groups.append(state.group)
        if state.dead and state.group != keys.GROUP_AUDIT:
            continue
        bounds[f"group {state.group}"] = state.needs
    head = await redis.hget(keys.archive_head(p), "entry")
    bounds["archive"] = streamids.after(streamids.parse(text(head))) if head else (0, 1)
    dead_letter = await _audit_dead_letters(redis, p, stream)
    if dead_letter is not None:
        bounds["audit dead letter"] = dead_letter
    bounds["retention"] = (max(0, now_ms - settings.stream_retention_s * 1000), 0)
    report.bounds = {name: streamids.format_id(value) for name, value in bounds.items()}
    minid = min(bounds.values())
    report.minid = streamids.format_id(minid)
    await _report_dead(redis, stream, report.dead_groups, dry_run)
    if minid <= first:
        return report
    if dry_run:
        report.trimmed = await _count_below(redis, stream, report.minid)
        return report
    report.trimmed = int(await redis.xtrim(stream, minid=report.minid, approximate=False))
    report.length -= report.trimmed
    remaining: Any = await redis.xrange(stream, count=1)
    if remaining:
        oldest_ms = streamids.parse(text(remaining[0][0]))[0]
        cutoff = lowest_id_at(max(0, oldest_ms - ARCHIVED_IDS_MARGIN_MS))
        await redis.zremrangebylex(keys.archived(p), "-", f"({cutoff}")
    if report.trimmed:
        log.info("event log trimmed", stream=stream, below=report.minid, entries=report.trimmed)
    return report


async def _count_below(redis: aioredis.Redis, stream: str, minid: str) -> int:
    counted, start = 0, "-"
    while True:
        page: Any = await redis.xrange(stream, start, f"({minid}", count=10_000)
        counted += len(page)
        if len(page) < 10_000:
            return counted
        start = "(" + text(page[-1][0])


async def _report_dead(redis: aioredis.Redis, stream: str, dead: list[str], dry_run: bool) -> None:
    if dry_run:
        return
    known: dict[Any, Any] = await redis.hgetall(keys.DEAD_GROUPS)
    ours = {text(k) for k in known if text(k).startswith(stream + "|")}
    now_dead = {f"{stream}|{group}" for group in dead}
    async with redis.pipeline(transaction=False) as pipe:
        for name in ours - now_dead:
            pipe.hdel(keys.DEAD_GROUPS, name)
        for name in now_dead:
            pipe.hsetnx(keys.DEAD_GROUPS, name, json.dumps({"since_ms": int(time.time() * 1000)}))
        await pipe.execute()
    for group in dead:
        log.error(
            "consumer group is dead: it lags and none of its consumers has read for longer than "
            "MUSTER_GROUP_DEAD_AFTER; trimming no longer waits for it"
            + (" (the audit group still holds trimming back)" if group == keys.GROUP_AUDIT else ""),
            stream=stream,
            group=group,
        )


async def trim(
    redis: aioredis.Redis, settings: Settings, *, dry_run: bool = False
) -> list[TrimReport]:
    return [
        await trim_partition(redis, settings, p, dry_run=dry_run)
        for p in range(settings.partitions)
    ]


async def trim_forever(redis: aioredis.Redis, settings: Settings, stop: asyncio.Event) -> None:
    """The audit worker's periodic trim; errors are logged and the next round tries again."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=TRIM_INTERVAL_S)
            return
        try:
            await trim(redis, settings)
        except (RedisError, OSError) as exc:
            log.warning("trimming failed; will try again", error=str(exc))
