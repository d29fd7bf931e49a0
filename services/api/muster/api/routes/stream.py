"""GET /v1/stream: server-sent events of new home-timeline posts and received DMs.

Event ids are keys.LIVE entry ids, so `Last-Event-ID` resumes exactly where the client
stopped — no gap, no repeat — while that entry is still in LIVE (MUSTER_LIVE_RETENTION
entries). Older than that, the stream sends `event: reset` first: reload by REST, then go on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Request
from starlette.responses import Response, StreamingResponse

from muster import keys
from muster.api.accounts import Account
from muster.api.livehub import Entry, LiveHub, entry_key
from muster.api.openapi import SECURED, merge, responds
from muster.api.reads import can_see
from muster.api.state import state
from muster.api.tokens import require_person
from muster.connection import text, texts
from muster.errors import Invalid
from muster.views import decode_post

router = APIRouter(tags=["live"])

HEARTBEAT_S = 15.0
_ID = r"^[0-9]{1,20}-[0-9]{1,20}$"


class Filter:
    """Which LIVE entries one viewer receives, tracking their follows as they change."""

    def __init__(self, viewer: Account, follows: set[str]) -> None:
        self.viewer = viewer
        self.follows = follows

    def render(self, entry_id: str, fields: dict[bytes, bytes]) -> str | None:
        kind = text(fields.get(b"kind", b""))
        me = self.viewer.handle
        if kind in {"follow", "unfollow"}:
            if text(fields[b"follower"]) == me:
                account = text(fields[b"account"])
                (self.follows.add if kind == "follow" else self.follows.discard)(account)
            return None
        if kind == "post":
            account, author = text(fields[b"account"]), text(fields[b"author"])
            if account not in self.follows and me not in (account, author):
                return None
            if not can_see(decode_post(fields[b"data"]), self.viewer):
                return None
            return f"id: {entry_id}\nevent: post\ndata: {text(fields[b'data'])}\n\n"
        if kind == "dm" and text(fields[b"to"]) == me:
            return f"id: {entry_id}\nevent: dm\ndata: {text(fields[b'data'])}\n\n"
        return None


async def _missed(hub: LiveHub, cursor: str) -> AsyncIterator[Entry]:
    """LIVE entries after `cursor`, read in pages."""
    start = f"({cursor}"
    while True:
        page: Any = await hub.redis.xrange(keys.LIVE, start, "+", count=500)
        for raw_id, fields in page:
            yield text(raw_id), fields
        if len(page) < 500:
            return
        start = f"({text(page[-1][0])}"


async def _gap(hub: LiveHub, cursor: str) -> bool:
    """True when entries after `cursor` may have been trimmed away."""
    try:
        info: Any = await hub.redis.xinfo_stream(keys.LIVE)
    except Exception:
        return False
    deleted = info.get("max-deleted-entry-id")
    return deleted is not None and entry_key(cursor) < entry_key(text(deleted))


@router.get(
    "/v1/stream",
    summary="Live stream (SSE): `event: post` per new home-timeline post, `event: dm` per DM received",
    openapi_extra=merge(SECURED),
    responses=responds(
        200, {"type": "string"}, media_type="text/event-stream", errors=(401, 403, 422)
    ),
)
async def live_stream(
    request: Request,
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID"),
) -> Response:
    viewer = await require_person(request)
    if last_event_id is not None and not re.fullmatch(_ID, last_event_id):
        raise Invalid("Last-Event-ID is not an id this stream gave", code="invalid_last_event_id")
    st = state(request)
    hub: LiveHub = request.app.state.live
    subscription = hub.subscribe()  # before reading follows: no change slips between the two
    p = keys.partition_of(viewer.handle, st.settings.partitions)
    viewer_filter = Filter(viewer, set(texts(await st.redis.hkeys(keys.follows(p, viewer.handle)))))

    async def events() -> AsyncIterator[str]:
        cursor = last_event_id
        try:
            yield "retry: 2000\n\n"
            if cursor is not None:
                if await _gap(hub, cursor):
                    yield "event: reset\ndata: {}\n\n"
                async for entry_id, fields in _missed(hub, cursor):
                    cursor = entry_id
                    out = viewer_filter.render(entry_id, fields)
                    if out:
                        yield out
            while not subscription.overflowed:
                try:
                    entry_id, fields = await asyncio.wait_for(subscription.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if cursor is not None and entry_key(entry_id) <= entry_key(cursor):
                    continue  # already sent while catching up
                cursor = entry_id
                out = viewer_filter.render(entry_id, fields)
                if out:
                    yield out
        finally:
            hub.unsubscribe(subscription)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
