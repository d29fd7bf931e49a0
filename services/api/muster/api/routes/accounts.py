"""Accounts: create (admin), look up (anyone), own profile and contact points, posters."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from muster import graph, keys, views
from muster.api import bodies, escalations, incidents, lookups, validation, writes
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.schemas import (
    AccountCreatedOut,
    AccountOut,
    AccountPageOut,
    CreateAccount,
    CreateNamedToken,
    Handle,
    Id,
    MeOut,
    NamedTokenOut,
    TokenOut,
    UpdateAccount,
    UpdateMe,
)
from muster.api.state import ApiState, state
from muster.api.tokens import authenticate, require_admin, require_person
from muster.connection import text
from muster.errors import Forbidden, Invalid, NotFound
from muster.events import utcnow
from muster.records import Account, NamedToken

router = APIRouter(tags=["accounts"])


async def followers_count(st: ApiState, handle: str) -> int:
    """From the follower graph the timeline worker keeps (a projection; it may trail a moment)."""
    return await graph.follower_count(st.redis, handle, st.settings.partitions)


async def account_out(st: ApiState, account: Account) -> AccountOut:
    """An account as anyone may see it (GET /v1/accounts/{handle})."""
    return AccountOut(
        id=account.id,
        handle=account.handle,
        kind=account.kind,  # type: ignore[arg-type]
        display_name=account.display_name,
        followers_count=await followers_count(st, account.handle),
        active=account.active,
    )


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
        active=account.active,
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
    return bodies.json(await account_out(st, account))


_ACCENT = re.compile(r"^#[0-9a-fA-F]{6}$")


def _check_look(req: UpdateAccount) -> None:
    if isinstance(req.display_name, str) and not req.display_name.strip():
        raise Invalid("display_name must not be blank", code="text_empty", field="display_name")
    if isinstance(req.logo_url, str):
        parts = urlsplit(req.logo_url)
        if parts.scheme != "https" or not parts.hostname:
            raise Invalid("logo_url must be an https URL", code="invalid_url", field="logo_url")
    if isinstance(req.accent_color, str) and not _ACCENT.match(req.accent_color):
        raise Invalid(
            "accent_color is a colour like #0a66c2", code="invalid_field", field="accent_color"
        )


async def page_out(st: ApiState, account: Account) -> AccountPageOut:
    p = keys.partition_of(account.handle, st.settings.partitions)
    look: dict[Any, Any] = await st.redis.hgetall(keys.status_page(p, account.handle))
    return AccountPageOut(
        **msgspec.structs.asdict(await account_out(st, account)),
        logo_url=text(look[b"logo_url"]) if b"logo_url" in look else None,
        accent_color=text(look[b"accent_color"]) if b"accent_color" in look else None,
        manager=account.manager,
    )


@router.patch(
    "/v1/accounts/{handle}",
    summary="Deactivate or reactivate an account, set its manager (admin); its status page's look (admins and its posters)",
    openapi_extra=merge(body(UpdateAccount), SECURED),
    responses=responds(200, AccountPageOut, errors=(400, 401, 403, 404, 413, 422)),
)
async def patch_account(handle: Handle, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    req = await bodies.read(request, UpdateAccount)
    if isinstance(req.active, bool) and not caller.is_admin:
        raise Forbidden("only admins deactivate or reactivate accounts", code="admin_only")
    sets_manager = not isinstance(req.manager, msgspec.UnsetType)
    if sets_manager and not caller.is_admin:
        raise Forbidden("only admins set a person's manager", code="admin_only")
    account = await lookups.existing(st, handle)
    look = (req.display_name, req.logo_url, req.accent_color)
    changes_look = any(not isinstance(v, msgspec.UnsetType) for v in look)
    if changes_look and not await incidents.may_manage(st, caller, handle):
        raise Forbidden("only admins and the account's posters change its page", code="not_allowed")
    if not changes_look and not caller.is_admin:
        raise Forbidden("only admins deactivate or reactivate accounts", code="admin_only")
    _check_look(req)
    if isinstance(req.active, bool) and not req.active and handle == caller.handle:
        raise Invalid(
            "you cannot deactivate yourself; ask another admin",
            code="cannot_deactivate_self",
            field="active",
        )
    if not isinstance(req.manager, msgspec.UnsetType):  # checked first: a refusal writes nothing
        account = await escalations.set_manager(st, caller, handle, req.manager)
    if changes_look:
        account = await writes.update_status_page(
            st,
            caller.handle,
            handle,
            display_name=req.display_name,
            logo_url=req.logo_url,
            accent_color=req.accent_color,
        )
    if isinstance(req.active, bool):
        account = await writes.set_active(st, caller.handle, handle, req.active)
    return bodies.json(await page_out(st, account))


@router.post(
    "/v1/accounts/{handle}/token",
    summary="Give a person or service a new token; the old one stops working at once (admin)",
    openapi_extra=SECURED,
    responses=responds(200, TokenOut, errors=(401, 403, 404, 422)),
)
async def reset_token(handle: Handle, request: Request) -> Response:
    st = state(request)
    admin = await require_admin(request)
    account = await lookups.existing(st, handle)
    lookups.require_kind(account, {"person", "service"}, field="handle", what="a person or service")
    token = await writes.reset_token(st, admin.handle, handle)
    return bodies.json(TokenOut(token=token))


def _named_token_out(token: NamedToken, secret: str | None = None) -> NamedTokenOut:
    return NamedTokenOut(
        id=token.id,
        name=token.name,
        created_at=views.rfc3339(token.created_at),
        expires_at=views.rfc3339(token.expires_at) if token.expires_at else None,
        expired=token.expired(utcnow()),
        token=secret,
    )


@router.post(
    "/v1/me/tokens",
    status_code=201,
    summary="Make a named token for a script; the token is shown once",
    openapi_extra=merge(body(CreateNamedToken), SECURED),
    responses=responds(201, NamedTokenOut, errors=(400, 401, 403, 409, 413, 422)),
)
async def create_my_token(request: Request) -> Response:
    st = state(request)
    caller = await require_person(request)
    req = await bodies.read(request, CreateNamedToken)
    if not req.name.strip():
        raise Invalid("name must not be blank", code="text_empty", field="name")
    expires_at = None
    if req.expires_in_days is not None:
        expires_at = utcnow() + timedelta(days=req.expires_in_days)
    token, secret = await writes.create_named_token(
        st, caller, req.name.strip(), expires_at=expires_at
    )
    return bodies.json(_named_token_out(token, secret), 201)


@router.get(
    "/v1/me/tokens",
    summary="Your named tokens, oldest first (never their secrets)",
    openapi_extra=SECURED,
    responses=responds(200, list[NamedTokenOut], errors=(401, 403)),
)
async def list_my_tokens(request: Request) -> Response:
    st = state(request)
    caller = await require_person(request)
    return bodies.json([_named_token_out(t) for t in await writes.named_tokens(st, caller.handle)])


@router.delete(
    "/v1/me/tokens/{token_id}",
    status_code=204,
    summary="Revoke one of your named tokens; it stops working at once",
    openapi_extra=SECURED,
    responses=responds(204, errors=(401, 403, 404, 422)),
)
async def revoke_my_token(token_id: Id, request: Request) -> Response:
    st = state(request)
    caller = await require_person(request)
    if not await writes.revoke_named_token(st, caller.handle, token_id):
        raise NotFound(f"no token {token_id}", code="no_such_token")
    return Response(status_code=204)


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
