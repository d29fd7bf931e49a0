"""Reading posts: by id, threads, home timelines and account logs (visibility on every item)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from muster.api import bodies, lookups
from muster.api.openapi import SECURED, responds
from muster.api.reads import can_see, page_limit
from muster.api.schemas import Handle, PostOut, ThreadOut
from muster.api.state import reader, state
from muster.api.tokens import optional_viewer, require_person
from muster.errors import NotFound
from muster.views import Post

router = APIRouter(tags=["posts"])

PostId = Annotated[str, Path(description="a post id")]
Limit = Annotated[int | None, Query(ge=1, le=100, description="page size (default 20)")]
Before = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,19}$", description="only items older than this id")
]
OPTIONAL_AUTH: dict[str, Any] = {"security": [{"bearer": []}, {}]}


def _not_found(post_id: str) -> NotFound:
    return NotFound(f"no post {post_id}", code="no_such_post")


async def visible_post(request: Request, post_id: str) -> tuple[Post, object]:
    viewer = await optional_viewer(request)
    post = await reader(request).post(post_id) if post_id.isdigit() and len(post_id) <= 19 else None
    if post is None or not can_see(post, viewer):
        raise _not_found(post_id)
    return post, viewer


@router.get(
    "/v1/posts/{post_id}",
    summary="One post (404 when it does not exist or is not visible to you)",
    openapi_extra=OPTIONAL_AUTH,
    responses=responds(200, PostOut, errors=(401, 404)),
)
async def get_post(post_id: PostId, request: Request) -> Response:
    post, _ = await visible_post(request, post_id)
    return bodies.json(post)


@router.get(
    "/v1/posts/{post_id}/thread",
    summary="A post with its visible ancestors and direct replies, oldest first",
    openapi_extra=OPTIONAL_AUTH,
    responses=responds(200, ThreadOut, errors=(401, 404)),
)
async def get_thread(post_id: PostId, request: Request) -> Response:
    post, viewer = await visible_post(request, post_id)
    ancestors, replies = await reader(request).thread(post, viewer)  # type: ignore[arg-type]
    return bodies.json(ThreadOut(ancestors=ancestors, post=post, replies=replies))


@router.get(
    "/v1/timelines/home",
    summary="Posts of the accounts you follow, newest first",
    openapi_extra=SECURED,
    responses=responds(200, list[PostOut], errors=(401, 403, 422)),
)
async def home(request: Request, limit: Limit = None, before: Before = None) -> Response:
    viewer = await require_person(request)
    return bodies.json(await reader(request).home(viewer, before, page_limit(limit)))


@router.get(
    "/v1/accounts/{handle}/posts",
    summary="An account's posts, newest first (anonymous readers see public posts only)",
    openapi_extra=OPTIONAL_AUTH,
    responses=responds(200, list[PostOut], errors=(401, 404, 422)),
)
async def account_posts(
    handle: Handle, request: Request, limit: Limit = None, before: Before = None
) -> Response:
    viewer = await optional_viewer(request)
    account = await lookups.existing(state(request), handle)
    posts = await reader(request).account_posts(account, viewer, before, page_limit(limit))
    return bodies.json(posts)
