"""Public status pages: `/@{handle}`, a post's thread under it, and an embeddable banner.

What visitors and callers are sent to during an incident: no account, no cookie, no script
needed. The pages read as an anonymous reader (reads.Reader with viewer None), so only
public posts exist for them, whoever is signed in to the app in the same browser; replies
shown under a post pass the same check. A small script adds live updates from
GET /v1/accounts/{handle}/stream; without it the page is complete, only not live.

The page shows the overall state, open incidents, components with 90 days of history, other
public posts and past incidents (statusview.py reads them once for every form: this page,
the Statuspage JSON, the feeds); `/@{handle}/incidents/{id}` shows one incident's updates.
Pages are rendered once per change of the account's status and answered with validators
and a short max-age (pagecache.py).

The banner (`/@{handle}/banner`) is the one page other sites may frame: an organisation
points an <iframe> on its website at it to show the worst open incident, or nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from muster import incidents as vocabulary
from muster import keys
from muster.api import incidents, lookups
from muster.api.reads import can_see
from muster.api.state import ApiState, state
from muster.api.web import forms, statusview, times
from muster.api.web.headers import frameable, public_images
from muster.api.web.html import WebRoute, render
from muster.api.web.live import stream_for
from muster.api.web.names import faces
from muster.api.web.pagecache import PageCache, Rendering
from muster.api.web.statusview import StatusView
from muster.connection import texts
from muster.errors import NotFound
from muster.records import Account
from muster.views import Post

router = APIRouter(route_class=WebRoute, include_in_schema=False)

PAGE = 20
REPLIES_SHOWN = 20
Before = Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")]
PUBLIC_CACHE = "no-cache"
"""Pages change with every post: browsers may keep them but must ask again each time."""


async def _account(st: ApiState, handle: str) -> Account:
    if not forms.is_handle(handle):
        raise NotFound("There is no status page here.", code="no_such_account")
    try:
        return await lookups.existing(st, handle)
    except NotFound:
        raise NotFound(f"There is no status page for @{handle}.", code="no_such_account") from None


async def public_replies(st: ApiState, posts: list[Post]) -> dict[str, list[Post]]:
    """Each post's direct replies that anyone may see, oldest first, at most REPLIES_SHOWN."""
    if not posts:
        return {}
    async with st.redis.pipeline(transaction=False) as pipe:
        for post in posts:
            source = keys.replies(keys.partition_of_id(post.id, st.settings.partitions), post.id)
            pipe.zrange(source, "-", "+", bylex=True, offset=0, num=REPLIES_SHOWN * 2)
        pages: list[Any] = await pipe.execute()
    ids = [texts(page) for page in pages]
    found = {r.id: r for r in await st.reader.posts([i for page in ids for i in page])}
    out: dict[str, list[Post]] = {}
    for post, page in zip(posts, ids, strict=True):
        visible = [found[i] for i in page if i in found and can_see(found[i], None)]
        if visible:
            out[post.id] = visible[:REPLIES_SHOWN]
    return out


async def public_parents(st: ApiState, posts: list[Post]) -> set[str]:
    """Ids of the posts' parents that anyone may see (only those get a link)."""
    parent_ids = sorted({p.in_reply_to for p in posts if p.in_reply_to})
    return {p.id for p in await st.reader.posts(parent_ids) if can_see(p, None)}


def _embed(request: Request, account: Account) -> str:
    base = state(request).settings.public_url.rstrip("/")
    return (
        f'<iframe src="{base}/@{account.handle}/banner" '
        f'title="{account.display_name} status" width="100%" height="96" '
        'style="border:0" loading="lazy"></iframe>'
    )


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/app", status_code=303)


def _context(view: StatusView) -> dict[str, Any]:
    return {
        "view": view,
        "labels": vocabulary.COMPONENT_LABELS,
        "statuses": vocabulary.STATUS_LABELS,
        "look_version": look_version(view.logo_url, view.accent_color),
        "component_names": [c.component.name for c in view.components],
        "worst": view.worst_open,
    }


def look_version(*values: str | None) -> str:
    """Part of page.css's URL, so a new look is fetched at once despite its max-age."""
    return hashlib.sha256(repr(values).encode()).hexdigest()[:12]


async def _page(request: Request, account: Account, before: str | None) -> Response:
    st = state(request)
    stream = stream_for(request, f"/v1/accounts/{account.handle}/stream", "status")
    now = times.now()
    view = await statusview.read(st, account, now)
    posts = (
        view.posts if before is None else await st.reader.account_posts(account, None, before, PAGE)
    )
    replies = await public_replies(st, posts)
    shown = [account.handle, *(p.as_account for p in posts)]
    shown += [r.as_account for rs in replies.values() for r in rs]
    return render(
        request,
        "status/page.html",
        title=f"{account.display_name} status",
        account=account,
        posts=posts,
        faces=await faces(request, shown),
        replies=replies,
        parents=await public_parents(st, posts),
        before=before,
        older=posts[-1].id if len(posts) >= PAGE else None,
        stream=stream if before is None else None,
        embed=_embed(request, account),
        now=now,
        **_context(view),
    )


