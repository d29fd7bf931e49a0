"""Publishing posts and sending DMs: the ingest hot path (one script call per request)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from muster.api import bodies, lookups, publishing, rollcalls, validation
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.reads import can_see
from muster.api.schemas import CreateDm, CreatePost, DmOut, PostOut
from muster.api.state import ApiState, state
from muster.api.tokens import authenticate
from muster.errors import Forbidden, Invalid, NotFound, TooManyRequests
from muster.events import utcnow
from muster.ids import id_time_ms
from muster.records import Account

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


IN_FLIGHT_MS = 60_000
"""A parent newer than this may still be on its way to the projections: accepted unseen."""


def _unseen_parent(parent_id: str, field: str) -> None:
    age = time.time() * 1000 - id_time_ms(parent_id)
    if not -5_000 < age < IN_FLIGHT_MS:
        raise NotFound(
            f"no such {field.replace('_', ' ')} target {parent_id}",
            code="no_such_parent",
            field=field,
        )


async def _check_reply(st: ApiState, caller: Account, parent_id: str) -> None:
    """A reply's parent must be a post the caller can see (404 otherwise, never a hint)."""
    parent = await st.reader.post(parent_id)
    if parent is None:
        _unseen_parent(parent_id, "in_reply_to")
    elif not can_see(parent, caller):
        raise NotFound(f"no post {parent_id}", code="no_such_parent", field="in_reply_to")


async def _check_dm_reply(st: ApiState, caller: Account, to: str, parent_id: str) -> None:
    """A DM replies to a message of the same two people."""
    found = await st.reader.messages([parent_id])
    if not found:
        _unseen_parent(parent_id, "in_reply_to")
    elif {found[0].from_, found[0].to} != {caller.handle, to}:
        raise NotFound(f"no message {parent_id}", code="no_such_parent", field="in_reply_to")


def _sender(caller: Account) -> None:
    if caller.kind not in {"person", "service"}:
        raise Forbidden("only people and services post", code="cannot_post")


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
    _sender(caller)
    req = await bodies.read(request, CreatePost)
    validation.text(req.text, limit=st.settings.max_post_chars)
    key = idempotency_key_of(idempotency_key)
    as_account = req.as_ or caller.handle
    if as_account != caller.handle:
        kind = await lookups.kind_of(st, as_account, field="as", active=True)
        if kind not in {"team", "service"} or caller.kind != "person":
            raise Forbidden(f"you may not post as {as_account}", code="not_a_poster", field="as")
    external = caller.kind == "person" and caller.role == "external"
    visibility = req.visibility or ("public" if external else "internal")
    if external and visibility == "internal":
        raise Forbidden(
            "external accounts post publicly only", code="external_internal", field="visibility"
        )
    if req.in_reply_to is not None:
        await _check_reply(st, caller, req.in_reply_to)
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
    _sender(caller)
    req = await bodies.read(request, CreateDm)
    validation.text(req.text, limit=st.settings.max_post_chars)
    key = idempotency_key_of(idempotency_key)
    if req.to == caller.handle:
        raise Invalid("you cannot message yourself", code="cannot_message_self", field="to")
    if await lookups.kind_of(st, req.to, field="to", active=True) != "person":
        raise Invalid(f"{req.to} is not a person; DMs go to people", code="wrong_kind", field="to")
    if req.in_reply_to is not None:
        await _check_dm_reply(st, caller, req.to, req.in_reply_to)
    admit(st, False)
    payload = await publishing.send_dm(st, caller, req, idempotency_key=key)
    return bodies.raw_json(payload, 202)
