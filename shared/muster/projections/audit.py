"""The audit projection: every event, queryable by time range, account and type.

Per event, in the event's own partition p (so one event's keys share one slot):
HSET keys.audit_events(p) id payload; ZADD keys.audit_index(p), keys.audit_by_type(p, type)
and keys.audit_by_account(p, h) for every handle the event names — all with score 0 and the
event id as member, so text order is time order. The api's /v1/audit merges partitions.

A batch is written by one script call per partition (no round trip per event), which is what
lets replay rebuild the index at tens of thousands of events a second. Writing an event
twice changes nothing. Payloads are stored as they are; secrets are redacted on the way out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from muster import eventlog, events, keys, scripts
from muster.events import AnyEvent

FAMILIES = (
    keys.Family(
        "audit",
        (
            keys.audit_index,
            lambda p: keys.audit_by_account(p, keys.ANY),
            lambda p: keys.audit_by_type(p, keys.ANY),
            keys.audit_events,
        ),
    ),
)
"""The audit index (never the archive: it is the source, not a copy)."""

# Fields through which an event names an account (actor, subject, audience).
HANDLE_FIELDS = (
    "actor",
    "handle",
    "account",
    "follower",
    "poster",
    "author",
    "as_account",
    "recipient",
)

_encode = msgspec.msgpack.Encoder().encode


def handles_of(event: AnyEvent) -> list[str]:
    """Every account the event names, once each."""
    found: list[str] = []
    for name in HANDLE_FIELDS:
        value = getattr(event, name, None)
        if isinstance(value, str) and value not in found:
            found.append(value)
    return found


class AuditIndex:
    """Writes the audit projection; `queue` adds one event to a batch, `write` sends it."""

    def __init__(self, redis: aioredis.Redis, *, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._script = scripts.register(redis, "audit_index")

    def args_for(self, batch: dict[int, list[Any]], event: AnyEvent, payload: bytes) -> None:
        p = eventlog.partition_for(event, self.partitions)
        args = batch.get(p)
        if args is None:
            args = batch[p] = []
        names = handles_of(event)
        # Payloads go as text: JSON is UTF-8, and Redis's cmsgpack reads no binary.
        args += [event.id, (payload or events.encode(event)).decode(), len(names) + 1]
        args.append(keys.audit_by_type(p, events.event_type(event)))
        args += [keys.audit_by_account(p, h) for h in names]

    async def queue(self, pipe: Any, items: Iterable[tuple[AnyEvent, bytes]]) -> int:
        """Queue the index writes of `items` (event, stored payload) on `pipe`; calls queued."""
        batch: dict[int, list[Any]] = {}
        for event, payload in items:
            self.args_for(batch, event, payload)
        for p, args in batch.items():
            await self._script(
                keys=[keys.audit_events(p)], args=[keys.audit_index(p), _encode(args)], client=pipe
            )
        return len(batch)

    async def write(self, items: Sequence[tuple[AnyEvent, bytes]]) -> None:
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            await self.queue(pipe, items)
            await pipe.execute()
