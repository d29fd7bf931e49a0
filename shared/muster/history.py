"""Reading the history back in order, for replay: from the event log or from the archive.

Both sources yield batches of `Item`s in entry-id order, merging partitions (an account's
events live in one partition, so its order is kept; across partitions, projections converge
whatever the order). An event id seen already is skipped, so a record the archive holds
twice, or a re-driven copy of an event, is applied once.

- The event log is read with XRANGE in chunks until the end is reached — the end as it is
  then, so events appended while a replay runs are read too.
- The archive is read partition by partition, segment by segment. Several audit processes
  can interleave a partition's batches slightly out of entry order; a reorder buffer of
  REORDER_WINDOW records puts them back in order.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from muster import archive, events, keys, streamids
from muster.connection import text
from muster.errors import EventDecodeError
from muster.events import AnyEvent
from muster.streamids import StreamId

READ_CHUNK = 10_000
"""Entries per XRANGE."""
REORDER_WINDOW = 100_000
"""Archive records held back to restore entry order."""
SEEN_WINDOW = 2_000_000
"""Event ids remembered to skip repeats (a repeat further apart than this is applied twice,
which changes nothing: every projection write is idempotent)."""
SINCE_MARGIN_MS = 60_000
"""How far before `since` the log is read: entry ids come from Redis's clock, event ids from
the api's, so an event at `since` may sit in an entry a little earlier."""


@dataclass(frozen=True, slots=True)
class Item:
    event: AnyEvent
    payload: bytes  # the event as stored
    stream: str  # where it was read from (for the archive: where the audit worker read it)
    entry: StreamId


class _Seen:
    def __init__(self, size: int) -> None:
        self.size = size
        self.ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        if event_id in self.ids:
            return False
        self.ids[event_id] = None
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)
        return True


def _since_id(since: int | None) -> int:
    return since if since is not None else 0


async def _stream_chunks(
    redis: aioredis.Redis, stream: str, start: str
) -> AsyncIterator[list[tuple[StreamId, bytes]]]:
    while True:
        page: Any = await redis.xrange(stream, start, "+", count=READ_CHUNK)
        if not page:
            return
        chunk = []
        for raw_id, fields in page:
            payload = fields.get(events.STREAM_FIELD)
            if payload is not None:
                chunk.append((streamids.parse(raw_id), payload))
        yield chunk
        # Read on until a read finds nothing: entries appended meanwhile are replayed too.
        start = "(" + text(page[-1][0])


async def from_log(
    redis: aioredis.Redis, partitions: int, *, since: int | None, batch: int
) -> AsyncIterator[list[Item]]:
    """Every event of the event log (with id >= since), merged by entry id, in batches."""
    start = "-"
    if since is not None:
        start = f"{max(0, (since >> 16) - SINCE_MARGIN_MS)}-0"
    low = _since_id(since)
    seen = _Seen(SEEN_WINDOW)
    streams = [keys.events(p) for p in range(partitions)]
    readers = [_stream_chunks(redis, stream, start) for stream in streams]
    buffers: list[list[tuple[StreamId, bytes]]] = [[] for _ in readers]
    positions = [0] * len(readers)
    alive = [True] * len(readers)

    async def advance(i: int) -> None:
        """Refill reader i once its chunk is used up, until a read finds nothing."""
        while positions[i] >= len(buffers[i]) and alive[i]:
            try:
                buffers[i] = await anext(readers[i])
            except StopAsyncIteration:
                buffers[i], alive[i] = [], False
            positions[i] = 0

    # The merge: a heap of each reader's next entry id (ties to the lower partition), so
    # each event costs O(log partitions), not a look at every partition.
    heads: list[tuple[StreamId, int]] = []
    for i in range(len(readers)):
        await advance(i)
        if buffers[i]:
            heads.append((buffers[i][0][0], i))
    heapq.heapify(heads)
    out: list[Item] = []
    while heads:
        best = heads[0][1]
        entry, payload = buffers[best][positions[best]]
        positions[best] += 1
        if positions[best] >= len(buffers[best]):
            await advance(best)
        if positions[best] < len(buffers[best]):
            heapq.heapreplace(heads, (buffers[best][positions[best]][0], best))
        else:
            heapq.heappop(heads)
        try:
            event = events.decode(payload)
        except EventDecodeError:
            continue  # dead-lettered by every group already; nothing can apply it
        if int(event.id) < low or not seen.first_time(event.id):
            continue
        out.append(Item(event, payload, streams[best], entry))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def _archive_records(
    root: Path, partition: int
) -> Iterator[tuple[StreamId, int, int, archive.Record]]:
    """One partition's records in entry order (within REORDER_WINDOW)."""
    heap: list[tuple[StreamId, int, int, archive.Record]] = []
    for record in archive.read_partition(root, partition):
        heapq.heappush(heap, (streamids.parse(record.entry), partition, record.n, record))
        if len(heap) > REORDER_WINDOW:
            yield heapq.heappop(heap)
    while heap:
        yield heapq.heappop(heap)


def from_archive(root: Path, *, since: int | None, batch: int) -> Iterator[list[Item]]:
    """Every archived event (with id >= since), merged by entry id, in batches."""
    low = _since_id(since)
    seen = _Seen(SEEN_WINDOW)
    merged = heapq.merge(*(_archive_records(root, p) for p in archive.partitions_in(root)))
    out: list[Item] = []
    for entry, _, _, record in merged:
        payload = bytes(record.event)
        event = events.decode(payload)
        if int(event.id) < low or not seen.first_time(event.id):
            continue
        out.append(Item(event, payload, record.stream, entry))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out
