"""Announcing to the api's live hubs (SSE): one LIVE entry per post, DM and follow change;
roll-call changes to ROLLCALL_LIVE.

A post is announced after its fan-out, so a client that reacts by reading its home timeline
finds it there; a roll-call change after its event, whose write-side state (the counts) was
written with it — but a help answer by the api that records it, just before (`announce_help`):
its counts are written when it is appended, long before the worker reads it, so a report read
for another change in between would count it before its `help` entry. A marker
(keys.live_seen) makes the announcement happen once even when the event is handled twice (or
announced by the api first); LIVE is capped at MUSTER_LIVE_RETENTION entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from muster import keys, scripts, views
from muster.events import (
    AnyEvent,
    RollCallAnswered,
    RollCallClosed,
    RollCallExtended,
    RollCallHelpHandled,
)
from muster.records import RollCallNews

RollCallEvent = RollCallAnswered | RollCallHelpHandled | RollCallClosed | RollCallExtended


class Live:
    def __init__(self, redis: aioredis.Redis, *, retention: int) -> None:
        self.redis = redis
        self.retention = retention
        self._script = scripts.register(redis, "live_announce")

    async def announce(
        self,
        event_id: str,
        fields: dict[str, str | bytes],
        *,
        pipe: Any = None,
        stream: str = keys.LIVE,
    ) -> bool:
        """Append `fields` to `stream` unless event_id was announced already. On a `pipe`, the
        call is only queued (and the answer is not known: False)."""
        flat: list[str | bytes] = []
        for name, value in fields.items():
            flat += [name, value]
        cap = self.retention if stream == keys.LIVE else keys.ROLLCALL_LIVE_MAX
        added = await self._script(
            keys=[keys.live_seen(event_id), stream],
            args=[keys.LIVE_SEEN_TTL_S, cap, *flat],
            client=pipe,
        )
        return pipe is None and bool(added)

    async def announce_help(self, event: RollCallAnswered) -> None:
        """A help answer about to be appended (the api's; the worker then finds it seen)."""
        await self.announce(event.id, _help(event).fields(), stream=keys.ROLLCALL_LIVE)

    async def announce_rollcalls(self, batch: Sequence[AnyEvent]) -> None:
        """The roll-call changes among `batch`: each help answer, extension and close, and
        one `changed` per roll-call for the other answers (a live report is re-read, not
        patched, so a thousand answers in one batch need one entry, not a thousand)."""
        news: list[tuple[str, RollCallNews]] = []
        changed: dict[str, str] = {}  # roll-call → its last plain change in the batch
        for event in batch:
            match event:
                case RollCallAnswered(kind="help", suspect=False):
                    news.append((event.id, _help(event)))
                case RollCallAnswered() | RollCallHelpHandled():
                    changed[event.rollcall] = event.id
                case RollCallExtended():
                    news.append((event.id, RollCallNews(rollcall=event.rollcall, kind="extended")))
                case RollCallClosed():
                    news.append((event.id, RollCallNews(rollcall=event.rollcall, kind="closed")))
        news += [(eid, RollCallNews(rollcall=rc, kind="changed")) for rc, eid in changed.items()]
        if not news:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id, entry in news:
                await self.announce(event_id, entry.fields(), pipe=pipe, stream=keys.ROLLCALL_LIVE)
            await pipe.execute()


def _help(event: RollCallAnswered) -> RollCallNews:
    return RollCallNews(
        rollcall=event.rollcall,
        kind="help",
        recipient=event.recipient,
        option=event.option,
        note=event.note,
        at=views.rfc3339(event.at),
    )
