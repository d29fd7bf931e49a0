"""Subscriptions for people without an account (JSON): ask, confirm by SMS code or token,
and the posters' list and removal. Logic in muster.api.subscribing; the status page's form
and the confirmation and unsubscribe pages are muster.api.web.subscribe."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster import keys, views
from muster.api import bodies, lookups, subscribing
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.schemas import (
    ConfirmedOut,
    ConfirmSubscription,
    Handle,
    Subscribe,
    SubscribeOut,
    SubscriptionOut,
)
from muster.api.state import ApiState, state
from muster.api.tokens import authenticate
from muster.errors import Forbidden, Invalid, NotFound
from muster.events import utcnow
from muster.records import Subscription

router = APIRouter(tags=["subscriptions"])

SubscriptionId = str


def client_of(request: Request) -> str | None:
    """The client's address as the server saw it (behind a proxy: run uvicorn with
    --forwarded-allow-ips so it is the real client's)."""
    return request.client.host if request.client is not None else None


def subscription_out(sub: Subscription) -> SubscriptionOut:
    def at(value: Any) -> str | None:
        return views.rfc3339(value) if value is not None else None

    return SubscriptionOut(
        id=sub.id,
        channel=sub.channel,  # type: ignore[arg-type]
        address=sub.address,
        state=sub.shown_state(utcnow()),  # type: ignore[arg-type]
        components=list(
            sub.request.components if sub.state != "active" and sub.request else sub.components
        ),
        requested_at=views.rfc3339(sub.requested_at),
        confirmed_at=at(sub.confirmed_at),
        ended_at=at(sub.ended_at),
        ended_how=sub.ended_how,
    )


async def require_poster(request: Request, st: ApiState, handle: str) -> str:
    """Admins, the account itself and its posters; anyone else 403 `not_allowed`."""
    caller = await authenticate(request)
    await lookups.existing(st, handle)
    if caller.is_admin or caller.handle == handle:
        return caller.handle
    p = keys.partition_of(handle, st.settings.partitions)
    if await st.redis.sismember(keys.posters(p, handle), caller.handle):
        return caller.handle
    raise Forbidden("only the account's posters and admins see its subscribers", code="not_allowed")


@router.post(
    "/v1/accounts/{handle}/subscriptions",
    status_code=202,
    summary="Subscribe to an account's public updates without an account (anyone)",
    openapi_extra=body(Subscribe),
    responses=responds(202, SubscribeOut, errors=(400, 404, 413, 422, 429)),
)
async def subscribe(handle: Handle, request: Request) -> Response:
    st = state(request)
    req = await bodies.read(request, Subscribe)
    asked = await subscribing.request(st, handle, req, client_of(request), via="api")
    return bodies.json(
        SubscribeOut(status="confirmation_sent", webhook_secret=asked.webhook_secret), 202
    )


@router.post(
    "/v1/subscriptions/confirm",
    summary="Confirm a subscription: {phone, code} from the SMS, or {token} of an email's link",
    openapi_extra=body(ConfirmSubscription),
    responses=responds(200, ConfirmedOut, errors=(400, 404, 413, 422, 429)),
)
async def confirm(request: Request) -> Response:
    st = state(request)
    req = await bodies.read(request, ConfirmSubscription)
    network = await subscribing.network_of(st, client_of(request))
    if req.token is not None and req.phone is None and req.code is None:
        sid, _, token = req.token.partition(".")
        if not sid or not token:
            raise NotFound(subscribing.INVALID_LINK, code="invalid_token")
        await subscribing.confirm_link(st, sid, token, network)
    elif req.phone is not None and req.code is not None and req.token is None:
        await subscribing.confirm_code(st, req.phone, req.code, network)
    else:
        raise Invalid("send {phone, code} or {token}", code="missing_field")
    return bodies.json(ConfirmedOut())


@router.get(
    "/v1/accounts/{handle}/subscriptions",
    summary="The account's subscribers without an account (posters, admins)",
    openapi_extra=SECURED,
    responses=responds(200, list[SubscriptionOut], errors=(401, 403, 404)),
)
async def list_subscriptions(handle: Handle, request: Request) -> Response:
    st = state(request)
    await require_poster(request, st, handle)
    found = await subscribing.of_account(st, handle)
    return bodies.json([subscription_out(sub) for sub in found])


@router.delete(
    "/v1/accounts/{handle}/subscriptions/{subscription_id}",
    status_code=204,
    summary="Remove a subscriber: nothing more reaches it (posters, admins)",
    openapi_extra=merge(SECURED),
    responses=responds(204, errors=(401, 403, 404)),
)
async def delete_subscription(
    handle: Handle, subscription_id: SubscriptionId, request: Request
) -> Response:
    st = state(request)
    actor = await require_poster(request, st, handle)
    if not subscription_id.isalnum() or len(subscription_id) > 40:
        raise NotFound(
            f"@{handle} has no subscription {subscription_id}", code="no_such_subscription"
        )
    await subscribing.remove(st, actor, handle, subscription_id)
    return Response(status_code=204)