def pages(request: Request) -> PageCache:
    found: PageCache = request.app.state.pages
    return found


async def cached(
    request: Request,
    handle: str,
    page: str,
    make: Callable[[Account], Awaitable[Response]],
    *,
    relative_times: bool = True,
) -> Response:
    """`make`'s answer for the account's status as it is now, rendered once per change
    (pagecache.py); a 404 page when there is no such account."""
    st = state(request)
    if not forms.is_handle(handle):
        raise NotFound("There is no status page here.", code="no_such_account")
    current = await statusview.version(st, handle)

    async def render_now() -> Rendering:
        account = await _account(st, handle)
        made = await make(account)
        kept = {k: v for k, v in made.headers.items() if k.lower() in _KEPT_HEADERS}
        return Rendering(bytes(made.body), made.media_type or "text/html", made.status_code, kept)

    return await pages(request).answer(
        request, handle, page, current, render_now, relative_times=relative_times
    )


_KEPT_HEADERS = {"content-security-policy"}


@router.get("/@{handle}")
async def status_page(handle: str, request: Request, before: Before = None) -> Response:
    if before is not None:  # older pages: rare, rendered each time
        response = await _page(request, await _account(state(request), handle), before)
        response.headers["Cache-Control"] = PUBLIC_CACHE
        return public_images(response)
    response = await cached(request, handle, "page", lambda account: _page(request, account, None))
    return public_images(response)


@router.get("/@{handle}/page.css")
async def page_css(handle: str, request: Request) -> Response:
    """The page's accent colour as a stylesheet: the policy allows no inline style."""

    async def make(account: Account) -> Response:
        view = await statusview.read(state(request), account, times.now())
        accent = view.accent_color
        css = f":root {{ --accent: {accent}; --link: {accent}; }}\n" if accent else ""
        return Response(css, media_type="text/css")

    return await cached(request, handle, "css", make, relative_times=False)


@router.get("/@{handle}/incidents/{incident_id}")
async def incident_page(handle: str, incident_id: str, request: Request) -> Response:
    st = state(request)
    located = await incidents.locate(st, incident_id)
    if located is None or located.incident.visibility != "public":
        raise NotFound("There is no such public incident.", code="no_such_incident")
    if located.incident.account != handle:
        return RedirectResponse(f"/@{located.incident.account}/incidents/{incident_id}", 303)

    async def make(account: Account) -> Response:
        found = await incidents.load(st, incident_id, partition=located.partition)
        assert found is not None
        p = keys.partition_of(handle, st.settings.partitions)
        look: dict[Any, Any] = await st.redis.hgetall(keys.status_page(p, handle))
        logo = look.get(b"logo_url")
        accent = look.get(b"accent_color")
        return render(
            request,
            "status/incident.html",
            title=f"{found.title} · {account.display_name} status",
            account=account,
            incident=found,
            logo_url=logo.decode() if logo else None,
            labels=vocabulary.COMPONENT_LABELS,
            statuses=vocabulary.STATUS_LABELS,
            look_version=look_version(
                logo.decode() if logo else None, accent.decode() if accent else None
            ),
        )

    return public_images(await cached(request, handle, f"incident-{incident_id}", make))


@router.get("/@{handle}/posts/{post_id}")
async def public_thread(handle: str, post_id: str, request: Request) -> Response:
    st = state(request)
    account = await _account(st, handle)
    post = await st.reader.post(post_id) if post_id.isdigit() and len(post_id) <= 19 else None
    if post is None or not can_see(post, None):
        raise NotFound("There is no such public update.", code="no_such_post")
    if post.as_account != account.handle:
        return RedirectResponse(f"/@{post.as_account}/posts/{post.id}", status_code=303)
    ancestors, replies = await st.reader.thread(post, None)
    response = render(
        request,
        "status/thread.html",
        title=f"{account.display_name} status",
        account=account,
        ancestors=ancestors,
        post=post,
        replies=replies,
        faces=await faces(request, [p.as_account for p in (*ancestors, post, *replies)]),
    )
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


@router.get("/@{handle}/banner")
async def banner(handle: str, request: Request) -> Response:
    """The worst open incident, or nothing when all is well; it reloads itself each minute
    (no script), cheaply: the answer is cached like the page."""

    async def make(account: Account) -> Response:
        view = await statusview.read(state(request), account, times.now())
        return frameable(
            render(
                request,
                "status/banner.html",
                title=f"{account.display_name} status",
                account=account,
                incident=view.worst_open,
                statuses=vocabulary.STATUS_LABELS,
                look_version=look_version(view.logo_url, view.accent_color),
            )
        )

    return await cached(request, handle, "banner", make)
