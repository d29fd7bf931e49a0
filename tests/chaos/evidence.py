"""What a settled chaos run left behind, read once for the checks: the event log, the archive,
the audit log, follows (write side and projection), homes, delivery statuses, arrivals.

Reads go through the API where the API offers them (follows, homes, audit export) and
straight to Redis or disk where the checks need the stored thing itself (the event log, the
home sorted sets, delivery statuses, the archive's segment files).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from chaos.client import Api
from chaos.ledger import Cast
from chaos.model import FollowState
from chaos.processes import ADMIN_TOKEN
from chaos.receivers import Arrival, Receivers
from muster import events, keys
from muster.connection import text

DELIVERY_ID = re.compile(r"(\d+)\.([a-z0-9_]+)\.(email|sms|webhook)")


@dataclass
class Evidence:
    log_events: dict[str, events.Event] = field(default_factory=dict)  # event id → event
    log_repeats: Counter[str] = field(default_factory=Counter)  # event ids seen twice in the log
    archive_ids: Counter[str] = field(default_factory=Counter)
    audit_ids: Counter[str] = field(default_factory=Counter)
    follows: dict[str, dict[str, FollowState]] = field(default_factory=dict)  # write side
    graph: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    homes: dict[str, list[str]] = field(default_factory=dict)  # Redis, as stored
    home_reads: dict[str, list[str]] = field(default_factory=dict)  # GET /v1/timelines/home
    statuses: dict[str, str] = field(default_factory=dict)  # delivery id → stored status
    arrivals: list[Arrival] = field(default_factory=list)

    def posts(self) -> dict[str, events.PostPublished]:
        return {i: e for i, e in self.log_events.items() if isinstance(e, events.PostPublished)}

    def dms(self) -> dict[str, events.DirectMessageSent]:
        return {i: e for i, e in self.log_events.items() if isinstance(e, events.DirectMessageSent)}


async def gather(
    api: Api,
    redis: aioredis.Redis,
    cast: Cast,
    receivers: Receivers,
    partitions: int,
    archive: Path,
) -> Evidence:
    found = Evidence()
    await _event_log(found, redis, partitions)
    _archive(found, archive)
    export = await api.ok("GET", "/v1/audit/export", token=ADMIN_TOKEN)
    for line in str(export).splitlines():
        if line.strip():
            found.audit_ids[json.loads(line)["id"]] += 1
    await _follows(found, api, cast)
    await _graph(found, redis, cast, partitions)
    await _homes(found, api, redis, cast, partitions)
    await _statuses(found, redis, partitions)
    found.arrivals = receivers.arrivals()
    return found


async def _event_log(found: Evidence, redis: aioredis.Redis, partitions: int) -> None:
    for p in range(partitions):
        for stream in (keys.events(p), *(keys.retry(p, g) for g in keys.EVENT_LOG_GROUPS)):
            entries: Any = await redis.xrange(stream)
            for _, fields in entries or []:
                event = events.decode(fields[events.STREAM_FIELD])
                if event.id in found.log_events and stream == keys.events(p):
                    found.log_repeats[event.id] += 1
                found.log_events[event.id] = event


def _archive(found: Evidence, root: Path) -> None:
    for segment in sorted(root.glob("p*/segment-*.jsonl")):
        for line in segment.read_bytes().splitlines():
            if line.strip():
                found.archive_ids[json.loads(line)["event"]["id"]] += 1


async def _follows(found: Evidence, api: Api, cast: Cast) -> None:
    for person in cast.people:
        rows = await api.ok("GET", "/v1/me/follows", token=person.token)
        found.follows[person.handle] = {
            row["account"]: FollowState(frozenset(row["channels"]), bool(row["mandatory"]))
            for row in rows
        }


async def _graph(found: Evidence, redis: aioredis.Redis, cast: Cast, partitions: int) -> None:
    """(follower, account) → (channels csv, external) as the timeline worker projected it."""
    for account in cast.accounts:
        for q in range(partitions):
            for key, external in (
                (keys.followers(q, account), False),
                (keys.external_followers(q, account), True),
            ):
                rows: Any = await redis.hgetall(key)
                for follower, channels in rows.items():
                    found.graph[(text(follower), account)] = (text(channels), external)


async def _homes(
    found: Evidence, api: Api, redis: aioredis.Redis, cast: Cast, partitions: int
) -> None:
    for person in cast.people:
        key = keys.home(keys.partition_of(person.handle, partitions), person.handle)
        members: Any = await redis.zrange(key, 0, -1)
        found.homes[person.handle] = [keys.home_member(text(m)) for m in members]
        items = await api.pages("/v1/timelines/home", token=person.token)
        found.home_reads[person.handle] = [item["id"] for item in items]


async def _statuses(found: Evidence, redis: aioredis.Redis, partitions: int) -> None:
    for p in range(partitions):
        async for raw in redis.scan_iter(match=keys.delivery_status(p, "*"), count=500):
            key = text(raw)
            message_id = key.rsplit(":", 1)[1]
            rows: Any = await redis.hgetall(key)
            for name, value in rows.items():
                recipient, channel = text(name).split(":")
                found.statuses[f"{message_id}.{recipient}.{channel}"] = text(value)
