"""The web app's follows (with channel choices) and contact points (PATCH /v1/me).

A channel only reaches someone who has its contact point, so the follows page says which
contact points are missing, and the contact points page is one click away.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster import keys
from muster.api.schemas import FollowOut, MeOut, NamedTokenOut
from muster.api.web import forms, session
from muster.api.web.html import Redirect, WebRoute, render
from muster.api.web.inprocess import JsonApi, Refused, path
from muster.api.web.names import faces
from muster.api.web.session import Session
from muster.errors import ApiError

router = APIRouter(route_class=WebRoute, include_in_schema=False)

_BACK = re.compile(r"^/app/people(\?[A-Za-z0-9_=&%.+-]*)?$")
"""Where a follow form may send the browser back to (the directory, with its search)."""


def back_to(form: forms.Form, default: str, notice: str) -> str:
    target = form.get("next")
    target = target if _BACK.fullmatch(target) else default
    return f"{target}{'&' if '?' in target else '?'}notice={notice}"


CONTACT_OF = {"email": "email", "sms": "phone", "webhook": "webhook_url"}
"""Off-app channel → the contact point it needs."""


def missing_contacts(me: MeOut) -> set[str]:
    return {channel for channel, name in CONTACT_OF.items() if not getattr(me, name)}


async def follows_page(
    request: Request,
    current: Session,
    *,
    form: dict[str, Any] | None = None,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    api = JsonApi(request, current.token)
    follows = (await api.get("/v1/me/follows")).value(list[FollowOut])
    me = (await api.get("/v1/me")).value(MeOut)
    return render(
        request,
        "app/follows.html",
        status=status,
        title="Follows",
        section="follows",
        session=current,
        follows=follows,
        faces=await faces(request, [f.account for f in follows]),
        channels=keys.CHANNELS,
        missing=missing_contacts(me),
        form=form or {"handle": "", "channels": ["app"]},
        error=error,
    )


@router.get("/app/follows")
async def follows(request: Request) -> Response:
    return await follows_page(request, await session.require(request))


@router.post("/app/follows")
async def follow(request: Request) -> Response:
    """Follow an account, or change the channels of a follow (the same PUT)."""
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    handle = forms.handle(form.get("handle"))
    channels = [c for c in form.getall("channels") if c in keys.CHANNELS]
    if not forms.is_handle(handle):
        error = Refused(422, "invalid_handle", "Type the handle of an account, like ops.", "handle")
        return await follows_page(
            request, current, form={"handle": handle, "channels": channels}, error=error, status=422
        )
    reply = await JsonApi(request, current.token).call(
        "PUT", path("v1", "me", "follows", handle), body={"channels": channels}
    )
    if not reply.ok:
        return await follows_page(
            request,
            current,
            form={"handle": handle, "channels": channels},
            error=reply.refused(),
            status=reply.status,
        )
    raise Redirect(
        back_to(form, "/app/follows", "saved" if form.get("done") == "saved" else "followed")
    )


@router.post("/app/follows/{handle}/unfollow")
async def unfollow(handle: str, request: Request) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    if not forms.is_handle(handle):
        raise Refused(404, "no_such_account", "There is no such account.", None)
    reply = await JsonApi(request, current.token).call(
        "DELETE", path("v1", "me", "follows", handle)
    )
    if not reply.ok:
        return await follows_page(request, current, error=reply.refused(), status=reply.status)
    raise Redirect(back_to(form, "/app/follows", "unfollowed"))


async def me_page(
    request: Request,
    current: Session,
    *,
    me: MeOut | None = None,
    error: ApiError | None = None,
    status: int = 200,
    secret: str | None = None,
) -> Response:
    if me is None:
        me = (await JsonApi(request, current.token).get("/v1/me")).value(MeOut)
    return render(
        request,
        "app/me.html",
        status=status,
        title="Contact points",
        section="me",
        session=current,
        me=me,
        channels=keys.CHANNELS,
        error=error,
        secret=secret,
    )


@router.get("/app/me")
async def me(request: Request) -> Response:
    return await me_page(request, await session.require(request))


@router.post("/app/me")
async def update_me(request: Request) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    body: dict[str, Any] = {
        "email": form.optional("email"),
        "phone": form.optional("phone"),
        "webhook_url": form.optional("webhook_url"),
        "dm_channels": [c for c in form.getall("dm_channels") if c in keys.CHANNELS],
    }
    if form.optional("display_name"):
        body["display_name"] = form.get("display_name").strip()
    reply = await JsonApi(request, current.token).call("PATCH", "/v1/me", body=body)
    if not reply.ok:
        typed = MeOut(
            id="",
            handle=current.handle,
            kind="person",
            role=current.account.role,  # type: ignore[arg-type]
            display_name=form.get("display_name"),
            email=body["email"],
            phone=body["phone"],
            webhook_url=body["webhook_url"],
            dm_channels=body["dm_channels"],
            followers_count=0,
            active=True,
        )
        return await me_page(request, current, me=typed, error=reply.refused(), status=reply.status)
    updated = reply.value(MeOut)
    if updated.webhook_secret:  # shown once, now: it is never shown again
        return await me_page(request, current, me=updated, secret=updated.webhook_secret)
    raise Redirect("/app/me?notice=saved")


# --- named tokens ---------------------------------------------------------------------------
async def tokens_page(
    request: Request,
    current: Session,
    *,
    made: NamedTokenOut | None = None,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    listed = (await JsonApi(request, current.token).get("/v1/me/tokens")).value(list[NamedTokenOut])
    return render(
        request,
        "app/tokens.html",
        status=status,
        title="Tokens for scripts",
        section="me",
        session=current,
        tokens=listed,
        made=made,
        error=error,
    )


@router.get("/app/me/tokens")
async def my_tokens(request: Request) -> Response:
    return await tokens_page(request, await session.require(request))


@router.post("/app/me/tokens")
async def make_token(request: Request) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    body: dict[str, Any] = {"name": form.get("name")}
    if form.optional("expires_in_days"):
        days = form.get("expires_in_days").strip()
        body["expires_in_days"] = int(days) if days.isdigit() else days
    reply = await JsonApi(request, current.token).call("POST", "/v1/me/tokens", body=body)
    if not reply.ok:
        return await tokens_page(request, current, error=reply.refused(), status=reply.status)
    return await tokens_page(request, current, made=reply.value(NamedTokenOut), status=201)


@router.post("/app/me/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: str) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    reply = await JsonApi(request, current.token).call(
        "DELETE", path("v1", "me", "tokens", token_id)
    )
    if not reply.ok:
        return await tokens_page(request, current, error=reply.refused(), status=reply.status)
    raise Redirect("/app/me/tokens?notice=token_revoked")
