"""Publishing posts and sending DMs: the ingest hot path (one script call per request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from muster.api import bodies, lookups, publishing, rollcalls, validation
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.schemas import CreateDm, CreatePost, DmOut, PostOut
from muster.api.state import ApiState, state
from muster.api.tokens import authenticate
from muster.errors import Forbidden, Invalid, TooManyRequests
from muster.events import utcnow

router = APIRouter(tags=["posts"])

IDEMPOTENCY_KEY_MAX = 255
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Same key, same caller, same body within 24 h: the first response, nothing new",
        max_length=IDEMPOTENCY_KEY_MAX,
    ),
]


def idempotency_key_of(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or not value.isascii() or not value.isprintable():
        raise Invalid(
            "Idempotency-Key must be 1-255 printable ASCII characters",
            code="invalid_idempotency_key",
        )
    return value


def admit(st: ApiState, critical: bool) -> None:
    """Backpressure: refuse what can wait while the workers catch up; never a critical alert."""
    if st.lag.overloaded and not critical:
        st.metrics.refused.labels("backpressure").inc()
        raise TooManyRequests(
            "workers are behind; non-critical writes are paused",
            code="backpressure",
            retry_after=st.lag.retry_after,
        )


@router.post(
    "/v1/posts",
    status_code=202,
    summary="Publish a post (as yourself, or as a team/service you are a poster of)",
    openapi_extra=merge(body(CreatePost), SECURED),
    responses=responds(202, PostOut, errors=(400, 401, 403, 404, 409, 413, 422, 429)),
)
async def create_post(request: Request, idempotency_key: IdempotencyKey = None) -> Response:
    st = state(request)
    caller = await authenticate(request)
    publishing.check_sender(caller)
    req = await bodies.read(request, CreatePost)
    validation.text(req.text, limit=st.settings.max_post_chars)
    key = idempotency_key_of(idempotency_key)
    as_account = req.as_ or caller.handle
    if as_account != caller.handle:
        kind = await lookups.kind_of(st, as_account, field="as", active=True)
        if kind not in {"team", "service"} or caller.kind != "person":
            raise Forbidden(f"you may not post as {as_account}", code="not_a_poster", field="as")
    visibility = publishing.visibility_for(caller, req.visibility)
    if req.in_reply_to is not None:
        await publishing.check_reply(st, caller, req.in_reply_to)
    rollcall = None if req.rollcall is None else rollcalls.question(req.rollcall, utcnow())
    admit(st, req.severity == "critical")
    payload = await publishing.publish_post(
        st,
        caller,
        req,
        as_account=as_account,
        visibility=visibility,
        idempotency_key=key,
        rollcall=rollcall,
    )
    return bodies.raw_json(payload, 202)


@router.post(
    "/v1/dms",
    status_code=202,
    summary="Send a direct message to a person",
    openapi_extra=merge(body(CreateDm), SECURED),
    responses=responds(202, DmOut, errors=(400, 401, 403, 404, 409, 413, 422, 429)),
)
async def create_dm(request: Request, idempotency_key: IdempotencyKey = None) -> Response:
    st = state(request)
    caller = await authenticate(request)
    publishing.check_sender(caller)
    req = await bodies.read(request, CreateDm)
    validation.text(req.text, limit=st.settings.max_post_chars)
    key = idempotency_key_of(idempotency_key)
    await publishing.check_dm_recipient(st, caller, req.to)
    if req.in_reply_to is not None:
        await publishing.check_dm_reply(st, caller, req.to, req.in_reply_to)
    admit(st, False)
    payload = await publishing.send_dm(st, caller, req, idempotency_key=key)
    return bodies.raw_json(payload, 202)
