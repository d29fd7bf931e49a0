"""POST /v1/rollcalls/callback/{link}: a webhook recipient answers the roll-call it was sent.

The URL is the `respond_url` of the roll-call's webhook delivery (muster.api.answering): the
link in it says which roll-call and which recipient; the body `{"option": key}` must be
signed as Muster signs its deliveries (Standard Webhooks: webhook-id, webhook-timestamp
within ±5 minutes, webhook-signature) with that recipient's own secret. No bearer token:
the signature is the authentication.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from muster.api import answering, bodies
from muster.api.openapi import body, responds
from muster.api.schemas import RollCallAnswerOut, RollCallCallback
from muster.api.state import state

router = APIRouter(tags=["rollcalls"])

Link = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16}$", description="from respond_url")]


@router.post(
    "/v1/rollcalls/callback/{link}",
    summary="A webhook recipient's answer (Standard Webhooks signature, its own secret)",
    openapi_extra=body(RollCallCallback),
    responses=responds(200, RollCallAnswerOut, errors=(400, 401, 404, 409, 410, 413, 422)),
)
async def callback(link: Link, request: Request) -> Response:
    st = state(request)
    raw = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    return bodies.json(await answering.answer_by_callback(st, link, raw, headers))
