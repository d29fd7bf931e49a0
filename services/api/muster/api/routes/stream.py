"""Live streams (server-sent events) from the live hub, each connection with its own filter.

GET /v1/stream: a person's new home-timeline posts and received DMs. GET
/v1/accounts/{handle}/stream: one account's public posts, for anyone (status pages). The web
app's stream (muster.api.web) runs the same loop, `sse()`, with the person's Filter.

Event ids are keys.LIVE entry ids, so `Last-Event-ID` resumes exactly where the client
stopped — no gap, no repeat — while that entry is still in LIVE (MUSTER_LIVE_RETENTION
entries). Older than that, the stream sends `event: reset` first: reload by REST, then go on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response, StreamingResponse

from muster import keys
from muster.api import lookups
from muster.api.livehub import Entry, LiveHub, Subscription, entry_key
from muster.api.openapi import SECURED, merge, responds
from muster.api.reads import can_see
from muster.api.schemas import Handle
from muster.api.state import state
from muster.api.tokens import require_person
from muster.connection import text, texts
from muster.errors import Invalid
from muster.records import Account, LiveEntry, live_entry_of
from muster.views import decode_post

router = APIRouter(tags=["live"])

HEARTBEAT_S = 15.0
BATCH_MAX = 64
"""LIVE entries sent in one write when a connection has several waiting (~350 B each)."""
_ID = r"^[0-9]{1,20}-[0-9]{1,20}$"


class Filter:
    """Which LIVE entries one viewer receives, tracking their follows as they change."""

    def __init__(self, viewer: Account, follows: set[str]) -> None:
        self.viewer = viewer
        self.follows = follows

    def render(self, entry_id: str, entry: LiveEntry) -> str | None:
        kind, me = entry.kind, self.viewer.handle
        if kind in {"follow", "unfollow"}:
            if entry.follower == me:
                (self.follows.add if kind == "follow" else self.follows.discard)(entry.account)
            return None
        if kind == "post":
            if entry.account not in self.follows and me not in (entry.account, entry.author):
                return None
            if not can_see(decode_post(entry.data), self.viewer):
                return None
            return f"id: {entry_id}\nevent: post\ndata: {entry.data.decode()}\n\n"
        if kind == "dm" and entry.recipient == me:
            return f"id: {entry_id}\nevent: dm\ndata: {entry.data.decode()}\n\n"
        return None


class PublicFilter:
    """What anyone may receive about one account: its public posts, nothing else (no DMs,
    no follows, no internal post even if a LIVE entry were mislabelled: the post decides)."""

    def __init__(self, account: str) -> None:
        self.account = account

    def render(self, entry_id: str, entry: LiveEntry) -> str | None:
        if entry.kind != "post" or entry.account != self.account:
            return None
        if not can_see(decode_post(entry.data), None):
            return None
        return f"id: {entry_id}\nevent: post\ndata: {entry.data.decode()}\n\n"


Render = Callable[[str, LiveEntry], str | None]
"""A filter: a LIVE entry → its SSE text for this connection, or None to skip it."""


async def _missed(hub: LiveHub, cursor: str) -> AsyncIterator[Entry]:
    """LIVE entries after `cursor`, read in pages."""
    start = f"({cursor}"
    while True:
        page: Any = await hub.redis.xrange(keys.LIVE, start, "+", count=500)
        for raw_id, fields in page:
            yield text(raw_id), live_entry_of(fields)
        if len(page) < 500:
            return
        start = f"({text(page[-1][0])}"


async def _gap(hub: LiveHub, cursor: str) -> bool:
    """True when entries after `cursor` may have been trimmed away.

    MAXLEN trimming leaves `max-deleted-entry-id` alone (only XDEL moves it), so a trim shows
    as entries removed (entries-added > length) with the oldest one left newer than `cursor`.
    If the cursor's own entry was the last one trimmed, the reset is needless but harmless."""
    try:
        info: Any = await hub.redis.xinfo_stream(keys.LIVE)
    except Exception:
        return False
    position = entry_key(cursor)
    deleted = info.get("max-deleted-entry-id")
    if deleted is not None and position < entry_key(text(deleted)):
        return True
    if int(info.get("entries-added") or 0) <= int(info.get("length") or 0):
        return False  # nothing ever removed
    first = info.get("first-entry")
    oldest = text(first[0]) if first else text(info["last-generated-id"])
    return position < entry_key(oldest)


