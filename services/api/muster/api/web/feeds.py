"""An account's public status as feeds: /@{handle}/feed.atom and /@{handle}/feed.rss.

Entries are the account's public posts and the updates of its public incidents, newest
first, from the same read as the status page (statusview.read: public data only, never an
internal incident or post). An incident update links to its incident's page and is titled
"<incident title> — <Status>"; a post links to its thread. Feeds are built by feedgen (Atom
1.0 and RSS 2.0 as feed readers expect them) and served like the status page: rendered once
per change, with ETag/Last-Modified and 304s (status.cached).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from feedgen.feed import FeedGenerator  # type: ignore[import-untyped]
from starlette.responses import Response

from muster.api.state import state
from muster.api.web import statusview, times
from muster.api.web.html import WebRoute
from muster.api.web.status import cached
from muster.api.web.statusview import StatusView
from muster.ids import id_time_ms
from muster.records import Account

router = APIRouter(route_class=WebRoute, include_in_schema=False)

ENTRIES = 50
"""Newest entries in a feed; older ones are on the status page and in the API."""
_TITLE_CHARS = 80


def _title(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1].rstrip() + "…"


def build(view: StatusView, base: str) -> FeedGenerator:
    account = view.account
    page = f"{base}/@{account.handle}"
    feed = FeedGenerator()
    feed.id(page)
    feed.title(f"{account.display_name} status")
    feed.subtitle(f"{view.description}. Incidents and updates from @{account.handle}.")
    feed.link(href=page, rel="alternate")
    feed.link(href=f"{page}/feed.atom", rel="self")
    feed.language("en")
    feed.generator("Muster")
    entries: list[tuple[str, str, str, str]] = []  # (id, title, link, text), any order
    for incident in (*view.open, *view.resolved):
        link = f"{page}/incidents/{incident.id}"
        for update in incident.updates:
            title = f"{incident.title} — {update.status.capitalize()}"
            entries.append((update.id, title, link, update.text))
    for post in view.posts:
        entries.append((post.id, _title(post.text), f"{page}/posts/{post.id}", post.text))
    newest = sorted(entries, key=lambda e: -int(e[0]))[:ENTRIES]
    updated = _at(newest[0][0]) if newest else view.now
    feed.updated(updated)
    for entry_id, title, link, body in reversed(newest):  # feedgen lists the last added first
        item = feed.add_entry()
        item.id(f"{page}/entries/{entry_id}")
        item.guid(f"{page}/entries/{entry_id}", permalink=False)
        item.title(title)
        item.link(href=link)
        item.content(body, type="text")
        item.description(body)
        item.published(_at(entry_id))
        item.updated(_at(entry_id))
        item.author({"name": account.display_name})
    return feed


def _at(snowflake: str) -> datetime:
    """When a post was made: its id says (ids.py), to the millisecond."""
    return datetime.fromtimestamp(id_time_ms(snowflake) / 1000, UTC)


async def _feed(request: Request, handle: str, kind: str) -> Response:
    async def make(account: Account) -> Response:
        st = state(request)
        view = await statusview.read(st, account, times.now())
        feed = build(view, st.settings.public_url.rstrip("/"))
        if kind == "atom":
            return Response(feed.atom_str(pretty=True), media_type="application/atom+xml")
        return Response(feed.rss_str(pretty=True), media_type="application/rss+xml")

    return await cached(request, handle, f"feed-{kind}", make, relative_times=False)


@router.get("/@{handle}/feed.atom")
async def atom(handle: str, request: Request) -> Response:
    return await _feed(request, handle, "atom")


@router.get("/@{handle}/feed.rss")
async def rss(handle: str, request: Request) -> Response:
    return await _feed(request, handle, "rss")
