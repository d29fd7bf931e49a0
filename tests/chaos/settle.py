"""Waiting, bounded, until a chaos run's workers have done everything they were given.

Settled means, read in one MULTI so nothing moving between two places is missed: on every
partition the timeline and audit groups have read and acknowledged the whole event log (and
their re-drive streams), the delivery group every delivery stream, and no delivery waits in a
retry set — twice in a row, a poll apart (an enrolment expands into new events; a routed post
appends delivery requests after the log looked done).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from muster import keys
from muster.connection import UNAVAILABLE, text

POLL_S = 0.1


def _groups(partitions: int) -> list[tuple[str, str]]:
    """(stream, group) of every consumer group a deployment has."""
    found = []
    for p in range(partitions):
        for group in keys.EVENT_LOG_GROUPS:
            found += [(keys.events(p), group), (keys.retry(p, group), group)]
        for channel in keys.OFFAPP_CHANNELS:
            found.append((keys.deliveries(p, channel), keys.GROUP_DELIVERY))
        found.append((keys.retry(p, keys.GROUP_DELIVERY), keys.GROUP_DELIVERY))
    return found


async def backlog(redis: aioredis.Redis, partitions: int) -> dict[str, int]:
    """What is still to do: "stream group" → unread + unacked entries, "retries" → delayed."""
    pairs = _groups(partitions)
    delayed = [keys.delivery_retries(p, c) for p in range(partitions) for c in keys.OFFAPP_CHANNELS]
    # One snapshot on one server; a cluster has no MULTI across slots (and no snapshot).
    async with redis.pipeline(transaction=not isinstance(redis, RedisCluster)) as pipe:
        for stream, _ in pairs:
            pipe.xinfo_stream(stream)
            pipe.xinfo_groups(stream)
        for key in delayed:
            pipe.zcard(key)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for reply in replies:  # a node out of reach (a cluster pipeline returns its error): later
        if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
            raise reply
    left: dict[str, int] = {}
    for i, (stream, group) in enumerate(pairs):
        info, groups = replies[2 * i], replies[2 * i + 1]
        if isinstance(info, ResponseError):
            continue  # never written: nothing to do there
        found = None if isinstance(groups, ResponseError) else _find(groups, group)
        if found is None:
            left[f"{stream} {group}"] = -1  # no group yet
            continue
        behind = int(found["pending"])
        if text(found["last-delivered-id"]) != text(info["last-generated-id"]):
            lag = found.get("lag")
            behind += int(lag) if lag is not None else 1
        if behind:
            left[f"{stream} {group}"] = behind
    waiting = sum(int(n) for n in replies[2 * len(pairs) :])
    if waiting:
        left["retries"] = waiting
    return left


def _find(groups: list[Any], name: str) -> Any:
    return next((g for g in groups if text(g["name"]) == name), None)


async def settle(
    redis: aioredis.Redis,
    partitions: int,
    *,
    within: float,
    alive: Callable[[], object] | None = None,
) -> float:
    """Seconds until nothing is left to do (twice in a row); AssertionError past `within`.
    `alive()` is called each poll (restarts a process that died, see Deployment.supervise)."""
    began = time.monotonic()
    deadline = began + within
    clean = 0
    left: dict[str, int] = {}
    while True:
        if alive is not None:
            alive()
        try:
            left = await backlog(redis, partitions)
        except UNAVAILABLE:
            left = {"redis unreachable": -1}
        clean = clean + 1 if not left else 0
        if clean >= 2:
            return time.monotonic() - began - POLL_S
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {within}s; still to do: {left}")
        await asyncio.sleep(POLL_S)