def resume_cursor(last_event_id: str | None, after: str | None = None) -> str | None:
    """Where a stream resumes: the Last-Event-ID header (a reconnect), else `after` (a page
    that rendered up to that LIVE entry); 422 when neither is an id a stream gave."""
    cursor = last_event_id if last_event_id is not None else after
    if cursor is not None and not re.fullmatch(_ID, cursor):
        raise Invalid("Last-Event-ID is not an id this stream gave", code="invalid_last_event_id")
    return cursor


def sse(
    hub: LiveHub, subscription: Subscription, render: Render, cursor: str | None
) -> StreamingResponse:
    """The SSE response of one connection: entries after `cursor` first, then live ones, each
    through `render`. `subscription` must be taken before the caller read anything the
    filter depends on, so no entry slips between the two; it is released when the stream ends."""

    async def events() -> AsyncIterator[str]:
        position = cursor
        try:
            yield "retry: 2000\n\n"
            if position is not None:
                if await _gap(hub, position):
                    yield "event: reset\ndata: {}\n\n"
                async for entry_id, entry in _missed(hub, position):
                    position = entry_id
                    out = render(entry_id, entry)
                    if out:
                        yield out
            queue = subscription.queue
            while not subscription.overflowed:
                entries: list[Entry] = []
                if queue.empty():
                    try:
                        async with asyncio.timeout(HEARTBEAT_S):
                            entries.append(await queue.get())
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                # Everything already waiting goes out as one chunk, one write: a connection
                # that fell behind costs less per event, so it catches up instead of sinking.
                while len(entries) < BATCH_MAX and not queue.empty():
                    entries.append(queue.get_nowait())
                chunk: list[str] = []
                for entry_id, entry in entries:
                    if position is not None and entry_key(entry_id) <= entry_key(position):
                        continue  # already sent while catching up
                    position = entry_id
                    out = render(entry_id, entry)
                    if out:
                        chunk.append(out)
                if chunk:
                    yield "".join(chunk)
        finally:
            hub.unsubscribe(subscription)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def person_filter(request: Request, viewer: Account) -> Filter:
    """A person's filter, with their follows as they are now."""
    st = state(request)
    p = keys.partition_of(viewer.handle, st.settings.partitions)
    return Filter(viewer, set(texts(await st.redis.hkeys(keys.follows(p, viewer.handle)))))


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
    cursor = resume_cursor(last_event_id)
    hub: LiveHub = request.app.state.live
    subscription = hub.subscribe()  # before reading follows: no change slips between the two
    try:
        viewer_filter = await person_filter(request, viewer)
    except BaseException:
        hub.unsubscribe(subscription)
        raise
    return sse(hub, subscription, viewer_filter.render, cursor)


After = Annotated[
    str | None,
    Query(
        pattern=_ID,
        description="resume after this event id, for clients that cannot send Last-Event-ID "
        "on their first connection (a page rendered up to it); the header wins when both are sent",
    ),
]


@router.get(
    "/v1/accounts/{handle}/stream",
    summary="Live stream (SSE) of one account's public posts, for anyone: `event: post` each",
    responses=responds(200, {"type": "string"}, media_type="text/event-stream", errors=(404, 422)),
)
async def account_stream(
    handle: Handle,
    request: Request,
    after: After = None,
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID"),
) -> Response:
    cursor = resume_cursor(last_event_id, after)
    await lookups.existing(state(request), handle)
    hub: LiveHub = request.app.state.live
    return sse(hub, hub.subscribe(), PublicFilter(handle).render, cursor)
