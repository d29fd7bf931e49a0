"""GET /v1/posts/{id}/deliveries: where a post's off-app deliveries stand, per recipient.

Read from the delivery status projection (keys.delivery_status, one hash per recipient
partition, "recipient:channel" → "state|attempts|last error") that the timeline worker
starts and the delivery workers keep. Who may look: the post's author, the posters of the
account it was posted as (and that account itself), admins; anyone else who can see the
post gets 403, and whoever cannot see it gets 404, as if it did not exist.

`totals` count every recipient; `recipients` is a page, ordered by handle then channel:
`?limit` (default 100, at most 1000) and `?after=<handle>:<channel>` (the last one seen)
page through them, `?status=failed` (or pending, sent, logged) keeps one state. `logged`
means NOT sent: no SMTP server or SMS provider is configured, and the message went to the
development mailbox or the log instead; its `note` says where.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from muster import keys
from muster.api import bodies
from muster.api.openapi import SECURED, responds
from muster.api.reads import can_see
from muster.api.routes.reads import PostId
from muster.api.schemas import DeliveriesOut, DeliveryCounts, DeliveryState, RecipientDelivery
from muster.api.state import state
from muster.api.tokens import authenticate
from muster.errors import Forbidden, NotFound
from muster.records import status_of

router = APIRouter(tags=["posts"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _parse(field: bytes, value: bytes) -> RecipientDelivery | None:
    handle, _, channel = field.decode().rpartition(":")
    status = status_of(value)
    if status is None or channel not in keys.OFFAPP_CHANNELS:
        return None
    logged = status.state == "logged"  # its error slot says where it went instead
    return RecipientDelivery(
        handle=handle,
        channel=channel,  # type: ignore[arg-type]
        status=status.state,
        attempts=status.attempts,
        last_error=None if logged else status.error or None,
        note=status.error or None if logged else None,
    )


@router.get(
    "/v1/posts/{post_id}/deliveries",
    summary="Delivery status of a post: totals per channel and per-recipient state",
    openapi_extra=SECURED,
    responses=responds(200, DeliveriesOut, errors=(401, 403, 404, 422)),
)
async def post_deliveries(
    post_id: PostId,
    request: Request,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="recipients per page (default 100)")
    ] = DEFAULT_LIMIT,
    after: Annotated[
        str | None,
        Query(
            pattern=r"^[a-z0-9_]{1,30}:(email|sms|webhook)$",
            description="page after this `handle:channel` (the last one of the previous page)",
        ),
    ] = None,
    status: Annotated[
        DeliveryState | None,
        Query(description="only recipients in this state"),
    ] = None,
) -> Response:
    st = state(request)
    viewer = await authenticate(request)
    post = await st.reader.post(post_id) if post_id.isdigit() and len(post_id) <= 19 else None
    if post is None or not can_see(post, viewer):
        raise NotFound(f"no post {post_id}", code="no_such_post")
    partitions = st.settings.partitions
    if not (viewer.is_admin or viewer.handle in (post.author, post.as_account)):
        as_p = keys.partition_of(post.as_account, partitions)
        if not await st.redis.sismember(keys.posters(as_p, post.as_account), viewer.handle):
            raise Forbidden(
                "only the author, the posters of its account and admins see deliveries",
                code="not_allowed",
            )
    async with st.redis.pipeline(transaction=False) as pipe:
        for q in range(partitions):
            pipe.hgetall(keys.delivery_status(q, post.id))
        shares: list[Any] = await pipe.execute()
    totals = {channel: DeliveryCounts() for channel in keys.OFFAPP_CHANNELS}
    rows: list[RecipientDelivery] = []
    for share in shares:
        for field, value in share.items():
            row = _parse(field, value)
            if row is None:
                continue
            counts = totals[row.channel]
            setattr(counts, row.status, getattr(counts, row.status) + 1)
            if status is None or row.status == status:
                rows.append(row)
    rows.sort(key=lambda r: (r.handle, r.channel))
    if after is not None:
        handle, _, channel = after.partition(":")
        rows = [r for r in rows if (r.handle, r.channel) > (handle, channel)]
    return bodies.json(DeliveriesOut(totals=totals, recipients=rows[:limit]))
