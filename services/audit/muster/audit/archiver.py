"""Archiving a batch of stream entries exactly once, and telling Redis how far the archive goes.

Under the partition's archive lock (an asyncio lock for this process's tasks, then flock for
other processes) the archiver reads the chain's tail from disk, skips entries whose event is
already archived (keys.archived), appends and fsyncs the rest, and then records the new tail
(keys.archive_head) and the archived ids — all before the handler returns, so before the ack.

A process that died after the fsync but before that record left records on disk that Redis
does not know: the next writer sees the disk's `n` ahead of Redis's and records them first,
so an entry reclaimed after such a crash is still not archived twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog

from muster import eventlog, events, keys, streamids
from muster.archive import Entry, PartitionArchive, Tail
from muster.consumer import Message
from muster.events import AnyEvent
from muster.settings import Settings

log = structlog.get_logger("muster.archive")


class Archiver:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.partitions = settings.partitions
        self.root = settings.archive_dir
        self.segment_bytes = settings.archive_segment_bytes
        self._archives: dict[int, PartitionArchive] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def archive_of(self, partition: int) -> PartitionArchive:
        found = self._archives.get(partition)
        if found is None:
            found = self._archives[partition] = PartitionArchive(
                self.root, partition, segment_bytes=self.segment_bytes
            )
            self._locks[partition] = asyncio.Lock()
        return found

    async def archive(self, messages: Sequence[Message[AnyEvent]]) -> int:
        """Archive every message not archived yet; how many records were appended."""
        by_partition: dict[int, list[Message[AnyEvent]]] = {}
        for message in messages:
            p = eventlog.partition_for(message.event, self.partitions)
            by_partition.setdefault(p, []).append(message)
        appended = 0
        for p, batch in by_partition.items():
            appended += await self._archive_partition(p, batch)
        return appended

    async def _archive_partition(self, p: int, batch: list[Message[AnyEvent]]) -> int:
        archive = self.archive_of(p)
        async with self._locks[p]:
            fd = await asyncio.to_thread(archive.acquire)
            try:
                return await self._append_locked(p, archive, batch)
            finally:
                archive.release(fd)

    async def _append_locked(
        self, p: int, archive: PartitionArchive, batch: list[Message[AnyEvent]]
    ) -> int:
        tail: Tail = await asyncio.to_thread(archive.tail)
        ids = list(dict.fromkeys(m.event.id for m in batch))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.archive_head(p), "n", "entry")
            pipe.zmscore(keys.archived(p), ids)
            (raw_n, raw_entry), scores = await pipe.execute()
        recorded_n = int(raw_n) if raw_n is not None else 0
        highest = streamids.parse(raw_entry) if raw_entry is not None else streamids.ZERO
        done = {i for i, score in zip(ids, scores, strict=True) if score is not None}
        marked: list[str] = []
        stream = keys.events(p)
        if tail.n > recorded_n:
            # Records a writer fsynced but died before recording: record them now.
            for record in await asyncio.to_thread(archive.read_after, recorded_n):
                event_id = _event_id(bytes(record.event))
                marked.append(event_id)
                done.add(event_id)
                if record.stream == stream:
                    highest = max(highest, streamids.parse(record.entry))
            log.warning(
                "recorded archive records left by a crashed writer", partition=p, count=len(marked)
            )
        elif tail.n < recorded_n:
            log.error(
                "the archive ends before what Redis recorded: was it restored from an older "
                "backup? run `muster audit verify`",
                partition=p,
                archive_n=tail.n,
                recorded_n=recorded_n,
            )
        fresh: list[Message[AnyEvent]] = []
        for message in batch:
            if message.event.id not in done:
                done.add(message.event.id)
                fresh.append(message)
        entries = [Entry(m.stream, m.entry_id, m.payload or events.encode(m.event)) for m in fresh]
        new_tail, _ = await asyncio.to_thread(archive.append, tail, entries)
        for message in fresh:
            marked.append(message.event.id)
            if message.stream == stream:
                highest = max(highest, streamids.parse(message.entry_id))
        if marked or new_tail.n != recorded_n:
            mapping: dict[Any, Any] = {"n": new_tail.n, "hash": new_tail.hash}
            if highest != streamids.ZERO:
                mapping["entry"] = streamids.format_id(highest)
            async with self.redis.pipeline(transaction=False) as pipe:
                if marked:
                    pipe.zadd(keys.archived(p), dict.fromkeys(marked, 0))
                pipe.hset(keys.archive_head(p), mapping=mapping)
                await pipe.execute()
        return len(entries)


def _event_id(payload: bytes) -> str:
    return events.decode(payload).id
