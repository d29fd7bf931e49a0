"""Signing in to the web app (by pasting a token, or with the company's identity provider
when one is configured: company.py) and out.

A token is what Muster gives people (an admin creates the account and hands it over); a
self-hosted install may have no mail server, so there are no magic links. The token is
checked like any bearer token (tokens.TokenCache) and kept in the session cookie
(session.py); only people sign in (a service's token belongs in its configuration).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from muster.api.state import state
from muster.api.tokens import TokenCache
from muster.api.web import forms, session
from muster.api.web.html import Redirect, WebRoute, render

router = APIRouter(route_class=WebRoute, include_in_schema=False)

_NEXT = re.compile(r"^/app(/[A-Za-z0-9_@/.-]*)?(\?[A-Za-z0-9_=&%.-]*)?$")


def safe_next(value: str) -> str:
    """Only a page of this app (never `//elsewhere`, never another scheme)."""
    return value if _NEXT.fullmatch(value) and "//" not in value else "/app"


def provider_label(request: Request) -> str | None:
    """What the company sign-in button says after "Sign in with"; None when it is off."""
    settings = state(request).settings
    if settings.oidc_issuer is None:
        return None
    return settings.oidc_name or urlsplit(settings.oidc_issuer).hostname or "your company"


def _form_page(
    request: Request, target: str, *, error: str | None = None, status: int = 200
) -> Response:
    nonce = session.signin_nonce(request)
    response = render(
        request,
        "app/signin.html",
        status=status,
        title="Sign in",
        csrf=nonce,
        next=target,
        error=error,
        company=provider_label(request),
    )
    session.keep_signin_nonce(request, response, nonce)
    return response


@router.get("/app/signin")
async def signin_form(request: Request, next: str = "/app") -> Response:
    if await session.current(request) is not None:
        raise Redirect(safe_next(next))
    return _form_page(request, safe_next(next))


@router.post("/app/signin")
async def signin(request: Request) -> Response:
    form = await forms.read(request)
    session.check_signin_csrf(request, form)
    target = safe_next(form.get("next", "/app"))
    token = form.get("token").strip()
    tokens: TokenCache = request.app.state.muster.tokens
    account = await tokens.account_for(token) if token else None
    if account is None:
        return _form_page(
            request, target, error="That token is not known. Check it and try again.", status=401
        )
    if not account.active:
        return _form_page(
            request,
            target,
            error=f"@{account.handle} is deactivated. Ask an administrator to reactivate it.",
            status=403,
        )
    if account.kind != "person":
        return _form_page(
            request,
            target,
            error=f"@{account.handle} is a {account.kind}; the web app is for people.",
            status=403,
        )
    response = RedirectResponse(target, status_code=303)
    session.start(request, response, token)
    return response


@router.post("/app/signout")
async def signout(request: Request) -> Response:
    form = await forms.read(request)
    current = await session.current(request)
    if current is not None:
        session.check_csrf(request, current, form)
        await session.discard(request, current)
    response = RedirectResponse("/app/signin?notice=signedout", status_code=303)
    session.end(request, response)
    return response
