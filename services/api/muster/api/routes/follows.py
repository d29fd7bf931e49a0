"""Follows (a person's own) and enrolments (an admin makes people follow an account)."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster.api import accounts, bodies, lookups, validation, writes
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.schemas import Enrolment, EnrolmentOut, FollowOut, FollowRequest, Handle
from muster.api.state import state
from muster.api.tokens import require_admin, require_person
from muster.errors import Invalid, TooManyRequests
from muster.records import Follow

router = APIRouter(tags=["follows"])


def follow_out(follow: Follow) -> FollowOut:
    channels: list[Any] = [*follow.channels]
    return FollowOut(account=follow.account, channels=channels, mandatory=follow.mandatory)


@router.put(
    "/v1/me/follows/{handle}",
    summary="Follow an account, or change the channels of a follow",
    openapi_extra=merge(body(FollowRequest, required=False), SECURED),
    responses=responds(200, FollowOut, errors=(400, 401, 403, 404, 413, 422, 429)),
)
async def put_follow(handle: Handle, request: Request) -> Response:
    st = state(request)
    caller = await require_person(request)
    raw = await request.body()
    req = bodies.decode(raw, FollowRequest) if raw.strip() else FollowRequest()
    if handle == caller.handle:
        raise Invalid("you cannot follow yourself", code="cannot_follow_self")
    await lookups.kind_of(st, handle)
    if st.lag.overloaded:
        raise TooManyRequests(
            "workers are behind; try again shortly", retry_after=st.lag.retry_after
        )
    channels = tuple(validation.channels(list(req.channels))) if req.channels is not None else None
    return bodies.json(follow_out(await writes.follow(st, caller, handle, channels)))


@router.delete(
    "/v1/me/follows/{handle}",
    status_code=204,
    summary="Unfollow an account (403 mandatory_follow when enrolled with no opt-out)",
    openapi_extra=SECURED,
    responses=responds(204, errors=(401, 403, 404)),
)
async def delete_follow(handle: Handle, request: Request) -> Response:
    st = state(request)
    caller = await require_person(request)
    await lookups.kind_of(st, handle)
    await writes.unfollow(st, caller, handle)
    return Response(status_code=204)


@router.get(
    "/v1/me/follows",
    summary="The accounts you follow",
    openapi_extra=SECURED,
    responses=responds(200, list[FollowOut], errors=(401, 403)),
)
async def list_follows(request: Request) -> Response:
    st = state(request)
    caller = await require_person(request)
    return bodies.json([follow_out(f) for f in await writes.list_follows(st, caller)])


@router.put(
    "/v1/accounts/{handle}/enrolments",
    status_code=202,
    summary="Make people (or every member, now and future) follow an account (admin)",
    openapi_extra=merge(body(Enrolment), SECURED),
    responses=responds(202, EnrolmentOut, errors=(400, 401, 403, 404, 413, 422)),
)
async def enrol(handle: Handle, request: Request) -> Response:
    st = state(request)
    admin = await require_admin(request)
    req = await bodies.read(request, Enrolment)
    await lookups.existing(st, handle)
    channels = tuple(validation.channels(list(req.channels)))
    followers: dict[str, bool] | None = None
    if not isinstance(req.followers, str):
        found = await accounts.load_many(
            st.redis, sorted(set(req.followers)), st.settings.partitions
        )
        missing = [h for h, a in found.items() if a is None]
        if missing:
            raise Invalid(
                f"no such accounts: {', '.join(missing[:20])}",
                code="unknown_followers",
                field="followers",
            )
        not_people = [h for h, a in found.items() if a is not None and a.kind != "person"]
        if not_people:
            raise Invalid(
                f"only people can be enrolled: {', '.join(not_people[:20])}",
                code="wrong_kind",
                field="followers",
            )
        followers = {h: a.role == "external" for h, a in found.items() if a is not None}
    enrolment, count = await writes.enrol(
        st, admin.handle, handle, followers, channels, req.mandatory
    )
    return bodies.json(
        EnrolmentOut(
            id=enrolment,
            account=handle,
            followers=count,
            channels=cast(Any, list(channels)),
            mandatory=req.mandatory,
        ),
        202,
    )
