"""Backpressure: how far the slowest consumer group is behind, refreshed in the background.

Writes consult `overloaded` (a field, not a Redis call) so the hot path pays nothing; the
monitor refreshes it every `interval` seconds from XINFO GROUPS. Past MUSTER_MAX_LAG,
non-critical writes get 429 with Retry-After; critical posts are always accepted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from muster import keys
from muster.tasks import cancel_and_wait

log = structlog.get_logger("muster.api.backpressure")


@dataclass(frozen=True, slots=True)
class GroupLag:
    stream: str
    group: str
    lag: int  # entries not yet delivered to the group
    pending: int  # delivered, not yet acknowledged


async def read_lags(redis: aioredis.Redis, streams: list[str]) -> list[GroupLag]:
    """Every group on `streams`; a missing stream has no groups (and is simply skipped)."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xinfo_groups(stream)
        replies = await pipe.execute(raise_on_error=False)
    lags: list[GroupLag] = []
    for stream, reply in zip(streams, replies, strict=True):
        if isinstance(reply, Exception):
            continue
        for group in reply:
            name = group["name"]
            lag = group.get("lag")
            lags.append(
                GroupLag(
                    stream=stream,
                    group=name.decode() if isinstance(name, bytes) else str(name),
                    # Redis reports no lag after deletions inside the range; pending still counts.
                    lag=int(lag) if lag is not None else 0,
                    pending=int(group["pending"]),
                )
            )
    return lags


def monitored_streams(partitions: int) -> list[str]:
    return [keys.events(p) for p in range(partitions)]


@dataclass
class LagMonitor:
    redis: aioredis.Redis
    partitions: int
    max_lag: int
    interval: float = 1.0
    worst: int = 0
    overloaded: bool = False
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def refresh(self) -> None:
        lags = await read_lags(self.redis, monitored_streams(self.partitions))
        self.worst = max((g.lag + g.pending for g in lags), default=0)
        was = self.overloaded
        self.overloaded = self.worst > self.max_lag
        if self.overloaded != was:
            log.warning("backpressure", on=self.overloaded, lag=self.worst, max_lag=self.max_lag)

    @property
    def retry_after(self) -> int:
        """Seconds a refused client should wait: longer the further behind we are."""
        return max(1, min(60, self.worst // max(1, self.max_lag)))

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except RedisError as exc:
                log.warning("lag refresh failed", error=str(exc))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
