"""Trimming never removes an event that a consumer group or the archive lacks.

The stream, its groups and the archive's record are set up exactly (entries at chosen ids,
groups read and acknowledged up to chosen points), then trimmed with `trim_partition`, and
every entry some group or the archive still needs must be there afterwards. Ages are
relative to a `now` passed in; consumer idleness is real time (Redis keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from audit.conftest import OpenSystem
from muster import keys
from muster.api.metrics import read_system
from muster.connection import text
from muster.ids import lowest_id_at
from muster.ops.commands import run_trim
from muster.settings import Settings
from muster.trim import trim_partition

pytestmark = pytest.mark.anyio

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
NOW_MS = 1_800_000_000_000
STREAM = keys.events(0)


async def fill(redis: aioredis.Redis, count: int, start_ms: int) -> list[str]:
    ids = [f"{start_ms + i}-0" for i in range(count)]
    async with redis.pipeline(transaction=False) as pipe:
        for entry in ids:
            pipe.xadd(STREAM, {"e": b"{}"}, id=entry)
        await pipe.execute()
    return ids


async def consume(
    redis: aioredis.Redis, group: str, *, read: int, ack: int, consumer: str = "c1"
) -> None:
    """`group` reads the first `read` entries and acknowledges the first `ack` of them."""
    groups: Any = await redis.xinfo_groups(STREAM)
    if group not in {text(g["name"]) for g in groups}:
        await redis.xgroup_create(STREAM, group, id="0")
    if read:
        reply: Any = await redis.xreadgroup(group, consumer, {STREAM: ">"}, count=read)
        ids = [text(i) for i, _ in reply[0][1]]
        if ack:
            await redis.xack(STREAM, group, *ids[:ack])


async def archived_up_to(redis: aioredis.Redis, entry: str) -> None:
    await redis.hset(keys.archive_head(0), mapping={"n": 1, "hash": "0" * 64, "entry": entry})


async def remaining(redis: aioredis.Redis) -> list[str]:
    entries: Any = await redis.xrange(STREAM)
    return [text(i) for i, _ in entries]


async def test_trims_only_below_every_group_and_the_archive(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    ids = await fill(aredis, 100, NOW_MS - 30 * DAY_MS)  # all past the 7-day retention
    await consume(aredis, keys.GROUP_TIMELINE, read=60, ack=40)  # 41st..60th pending
    await consume(aredis, keys.GROUP_AUDIT, read=80, ack=80)
    await archived_up_to(aredis, ids[79])
    report = await trim_partition(aredis, settings, 0, now_ms=NOW_MS)
    assert report.minid == ids[40]  # the timeline group's oldest pending entry
    assert report.bounds["group timeline"] == ids[40]
    assert report.trimmed == 40
    assert await remaining(aredis) == ids[40:]
    # Once the timeline group catches up, the audit group and the archive hold it back.
    await consume(aredis, keys.GROUP_TIMELINE, read=40, ack=0)
    pending: Any = await aredis.xpending_range(STREAM, keys.GROUP_TIMELINE, "-", "+", 100)
    await aredis.xack(STREAM, keys.GROUP_TIMELINE, *[p["message_id"] for p in pending])
    await archived_up_to(aredis, ids[69])  # the archive is behind what audit acknowledged
    report = await trim_partition(aredis, settings, 0, now_ms=NOW_MS)
    assert report.minid == f"{NOW_MS - 30 * DAY_MS + 69}-1"  # just after the archive's last
    assert await remaining(aredis) == ids[70:]


async def test_nothing_is_trimmed_before_the_archive_holds_anything(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    ids = await fill(aredis, 10, NOW_MS - 30 * DAY_MS)
    for group in keys.EVENT_LOG_GROUPS:
        await consume(aredis, group, read=10, ack=10)
    report = await trim_partition(aredis, settings, 0, now_ms=NOW_MS)
    assert report.trimmed == 0
    assert await remaining(aredis) == ids


async def test_retention_keeps_recent_entries_even_when_everyone_has_them(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    old = await fill(aredis, 5, NOW_MS - 8 * DAY_MS)
    new = await fill(aredis, 5, NOW_MS - 6 * DAY_MS)
    for group in keys.EVENT_LOG_GROUPS:
        await consume(aredis, group, read=10, ack=10)
    await archived_up_to(aredis, new[-1])
    report = await trim_partition(aredis, settings, 0, now_ms=NOW_MS)
    assert report.trimmed == len(old)
    assert await remaining(aredis) == new
    everything = msgspec.structs.replace(settings, stream_retention_s=0)
    report = await trim_partition(aredis, everything, 0, now_ms=NOW_MS)
    assert report.trimmed == len(new)
    assert await remaining(aredis) == []


async def test_an_audit_dead_letter_is_never_trimmed_from_the_log(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    ids = await fill(aredis, 20, NOW_MS - 30 * DAY_MS)
    for group in keys.EVENT_LOG_GROUPS:
        await consume(aredis, group, read=20, ack=20)
    await archived_up_to(aredis, ids[-1])
    await aredis.xadd(
        keys.dead_letters(0),
        {
            "stream": STREAM,
            "group": keys.GROUP_AUDIT,
            "entry": ids[7],
            "error": "x",
            "attempts": "5",
        },
    )
    await aredis.xadd(  # another group's dead letter does not hold the log: its copy is here
        keys.dead_letters(0),
        {
            "stream": STREAM,
            "group": keys.GROUP_TIMELINE,
            "entry": ids[2],
            "error": "x",
            "attempts": "5",
        },
    )
    report = await trim_partition(aredis, settings, 0, now_ms=NOW_MS)
    assert report.minid == ids[7]
    assert await remaining(aredis) == ids[7:]


async def test_a_dead_group_stops_holding_trimming_and_is_reported(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    quick = msgspec.structs.replace(settings, group_dead_after_s=1)
    ids = await fill(aredis, 50, NOW_MS - 30 * DAY_MS)
    for group in keys.EVENT_LOG_GROUPS:
        await consume(aredis, group, read=50, ack=50)
    await archived_up_to(aredis, ids[-1])
    await consume(aredis, "reports", read=10, ack=5)  # a group that read a little, then died
    await asyncio.sleep(1.2)  # its consumer has now been silent past MUSTER_GROUP_DEAD_AFTER
    live = await trim_partition(aredis, settings, 0, now_ms=NOW_MS)  # a day's patience: waits
    assert live.minid == ids[5]
    assert live.dead_groups == []
    report = await trim_partition(aredis, quick, 0, now_ms=NOW_MS)
    assert report.dead_groups == ["reports"]
    assert "group reports" not in report.bounds
    assert await remaining(aredis) == []
    dead = await aredis.hgetall(keys.DEAD_GROUPS)
    assert list(dead) == [f"{STREAM}|reports".encode()]
    (dead_groups,) = [m for m in await read_system(aredis, 1) if m.name == "muster_dead_groups"]
    assert [(s.labels, s.value) for s in dead_groups.samples] == [
        ({"stream": STREAM, "group": "reports"}, 1)
    ]


async def test_a_dead_audit_group_still_holds_trimming_back(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    quick = msgspec.structs.replace(settings, group_dead_after_s=1)
    ids = await fill(aredis, 30, NOW_MS - 30 * DAY_MS)
    await consume(aredis, keys.GROUP_TIMELINE, read=30, ack=30)
    await consume(aredis, keys.GROUP_AUDIT, read=20, ack=10)  # 11th..20th read, not archived
    await archived_up_to(aredis, ids[9])
    await asyncio.sleep(1.2)
    report = await trim_partition(aredis, quick, 0, now_ms=NOW_MS)
    assert report.dead_groups == [keys.GROUP_AUDIT]  # reported...
    assert report.bounds["group audit"] == ids[10]  # ...and still waited for
    assert await remaining(aredis) == ids[10:]


async def test_with_the_real_workers_only_archived_and_handled_events_go(
    audit_settings: Settings, open_system: OpenSystem, aredis: aioredis.Redis
) -> None:
    settings = msgspec.structs.replace(audit_settings, stream_retention_s=0)
    async with open_system(settings) as s:
        pat = await s.person("pat")
        for i in range(10):
            await s.post(pat, f"archived {i}")
        await s.settle()
        handled = await remaining(aredis)
    async with open_system(settings, workers=("timeline",)) as s:  # the audit worker is down
        for i in range(5):
            await s.post(pat, f"not archived yet {i}")
        await s.settle()
        report = await trim_partition(aredis, settings, 0)
        left = await remaining(aredis)
    assert report.trimmed == len(handled)  # everything archived went, nothing else
    assert len(left) == 5
    assert set(left).isdisjoint(handled)
    # The audit worker comes back and archives them; then they may go too.
    async with open_system(settings) as s:
        await s.settle()
        report = await trim_partition(aredis, settings, 0)
    assert report.trimmed == 5
    assert await remaining(aredis) == []


async def test_archived_ids_are_forgotten_with_the_log(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    start = NOW_MS - 30 * DAY_MS
    ids = await fill(aredis, 10, start)
    for group in keys.EVENT_LOG_GROUPS:
        await consume(aredis, group, read=10, ack=10)
    await archived_up_to(aredis, ids[-1])
    old = [str(lowest_id_at(start - 2 * HOUR_MS + i)) for i in range(5)]  # long gone from the log
    recent = [str(lowest_id_at(start + 5 + i)) for i in range(5)]  # still deliverable again
    await aredis.zadd(keys.archived(0), dict.fromkeys(old + recent, 0))
    everything_but_the_last = msgspec.structs.replace(settings, stream_retention_s=0)
    await archived_up_to(aredis, ids[8])
    await trim_partition(aredis, everything_but_the_last, 0, now_ms=NOW_MS)
    assert await remaining(aredis) == ids[9:]
    kept = sorted(text(i) for i in await aredis.zrange(keys.archived(0), 0, -1))
    assert kept == sorted(recent)


async def test_trim_command_reports_what_holds_it(
    settings: Settings,
    aredis: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = await fill(aredis, 10, int(time.time() * 1000) - 30 * DAY_MS)
    await consume(aredis, keys.GROUP_TIMELINE, read=10, ack=4)
    await consume(aredis, keys.GROUP_AUDIT, read=10, ack=10)
    await archived_up_to(aredis, ids[-1])
    assert await asyncio.to_thread(run_trim, argparse.Namespace(dry_run=True), settings) == 0
    out = capsys.readouterr().out
    assert f"{STREAM}: would trim 4 entries below {ids[4]}" in out
    assert f"group timeline {ids[4]}" in out
    assert await remaining(aredis) == ids
    assert await asyncio.to_thread(run_trim, argparse.Namespace(dry_run=False), settings) == 0
    assert await remaining(aredis) == ids[4:]
