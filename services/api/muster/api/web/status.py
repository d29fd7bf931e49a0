"""Public status pages: `/@{handle}`, a post's thread under it, and an embeddable banner.

What visitors and callers are sent to during an incident: no account, no cookie, no script
needed. The pages read as an anonymous reader (reads.Reader with viewer None), so only
public posts exist for them, whoever is signed in to the app in the same browser; replies
shown under a post pass the same check. A small script adds live updates from
GET /v1/accounts/{handle}/stream; without it the page is complete, only not live.

The banner (`/@{handle}/banner`) is the one page other sites may frame: an organisation
points an <iframe> on its website at it to show the latest update, live.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from muster import keys
from muster.api import lookups
from muster.api.reads import can_see
from muster.api.state import ApiState, state
from muster.api.web import forms
from muster.api.web.headers import frameable
from muster.api.web.html import WebRoute, render
from muster.api.web.live import stream_for
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


@router.get("/@{handle}")
async def status_page(handle: str, request: Request, before: Before = None) -> Response:
    st = state(request)
    account = await _account(st, handle)
    stream = stream_for(request, f"/v1/accounts/{handle}/stream", "status")
    posts = await st.reader.account_posts(account, None, before, PAGE)
    response = render(
        request,
        "status/page.html",
        title=f"{account.display_name} status",
        account=account,
        posts=posts,
        replies=await public_replies(st, posts),
        parents=await public_parents(st, posts),
        before=before,
        older=posts[-1].id if len(posts) == PAGE else None,
        stream=stream if before is None else None,
        embed=_embed(request, account),
    )
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


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
    )
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


@router.get("/@{handle}/banner")
async def banner(handle: str, request: Request) -> Response:
    st = state(request)
    account = await _account(st, handle)
    stream = stream_for(request, f"/v1/accounts/{handle}/stream", "banner")
    latest = await st.reader.account_posts(account, None, None, 1)
    response = render(
        request,
        "status/banner.html",
        title=f"{account.display_name} status",
        account=account,
        post=latest[0] if latest else None,
        stream=stream,
    )
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return frameable(response)
