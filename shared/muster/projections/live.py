"""Announcing to the api's live hub (SSE): one LIVE entry per post, DM and follow change.

A post is announced after its fan-out, so a client that reacts by reading its home timeline
finds it there. A marker (keys.live_seen) makes the announcement happen once even when the
event is handled twice; the stream is capped at MUSTER_LIVE_RETENTION entries.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from muster import keys, scripts


class Live:
    def __init__(self, redis: aioredis.Redis, *, retention: int) -> None:
        self.retention = retention
        self._script = scripts.register(redis, "live_announce")

    async def announce(
        self, event_id: str, fields: dict[str, str | bytes], *, pipe: Any = None
    ) -> bool:
        """Append `fields` to LIVE unless event_id was announced already. On a `pipe`, the
        call is only queued (and the answer is not known: False)."""
        flat: list[str | bytes] = []
        for name, value in fields.items():
            flat += [name, value]
        added = await self._script(
            keys=[keys.live_seen(event_id), keys.LIVE],
            args=[keys.LIVE_SEEN_TTL_S, self.retention, *flat],
            client=pipe,
        )
        return pipe is None and bool(added)
