"""Web sessions: the token in a cookie, and CSRF protection for every form that changes state.

Signing in stores `<nonce>.<token, base64url>` in the `muster_session` cookie: HttpOnly (no
script reads it), SameSite=Strict (no other site's page sends it), Secure when the request
came over https, Path=/app. The nonce is fresh at each sign-in; a form's CSRF token is
HMAC-SHA256(token, nonce): it differs per session, nothing is stored for it, and a page that
leaks it leaks neither the token nor another session's CSRF token. Every POST also refuses a
browser's `Sec-Fetch-Site: cross-site | same-site`.

A session that company sign-in made (company.py) holds a named token of the person, which
signing out revokes (`discard`); a pasted token is only forgotten by this browser.

The sign-in form itself is protected the same way (so no site can sign a visitor into the
attacker's account): GET /app/signin sets a random `muster_signin` cookie, and the form must
send it back in a hidden field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Request
from starlette.responses import Response

from muster import keys
from muster.api import accounts, writes
from muster.api.state import state
from muster.api.tokens import TokenCache
from muster.api.web.forms import Form
from muster.api.web.html import Redirect
from muster.connection import text
from muster.errors import Forbidden
from muster.records import Account, named_token_of

COOKIE = "muster_session"
SIGNIN_COOKIE = "muster_signin"
PATH = "/app"
MAX_AGE_S = 14 * 24 * 3600
SIGNIN_TOKEN_NAME = "web sign-in via "  # noqa: S105 - a name, not a secret
"""How the named tokens company sign-in makes for a session are named (+ the issuer's host):
signing out revokes a session's token only when it is one of these, never a token a person
made for a script and pasted into the sign-in form."""
SIGNIN_MAX_AGE_S = 3600


@dataclass(frozen=True, slots=True)
class Session:
    account: Account
    token: str
    csrf: str

    @property
    def handle(self) -> str:
        return self.account.handle


def csrf_token(token: str, nonce: str) -> str:
    return hmac.new(token.encode(), b"muster-csrf:" + nonce.encode(), hashlib.sha256).hexdigest()


def _pack(nonce: str, token: str) -> str:
    return f"{nonce}.{base64.urlsafe_b64encode(token.encode()).decode().rstrip('=')}"


def _unpack(value: str) -> tuple[str, str] | None:
    nonce, _, encoded = value.partition(".")
    if not nonce or not encoded:
        return None
    try:
        token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (nonce, token) if token else None


async def current(request: Request) -> Session | None:
    """The signed-in person, or None (no cookie, a token that no longer works, not a person)."""
    unpacked = _unpack(request.cookies.get(COOKIE, ""))
    if unpacked is None:
        return None
    nonce, token = unpacked
    tokens: TokenCache = request.app.state.muster.tokens
    account = await tokens.account_for(token)
    if account is None or account.kind != "person" or not account.active:
        return None
    return Session(account=account, token=token, csrf=csrf_token(token, nonce))


def signin_url(request: Request) -> str:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return f"{PATH}/signin?next={quote(target, safe='')}"


async def require(request: Request, *, admin: bool = False) -> Session:
    """The session, or a redirect to the sign-in page (which comes back here after)."""
    session = await current(request)
    if session is None:
        raise Redirect(signin_url(request))
    if admin and not session.account.is_admin:
        raise Forbidden("This page is for administrators.", code="admin_only")
    return session


def same_origin_only(request: Request) -> None:
    """Browsers say where a request comes from; only this origin may post forms here."""
    if request.headers.get("sec-fetch-site") in {"cross-site", "same-site"}:
        raise Forbidden("Forms may only be sent from this site.", code="cross_site")


def check_csrf(request: Request, session: Session, form: Form) -> None:
    same_origin_only(request)
    if not hmac.compare_digest(form.get("csrf").encode(), session.csrf.encode()):
        raise Forbidden(
            "This form has expired or did not come from this site; reload the page and retry.",
            code="csrf",
        )


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start(request: Request, response: Response, token: str) -> None:
    """Sign in: a fresh nonce (so a fresh CSRF token), the sign-in cookie gone."""
    response.set_cookie(
        COOKIE,
        _pack(secrets.token_urlsafe(16), token),
        max_age=MAX_AGE_S,
        path=PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(SIGNIN_COOKIE, path=PATH, httponly=True, samesite="strict")


async def discard(request: Request, current: Session) -> None:
    """Signing out of a session company sign-in made: revoke its named token (in every api
    process before this returns), so a copy of the cookie stops working too."""
    st = state(request)
    holder = await st.redis.get(keys.token(accounts.hash_token(current.token)))
    handle, _, token_id = text(holder).partition("/") if holder is not None else ("", "", "")
    if not token_id:
        return
    partition = keys.partition_of(handle, st.settings.partitions)
    stored = await st.redis.hget(keys.api_tokens(partition, handle), token_id)
    if stored is not None and named_token_of(stored).name.startswith(SIGNIN_TOKEN_NAME):
        await writes.revoke_named_token(st, handle, token_id)


def end(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path=PATH, secure=_secure(request), httponly=True, samesite="strict"
    )


def signin_nonce(request: Request) -> str:
    """The sign-in form's CSRF value: the browser's `muster_signin` cookie, or a new one."""
    value = request.cookies.get(SIGNIN_COOKIE, "")
    return value if 20 <= len(value) <= 64 and value.isascii() else secrets.token_urlsafe(24)


def keep_signin_nonce(request: Request, response: Response, nonce: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        nonce,
        max_age=SIGNIN_MAX_AGE_S,
        path=PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def check_signin_csrf(request: Request, form: Form) -> None:
    same_origin_only(request)
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    if not cookie or not hmac.compare_digest(form.get("csrf").encode(), cookie.encode()):
        raise Forbidden(
            "The sign-in form expired or did not come from this site; reload it and retry.",
            code="csrf",
        )
