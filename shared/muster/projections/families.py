"""Projection families: the registry of which Redis keys each projection owns, how to drop
them, and their checksum.

A family is rebuilt by replay (muster.ops.replay): its keys are dropped (one SCAN pass, then
UNLINK) and the log is applied again. Each projection declares its own families beside the
code that writes them (keys.Family, with patterns made by the key builders, so a pattern
cannot drift from its key); no key matches two families' patterns
(tests/audit/test_projections.py):

| family                          | declared by                               |
| ------------------------------- | ----------------------------------------- |
| graph, posts, timelines, dms    | projections/timeline.py                   |
| deliveries (only --redeliver)   | projections/routing.py                    |
| audit                           | projections/audit.py                      |
| accounts (the write side)       | writeside.py                              |

Never a projection, never dropped or checksummed: the event-log streams and their groups,
dead letters, delivery streams and retries, idempotency keys, the live streams (keys.LIVE,
keys.ROLLCALL_LIVE), the archive's bookkeeping (keys.archive_head / archived), counters and
rq's keys.

`checksum` is a SHA-256 over the canonical content of every key of the chosen families:
keys sorted; strings as they are; hashes as sorted field/value pairs; sets as sorted
members; sorted sets as members sorted with their scores; lists in order. The same state
gives the same digest, whatever order it was written in.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from muster import keys, writeside
from muster.connection import scan_pages
from muster.keys import Family
from muster.projections import audit, routing, timeline

_SCAN_COUNT = 1000
_READ_BATCH = 500

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        *timeline.FAMILIES,
        *routing.FAMILIES,
        *audit.FAMILIES,
        *writeside.FAMILIES,
    )
}
"""Every family, as each projection declares its own (in the order `muster replay` lists)."""

TIMELINE_FAMILIES = ("graph", "posts", "timelines", "dms")
"""Built together, in one pass, by the timeline worker's projection."""
DEFAULT_REPLAY = (*TIMELINE_FAMILIES, "audit")
"""What `muster replay` rebuilds unless told otherwise: everything the workers project."""
ALL = tuple(FAMILIES)


def parse_families(raw: str | Sequence[str] | None) -> tuple[str, ...]:
    """`a,b` → ("a", "b") in FAMILIES order; ValueError names an unknown one."""
    if raw is None:
        return DEFAULT_REPLAY
    names = [n.strip() for n in (raw.split(",") if isinstance(raw, str) else raw) if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(
            f"unknown projection {', '.join(unknown)}; choose from {', '.join(FAMILIES)}"
        )
    if not names:
        raise ValueError("no projection named")
    return tuple(n for n in FAMILIES if n in names)


def _matcher(patterns: Iterable[str]) -> re.Pattern[bytes]:
    """One regex for Redis glob patterns (as keys.py builds them: `*` is the only wildcard
    they hold; handles and ids never contain a glob character)."""
    return re.compile(b"|".join(b"(?:" + fnmatch.translate(p).encode() + b")" for p in patterns))


async def family_keys(
    redis: aioredis.Redis, families: Iterable[str], partitions: int
) -> dict[str, list[bytes]]:
    """Every key of each family, found in one SCAN pass over the keyspace: a SCAN with MATCH
    per pattern would walk the whole keyspace once per pattern (a dozen times for a replay's
    families), and that walk was a sixth of a million-event replay."""
    matchers = {name: _matcher(FAMILIES[name].patterns(partitions)) for name in families}
    found: dict[str, list[bytes]] = {name: [] for name in matchers}
    async for page in scan_pages(redis, f"{keys.PREFIX}:*", _SCAN_COUNT):
        for key in page:
            for name, matcher in matchers.items():
                if matcher.fullmatch(key):
                    found[name].append(key)
                    break  # families are disjoint
    return found


async def drop(redis: aioredis.Redis, families: Iterable[str], partitions: int) -> int:
    """UNLINK every key of `families`; how many were dropped."""
    dropped = 0
    for names in (await family_keys(redis, families, partitions)).values():
        for start in range(0, len(names), _READ_BATCH):
            dropped += int(await redis.unlink(*names[start : start + _READ_BATCH]))
    return dropped


def _chunk(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data


def _canonical(kind: str, value: Any) -> bytes:
    if kind == "string":
        return _chunk(value)
    if kind == "hash":
        return b"".join(_chunk(k) + _chunk(v) for k, v in sorted(value.items()))
    if kind == "set":
        return b"".join(_chunk(m) for m in sorted(value))
    if kind == "zset":
        return b"".join(_chunk(m) + _chunk(repr(s).encode()) for m, s in sorted(value))
    if kind == "list":
        return b"".join(_chunk(item) for item in value)
    return _chunk(kind.encode())


async def _contents(redis: aioredis.Redis, names: Sequence[bytes]) -> list[tuple[str, Any]]:
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.type(name)
        kinds = [k.decode() for k in await pipe.execute()]
    async with redis.pipeline(transaction=False) as pipe:
        for name, kind in zip(names, kinds, strict=True):
            if kind == "string":
                pipe.get(name)
            elif kind == "hash":
                pipe.hgetall(name)
            elif kind == "set":
                pipe.smembers(name)
            elif kind == "zset":
                pipe.zrange(name, 0, -1, withscores=True)
            elif kind == "list":
                pipe.lrange(name, 0, -1)
            else:
                pipe.exists(name)
        values = await pipe.execute()
    return list(zip(kinds, values, strict=True))


@dataclass(frozen=True, slots=True)
class Checksum:
    digest: str
    families: dict[str, tuple[str, int]]  # name → (digest, keys)


async def checksum(
    redis: aioredis.Redis, partitions: int, families: Sequence[str] = ALL
) -> Checksum:
    total = hashlib.sha256()
    per_family: dict[str, tuple[str, int]] = {}
    found = await family_keys(redis, families, partitions)
    for name in families:
        digest = hashlib.sha256()
        ordered = sorted(set(found[name]))
        for start in range(0, len(ordered), _READ_BATCH):
            chunk = ordered[start : start + _READ_BATCH]
            for key, (kind, value) in zip(chunk, await _contents(redis, chunk), strict=True):
                if kind == "none":  # deleted between the scan and the read
                    continue
                digest.update(_chunk(key) + _chunk(kind.encode()) + _canonical(kind, value))
        hexdigest = digest.hexdigest()
        per_family[name] = (hexdigest, len(ordered))
        total.update(name.encode() + b"=" + hexdigest.encode() + b"\n")
    return Checksum(total.hexdigest(), per_family)
