"""The audit worker on a real redis-server: every event archived once, in order, and indexed.

End to end through the HTTP API with the real timeline and audit workers on the shared
consumer loop, and at the handler, where a batch handled twice (a reclaim), a writer that
died between fsync and recording, and an fsync that failed are played out directly.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from audit.conftest import OpenSystem, System, archived
from muster import archive, events, keys, streamids
from muster.archive import Entry, PartitionArchive
from muster.audit.worker import make_handler
from muster.connection import text
from muster.consumer import Message
from muster.ops.verify import verify
from muster.settings import Settings

pytestmark = pytest.mark.anyio


async def scenario(s: System) -> None:
    """A little of everything: accounts, a team, follows, posts, a reply, DMs."""
    pat = await s.person("pat", email="pat@example.com")
    mia = await s.person("mia")
    await s.person("eve", "external", webhook_url="https://hooks.example.com/eve")
    await s.team("ops", "pat")
    await s.follow(mia, "ops", channels=["app", "email"])
    first = await s.post(pat, "db failover at 14:00", as_="ops")
    await s.post(mia, "ack", in_reply_to=first["id"])
    await s.post(pat, "status page degraded", as_="ops", visibility="public", severity="critical")
    await s.dm(pat, "mia", "call me")
    await s.dm(mia, "pat", "calling")
    await s.ok("PATCH", "/v1/me", token=mia, json={"display_name": "Mia M"})


@pytest.mark.parametrize("partitions", [1, 3])
async def test_every_event_is_archived_once_in_log_order_and_indexed(
    audit_settings: Settings, open_system: OpenSystem, partitions: int
) -> None:
    settings = msgspec.structs.replace(audit_settings, partitions=partitions)
    async with open_system(settings) as s:
        await scenario(s)
        await s.settle()
        logged = await s.log_events()
        records = archived(settings.archive_dir)
        counts = Counter(events.decode(bytes(r.event)).id for r in records)
        assert set(counts) == {event.id for _, event in logged}
        assert max(counts.values()) == 1
        # Byte for byte what the stream holds, and each partition in entry order.
        # Keyed by partition: two partitions can hand out the same entry id in one millisecond.
        stored = {}
        for p in range(partitions):
            entries: Any = await s.redis.xrange(keys.events(p))
            stored.update({(p, text(i)): f[events.STREAM_FIELD] for i, f in entries})
        for p in archive.partitions_in(settings.archive_dir):
            part = list(archive.read_partition(settings.archive_dir, p))
            assert [streamids.parse(r.entry) for r in part] == sorted(
                streamids.parse(r.entry) for r in part
            )
            assert all(bytes(r.event) == stored[p, r.entry] for r in part)
            assert all(r.stream == keys.events(p) for r in part)
            head = await s.redis.hgetall(keys.archive_head(p))
            assert int(head[b"n"]) == len(part)
            assert text(head[b"hash"]) == part[-1].hash
            assert text(head[b"entry"]) == part[-1].entry
        assert all(report.intact for report in verify(settings.archive_dir))
        # The audit projection holds every event, in its own partition.
        for _, event in logged:
            p = keys.partition_of(events.partition_handle(event), partitions)
            assert await s.redis.hexists(keys.audit_events(p), event.id)
            assert await s.redis.zscore(keys.audit_index(p), event.id) == 0


async def _messages(redis: aioredis.Redis, partition: int = 0) -> list[Message[Any]]:
    entries: Any = await redis.xrange(keys.events(partition))
    return [
        Message(
            keys.events(partition),
            text(i),
            events.decode(f[events.STREAM_FIELD]),
            1,
            f[events.STREAM_FIELD],
        )
        for i, f in entries
    ]


async def test_a_batch_handled_again_is_not_archived_again(
    audit_settings: Settings, open_system: OpenSystem, aredis: aioredis.Redis
) -> None:
    async with open_system(audit_settings, workers=("timeline",)) as s:
        await scenario(s)
        await s.settle()
    messages = await _messages(aredis)
    handler = await make_handler(aredis, audit_settings)
    await handler(messages[:7])
    await handler(messages)  # a reclaim after a crash before the ack, with more behind it
    await handler(messages[3:9])  # and again, one by one retries
    records = archived(audit_settings.archive_dir)
    assert [r.entry for r in records] == [m.entry_id for m in messages]
    assert all(report.intact for report in verify(audit_settings.archive_dir))


async def test_records_a_crashed_writer_left_behind_are_not_appended_twice(
    audit_settings: Settings, open_system: OpenSystem, aredis: aioredis.Redis
) -> None:
    async with open_system(audit_settings, workers=("timeline",)) as s:
        await scenario(s)
        await s.settle()
    messages = await _messages(aredis)
    handler = await make_handler(aredis, audit_settings)
    await handler(messages[:4])
    # Another process appended and fsynced the next five, then died before telling Redis.
    part = PartitionArchive(
        audit_settings.archive_dir, 0, segment_bytes=audit_settings.archive_segment_bytes
    )
    with part.locked():
        part.append(part.tail(), [Entry(m.stream, m.entry_id, m.payload) for m in messages[4:9]])
    assert int((await aredis.hget(keys.archive_head(0), "n")) or 0) == 4
    await handler(messages[2:])  # their entries come back to the group (reclaimed)
    records = archived(audit_settings.archive_dir)
    assert [r.entry for r in records] == [m.entry_id for m in messages]
    assert int(await aredis.hget(keys.archive_head(0), "n") or 0) == len(messages)
    ids = [text(i) for i in await aredis.zrange(keys.archived(0), 0, -1)]
    assert sorted(ids) == sorted(m.event.id for m in messages)


async def test_a_failed_fsync_fails_the_batch_and_a_retry_archives_it_once(
    audit_settings: Settings,
    open_system: OpenSystem,
    aredis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_system(audit_settings, workers=("timeline",)) as s:
        await scenario(s)
        await s.settle()
    messages = await _messages(aredis)
    handler = await make_handler(aredis, audit_settings)

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("muster.archive.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        await handler(messages)  # the loop would not ack: the entries stay pending
    monkeypatch.setattr("muster.archive.os.fsync", os.fsync)
    await handler(messages)
    records = archived(audit_settings.archive_dir)
    assert [r.entry for r in records] == [m.entry_id for m in messages]
    assert all(report.intact for report in verify(audit_settings.archive_dir))


async def test_archive_segments_rotate_by_size(
    audit_settings: Settings, open_system: OpenSystem
) -> None:
    settings = msgspec.structs.replace(audit_settings, archive_segment_bytes=4096)
    async with open_system(settings) as s:
        token = await s.person("pat")
        for i in range(40):
            await s.post(token, f"update {i}: " + "x" * 100)
        await s.settle()
    files = archive.segments(archive.partition_dir(settings.archive_dir, 0))
    assert len(files) >= 3
    assert all(path.stat().st_size <= 4096 for _, path in files)
    [report] = verify(settings.archive_dir)
    assert report.intact
    assert report.records == len(archived(settings.archive_dir))
