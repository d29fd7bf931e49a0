"""Public pages rendered once per change, and answered so that proxies and browsers can
keep them: what lets a status page survive every customer opening it at once.

Each api process keeps the latest rendering of each (account, page) with the version it was
made from (statusview.Version: the account's change counter and newest public post, one
round trip to read). A request whose version matches is answered from memory; one that
does not renders once while others wanting the same page wait for it (one lock per page).
Pages that show relative times are also rendered again after RELATIVE_S, so "5 minutes ago"
does not stay on a page for hours when nothing changes (the page script keeps them fresh
in between).

Answers carry `ETag` (the version, and the minute for pages with relative times),
`Last-Modified` (the last change) and `Cache-Control: public, max-age=MAX_AGE_S,
stale-while-revalidate=STALE_S`: a reverse proxy or CDN in front answers the crowd and asks
again at most every few seconds; a conditional GET (If-None-Match, If-Modified-Since) is
answered 304 without rendering anything.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime

from fastapi import Request
from starlette.responses import Response

from muster.api.web.statusview import Version

MAX_AGE_S = 5
"""How long a browser or proxy may reuse an answer without asking."""
STALE_S = 30
"""How long after that a proxy may still serve it while it asks again in the background."""
RELATIVE_S = 60
"""Pages with relative times are rendered again at least this often."""
CACHE_CONTROL = f"public, max-age={MAX_AGE_S}, stale-while-revalidate={STALE_S}"
ENTRIES = 2048
"""Renderings kept per process (least recently used dropped first)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    etag: str
    body: bytes
    media_type: str
    status: int
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Rendering:
    """What a page's renderer returns."""

    body: bytes
    media_type: str
    status: int = 200
    headers: dict[str, str] | None = None


class PageCache:
    def __init__(self, entries: int = ENTRIES) -> None:
        self._entries: OrderedDict[tuple[str, str], Rendered] = OrderedDict()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._limit = entries
        self.renders = 0
        """How many times a page was rendered (tests count them)."""

    async def answer(
        self,
        request: Request,
        handle: str,
        page: str,
        version: Version,
        render: Callable[[], Awaitable[Rendering]],
        *,
        relative_times: bool = False,
    ) -> Response:
        etag = f'W/"{version.tag}'
        if relative_times:
            etag += f"-{int(time.time()) // RELATIVE_S}"
        etag += '"'
        headers = {
            "ETag": etag,
            "Last-Modified": formatdate(version.last_modified_ms / 1000, usegmt=True),
            "Cache-Control": CACHE_CONTROL,
        }
        if _not_modified(request, etag, version.last_modified_ms):
            return Response(status_code=304, headers=headers)
        key = (handle, page)
        found = self._entries.get(key)
        if found is None or found.etag != etag:
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                found = self._entries.get(key)
                if found is None or found.etag != etag:
                    made = await render()
                    self.renders += 1
                    found = Rendered(
                        etag, made.body, made.media_type, made.status, made.headers or {}
                    )
                    self._entries[key] = found
                    while len(self._entries) > self._limit:
                        old, _ = self._entries.popitem(last=False)
                        self._locks.pop(old, None)
        self._entries.move_to_end(key)
        return Response(
            found.body,
            status_code=found.status,
            media_type=found.media_type,
            headers={**found.headers, **headers},
        )


def _not_modified(request: Request, etag: str, last_modified_ms: int) -> bool:
    """RFC 9110 §13.1: If-None-Match wins over If-Modified-Since (weak comparison)."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        moment = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    return last_modified_ms // 1000 <= int(moment.timestamp())
