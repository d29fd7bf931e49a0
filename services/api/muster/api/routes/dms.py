"""Reading direct messages: only their two parties ever see them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster.api import bodies, lookups
from muster.api.openapi import SECURED, responds
from muster.api.reads import page_limit
from muster.api.routes.reads import Before, Limit
from muster.api.schemas import ConversationOut, DmOut, Handle
from muster.api.state import reader, state
from muster.api.tokens import require_person

router = APIRouter(tags=["direct messages"])


@router.get(
    "/v1/dms",
    summary="Your conversations, most recent first, each with its latest message",
    openapi_extra=SECURED,
    responses=responds(200, list[ConversationOut], errors=(401, 403)),
)
async def conversations(request: Request) -> Response:
    viewer = await require_person(request)
    found = await reader(request).conversations(viewer)
    return bodies.json([ConversationOut(with_=other, last=last) for other, last in found])


@router.get(
    "/v1/dms/{handle}",
    summary="Your messages with one person, oldest first; `before` pages back in time",
    openapi_extra=SECURED,
    responses=responds(200, list[DmOut], errors=(401, 403, 404, 422)),
)
async def conversation(
    handle: Handle, request: Request, limit: Limit = None, before: Before = None
) -> Response:
    viewer = await require_person(request)
    await lookups.existing(state(request), handle)
    messages = await reader(request).conversation(viewer, handle, before, page_limit(limit))
    return bodies.json(messages)
