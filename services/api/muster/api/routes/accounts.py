"""Accounts: create (admin), look up (anyone), own profile and contact points, posters."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster import graph
from muster.api import bodies, lookups, validation, writes
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.schemas import AccountCreatedOut, AccountOut, CreateAccount, Handle, MeOut, UpdateMe
from muster.api.state import ApiState, state
from muster.api.tokens import authenticate, require_admin
from muster.errors import Invalid
from muster.records import Account

router = APIRouter(tags=["accounts"])


async def followers_count(st: ApiState, handle: str) -> int:
    """From the follower graph the timeline worker keeps (a projection; it may trail a moment)."""
    return await graph.follower_count(st.redis, handle, st.settings.partitions)


async def me_out(st: ApiState, account: Account, secret: str | None = None) -> MeOut:
    return MeOut(
        id=account.id,
        handle=account.handle,
        kind=account.kind,  # type: ignore[arg-type]
        role=account.role,  # type: ignore[arg-type]
        display_name=account.display_name,
        email=account.email,
        phone=account.phone,
        webhook_url=account.webhook_url,
        dm_channels=cast(Any, account.dm_channels.split(",")),
        followers_count=await followers_count(st, account.handle),
        webhook_secret=secret,
    )


@router.post(
    "/v1/accounts",
    status_code=201,
    summary="Create an account (admin)",
    openapi_extra=merge(body(CreateAccount), SECURED),
    responses=responds(201, AccountCreatedOut, errors=(400, 401, 403, 409, 413, 422)),
)
async def create_account(request: Request) -> Response:
    st = state(request)
    admin = await require_admin(request)
    req = await bodies.read(request, CreateAccount)
    if req.kind == "person":
        role = req.role or "member"
    elif req.role is not None:
        raise Invalid(f"a {req.kind} account has no role", code="role_not_allowed", field="role")
    else:
        role = None
    if req.kind == "team" and (req.email or req.phone or req.webhook_url):
        raise Invalid("a team has no contact points of its own", code="team_contact_points")
    validation.email(req.email)
    validation.phone(req.phone)
    validation.webhook_url(req.webhook_url, allow_private=st.settings.webhook_allow_private)
    if req.display_name is not None and not req.display_name.strip():
        raise Invalid("display_name must not be blank", code="text_empty", field="display_name")
    account, token = await writes.create_account(st, admin.handle, req, role)
    return bodies.json(
        AccountCreatedOut(
            id=account.id,
            handle=account.handle,
            kind=account.kind,  # type: ignore[arg-type]
            role=account.role,  # type: ignore[arg-type]
            display_name=account.display_name,
            token=token,
            webhook_secret=account.webhook_secret,
        ),
        201,
    )


@router.get(
    "/v1/accounts/{handle}",
    summary="Look up an account",
    responses=responds(200, AccountOut, errors=(404,)),
)
async def get_account(handle: Handle, request: Request) -> Response:
    st = state(request)
    account = await lookups.existing(st, handle)
    return bodies.json(
        AccountOut(
            id=account.id,
            handle=account.handle,
            kind=account.kind,  # type: ignore[arg-type]
            display_name=account.display_name,
            followers_count=await followers_count(st, handle),
        )
    )


@router.get(
    "/v1/me",
    summary="Your own account, with contact points",
    openapi_extra=SECURED,
    responses=responds(200, MeOut, errors=(401,)),
)
async def get_me(request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    fresh = await lookups.existing(st, caller.handle)
    return bodies.json(await me_out(st, fresh))


@router.patch(
    "/v1/me",
    summary="Change your display name and contact points",
    openapi_extra=merge(body(UpdateMe), SECURED),
    responses=responds(200, MeOut, errors=(400, 401, 413, 422, 429)),
)
async def patch_me(request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    req = await bodies.read(request, UpdateMe)
    if isinstance(req.email, str):
        validation.email(req.email)
    if isinstance(req.phone, str):
        validation.phone(req.phone)
    if isinstance(req.webhook_url, str):
        validation.webhook_url(req.webhook_url, allow_private=st.settings.webhook_allow_private)
    if isinstance(req.display_name, str) and not req.display_name.strip():
        raise Invalid("display_name must not be blank", code="text_empty", field="display_name")
    updated, secret = await writes.update_me(st, caller, req)
    return bodies.json(await me_out(st, updated, secret))


async def _poster_change(request: Request, team: str, handle: str, *, grant: bool) -> Response:
    st = state(request)
    admin = await require_admin(request)
    account = await lookups.existing(st, team, field="team")
    lookups.require_kind(account, {"team", "service"}, field="team", what="a team or service")
    person = await lookups.existing(st, handle, field="handle")
    lookups.require_kind(person, {"person"}, field="handle", what="a person")
    await writes.set_poster(st, admin, team, handle, grant=grant)
    return Response(status_code=204)


@router.put(
    "/v1/accounts/{team}/posters/{handle}",
    status_code=204,
    summary="Let a person post as a team or service (admin)",
    openapi_extra=SECURED,
    responses=responds(204, errors=(401, 403, 404, 422)),
)
async def grant_poster(team: Handle, handle: Handle, request: Request) -> Response:
    return await _poster_change(request, team, handle, grant=True)


@router.delete(
    "/v1/accounts/{team}/posters/{handle}",
    status_code=204,
    summary="Stop a person posting as a team or service (admin)",
    openapi_extra=SECURED,
    responses=responds(204, errors=(401, 403, 404, 422)),
)
async def revoke_poster(team: Handle, handle: Handle, request: Request) -> Response:
    return await _poster_change(request, team, handle, grant=False)
