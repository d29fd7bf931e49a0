"""Live updates for pages: where a page's script subscribes, and the web app's own stream.

A page records the live hub's position *before* it reads what it shows, and its script
subscribes with `after=<that position>`: whatever arrived in between is replayed, so nothing
falls between the page and the stream (the script skips what the page already shows).

GET /app/stream is GET /v1/stream for the web app: the same loop and the same Filter
(routes/stream.py), authenticated by the session cookie, because EventSource cannot send an
Authorization header and the token is kept where scripts cannot read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from muster.api.livehub import LiveHub
from muster.api.routes.stream import person_filter, resume_cursor, sse
from muster.api.web import session
from muster.api.web.headers import harden
from muster.api.web.html import WebRoute


@dataclass(frozen=True, slots=True)
class Stream:
    url: str
    after: str
    mode: str  # what the script does with events: status, banner, home, dm


def stream_for(request: Request, url: str, mode: str) -> Stream:
    """Call before reading what the page shows."""
    hub: LiveHub = request.app.state.live
    return Stream(url=url, after=hub.position, mode=mode)


router = APIRouter(route_class=WebRoute, include_in_schema=False)

After = Annotated[str | None, Query(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")]


@router.get("/app/stream")
async def app_stream(
    request: Request,
    after: After = None,
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID"),
) -> Response:
    current = await session.current(request)
    if current is None:
        return harden(Response("sign in first", status_code=401, media_type="text/plain"))
    cursor = resume_cursor(last_event_id, after)
    hub: LiveHub = request.app.state.live
    subscription = hub.subscribe()  # before reading follows: no change slips between the two
    try:
        viewer_filter = await person_filter(request, current.account)
    except BaseException:
        hub.unsubscribe(subscription)
        raise
    return sse(hub, subscription, viewer_filter.render, cursor)
