"""Reading the audit projection for GET /v1/audit and its export.

The audit worker keeps, per partition, sorted sets of event ids (all scores 0, so text order
is id order, which is time order): every event, by type, by account named; and a hash of the
stored events. A query picks the narrowest set (account, else type, else all), reads each
partition's next ids after the cursor within [since, until), merges them by id and fetches
the events. Secrets (token hashes, webhook secrets) never leave: they read "[redacted]".
A DM's text is between its two parties: only an auditor's read shows it (and is itself
recorded, events.AuditRead); to anyone else it reads "[withheld]".
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis

from muster import keys
from muster.connection import text
from muster.ids import lowest_id_at

REDACTED = "[redacted]"
WITHHELD = "[withheld]"
_DM = b'{"type":"DirectMessageSent"'
SECRET_FIELDS = ("token_hash", "webhook_secret", "confirm_hash")
_SECRET_MARKERS = tuple(f'"{name}":"'.encode() for name in SECRET_FIELDS)
_ID_LOW, _ID_HIGH = 10**17, 10**18  # ids are 18 digits (ms << 16) until the 25th century
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    account: str | None = None
    type: str | None = None
    after: str | None = None  # an event id: only events after it


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _bounds(query: AuditQuery) -> tuple[str, str] | None:
    """ZRANGE BYLEX bounds of the query, or None when nothing can match."""
    low, low_text = _ID_LOW, "-"
    if query.since is not None:
        since = lowest_id_at(_ms(query.since))
        if since >= _ID_HIGH:
            return None
        if since > low:
            low, low_text = since, f"[{since}"
    if query.after is not None:
        after = int(query.after)
        if after >= _ID_HIGH:
            return None
        if after >= low:
            low, low_text = after, f"({after}"
    high_text = "+"
    if query.until is not None:
        until = lowest_id_at(_ms(query.until))
        if until <= max(low, _ID_LOW):
            return None
        if until < _ID_HIGH:
            high_text = f"({until}"
    return low_text, high_text


def redact(payload: bytes, *, dm_text: bool = False) -> bytes:
    """The event as stored, with any token hash or webhook secret replaced by "[redacted]",
    and a DM's text by "[withheld]" unless `dm_text` (an auditor's read)."""
    withhold = not dm_text and payload.startswith(_DM)
    if not withhold and not any(marker in payload for marker in _SECRET_MARKERS):
        return payload
    data: dict[str, Any] = msgspec.json.decode(payload)
    for name in SECRET_FIELDS:
        if data.get(name) is not None:
            data[name] = REDACTED
    if withhold:
        data["text"] = WITHHELD
    return msgspec.json.encode(data)


class AuditLog:
    def __init__(self, redis: aioredis.Redis, partitions: int, *, dm_text: bool = False) -> None:
        self.redis = redis
        self.partitions = partitions
        self.dm_text = dm_text

    def _source(self, p: int, query: AuditQuery) -> str:
        if query.account is not None:
            return keys.audit_by_account(p, query.account)
        if query.type is not None:
            return keys.audit_by_type(p, query.type)
        return keys.audit_index(p)

    async def _ids(self, p: int, query: AuditQuery, limit: int) -> list[str]:
        """Up to `limit` matching ids of partition p, in order."""
        bounds = _bounds(query)
        if bounds is None:
            return []
        low, high = bounds
        source = self._source(p, query)
        filter_type = query.account is not None and query.type is not None
        found: list[str] = []
        while len(found) < limit:
            want = limit - len(found) if not filter_type else max(limit, 100)
            page = [
                text(i)
                for i in await self.redis.zrange(source, low, high, bylex=True, offset=0, num=want)
            ]
            if not page:
                break
            if filter_type:
                assert query.type is not None
                scores = await self.redis.zmscore(keys.audit_by_type(p, query.type), page)
                found += [i for i, score in zip(page, scores, strict=True) if score is not None]
            else:
                found += page
            if len(page) < want:
                break
            low = f"({page[-1]}"
        return found[:limit]

    async def _chosen(self, query: AuditQuery, limit: int) -> list[tuple[str, int]]:
        per_partition = [await self._ids(p, query, limit) for p in range(self.partitions)]
        merged = heapq.merge(
            *([(int(i), i, p) for i in ids] for p, ids in enumerate(per_partition))
        )
        return [(i, p) for _, i, p in list(merged)[:limit]]

    async def _fetch(self, chosen: list[tuple[str, int]]) -> list[tuple[str, bytes]]:
        if not chosen:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for i, p in chosen:
                pipe.hget(keys.audit_events(p), i)
            payloads = await pipe.execute()
        return [
            (i, redact(payload, dm_text=self.dm_text))
            for (i, _), payload in zip(chosen, payloads, strict=True)
            if payload is not None
        ]

    async def page(self, query: AuditQuery, limit: int) -> list[tuple[str, bytes]]:
        """The first `limit` matching events across partitions, in id order: (id, payload)."""
        return await self._fetch(await self._chosen(query, limit))

    async def export(self, query: AuditQuery) -> AsyncIterator[bytes]:
        """Every matching event, one JSON line each, page by page."""
        cursor = query
        while True:
            chosen = await self._chosen(cursor, _PAGE)
            for _, payload in await self._fetch(chosen):
                yield payload + b"\n"
            if len(chosen) < _PAGE:
                return
            cursor = dataclasses.replace(query, after=chosen[-1][0])
