"""Company sign-in (OpenID Connect) for the web app: /app/oidc/start and /app/oidc/callback.

`start` makes a sign-in under way: a random `state`, the ID token's `nonce` and the PKCE
verifier (records.OidcFlow), kept in Redis under the state's SHA-256 for ten minutes
(keys.oidc_flow), and the state itself in the `muster_oidc` cookie of this browser
(HttpOnly, SameSite=Lax so that it comes back on the provider's cross-site redirect, Secure
over https, Path=/app/oidc); then it sends the browser to the provider (muster.api.oidc).

`callback` takes the record back exactly once (GETDEL) and only if the `state` the provider
returned is the one this browser's cookie holds, so a callback URL replayed, forged, or
opened in another browser signs nobody in. With the identity the provider proved, it finds
the person by the verified address (accounts.with_email; the write side keeps the index),
or creates a member account for an address of MUSTER_OIDC_ALLOWED_DOMAINS through the same
write path as POST /v1/accounts. A deactivated account, a team or service, or an address
two accounts share is refused. The session is a named token (writes.create_named_token)
that expires with the session cookie; signing out revokes it (signin.py).

Every refusal is a page saying what happened and linking back to sign-in; none creates
anything. The callback answers a small page that moves on to the app by itself rather than a
redirect: the session cookie is SameSite=Strict, and RFC 6265bis has browsers withhold such
cookies for the rest of a redirect chain that passed through another site (Chromium does not
enforce that yet), so the next page is loaded from here, as a same-site navigation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from muster import keys
from muster.api import accounts, writes
from muster.api.oidc import Identity, RelyingParty
from muster.api.schemas import CreateAccount
from muster.api.state import ApiState, state
from muster.api.web import session
from muster.api.web.html import WebRoute, render
from muster.api.web.signin import safe_next
from muster.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound
from muster.records import Account, decode_flow, email_key, encode_flow

log = structlog.get_logger("muster.api.web.company")
router = APIRouter(route_class=WebRoute, include_in_schema=False)

FLOW_COOKIE = "muster_oidc"
FLOW_PATH = "/app/oidc"
_HANDLE_CHARS = re.compile(r"[^a-z0-9_]+")
_HANDLE_TRIES = 20
_PROVIDER_TEXT_MAX = 200


def _party(request: Request) -> RelyingParty:
    party = state(request).oidc
    if party is None:
        raise NotFound("Company sign-in is not configured here.", code="oidc_off")
    return party


def _flow_key(state_value: str) -> str:
    return keys.oidc_flow(hashlib.sha256(state_value.encode()).hexdigest())


def _refusal(request: Request, exc: ApiError) -> Response:
    response = render(
        request,
        "app/signin_refused.html",
        status=exc.status,
        title="Company sign-in did not work",
        message=exc.message,
    )
    _forget_flow(request, response)
    return response


def _forget_flow(request: Request, response: Response) -> None:
    response.delete_cookie(
        FLOW_COOKIE,
        path=FLOW_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )


@router.get("/app/oidc/start")
async def start(request: Request, next: str = "/app") -> Response:
    try:
        party = _party(request)
        if await session.current(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        url, state_value, flow = await party.begin(safe_next(next))
    except ApiError as exc:
        return _refusal(request, exc)
    await state(request).redis.set(
        _flow_key(state_value), encode_flow(flow), ex=keys.OIDC_FLOW_TTL_S
    )
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        state_value,
        max_age=keys.OIDC_FLOW_TTL_S,
        path=FLOW_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/app/oidc/callback")
async def callback(request: Request) -> Response:
    try:
        account, token, target = await _sign_in(request)
    except ApiError as exc:
        log.info("company sign-in refused", code=exc.code, status=exc.status)
        return _refusal(request, exc)
    response = render(request, "app/signin_continue.html", title="Signed in", target=target)
    _forget_flow(request, response)
    session.start(request, response, token)
    log.info("company sign-in", handle=account.handle)
    return response


async def _sign_in(request: Request) -> tuple[Account, str, str]:
    party = _party(request)
    params = request.query_params
    returned = params.get("state", "")
    if not returned:
        raise BadRequest(
            "The identity provider's answer carries no state, so it cannot be matched to a "
            "sign-in started here.",
            code="oidc_state_missing",
        )
    kept = request.cookies.get(FLOW_COOKIE, "")
    if not kept or not hmac.compare_digest(kept.encode(), returned.encode()):
        raise BadRequest(
            "This sign-in was not started in this browser, or it took longer than ten "
            "minutes. Start again from the sign-in page.",
            code="oidc_state_mismatch",
        )
    raw = await state(request).redis.getdel(_flow_key(returned))
    if raw is None:
        raise BadRequest(
            "This sign-in was already used or has expired; each one works once. Start "
            "again from the sign-in page.",
            code="oidc_state_used",
        )
    flow = decode_flow(raw)
    if "error" in params:
        error = params.get("error", "")[:_PROVIDER_TEXT_MAX]
        detail = params.get("error_description", "")[:_PROVIDER_TEXT_MAX]
        raise Forbidden(
            f"Your identity provider did not sign you in ({error}{': ' + detail if detail else ''}).",
            code="oidc_provider_error",
        )
    code = params.get("code", "")
    if not code:
        raise BadRequest(
            "The identity provider's answer carries no authorization code.",
            code="oidc_code_missing",
        )
    identity = await party.finish(code, flow)
    account = await _account_for(request, identity)
    token = await _session_token(state(request), account, identity)
    return account, token, flow.next


async def _account_for(request: Request, identity: Identity) -> Account:
    st = state(request)
    found = await accounts.with_email(st.redis, identity.address, st.settings.partitions)
    if len(found) > 1:
        handles = ", ".join("@" + a.handle for a in found)
        raise Forbidden(
            f"More than one account has the address {identity.address} ({handles}), so "
            "Muster cannot tell which is yours. Ask your administrator to fix the addresses.",
            code="oidc_ambiguous",
        )
    if not found:
        return _usable(await _create_member(st, identity), identity)
    return _usable(found[0], identity)


def _usable(account: Account, identity: Identity) -> Account:
    if account.kind != "person":
        raise Forbidden(
            f"The address {identity.address} belongs to @{account.handle}, a {account.kind}; "
            "the web app is for people.",
            code="oidc_not_a_person",
        )
    if not account.active:
        raise Forbidden(
            f"The account @{account.handle} is deactivated. Ask your administrator.",
            code="oidc_deactivated",
        )
    return account


async def _create_member(st: ApiState, identity: Identity) -> Account:
    """A member account for an allowed domain, through POST /v1/accounts' write path; one
    per address even when two first sign-ins race (keys.oidc_creating)."""
    domain = identity.address.rpartition("@")[2].lower()
    if domain not in st.settings.oidc_allowed_domains:
        raise Forbidden(
            f"No Muster account has the address {identity.address}. Ask your administrator "
            "to create one with that address, then sign in again.",
            code="oidc_no_account",
        )
    claim = keys.oidc_creating(hashlib.sha256(email_key(identity.address).encode()).hexdigest())
    if not await st.redis.set(claim, "1", nx=True, ex=keys.OIDC_CREATING_TTL_S):
        raise Conflict(
            f"Another sign-in is creating the account of {identity.address} right now. "
            "Try again in a moment.",
            code="oidc_creating",
        )
    try:
        made = await accounts.with_email(st.redis, identity.address, st.settings.partitions)
        if made:  # the sign-in that held the claim before us made it
            return made[0]
        return await _create(st, identity, domain)
    finally:
        await st.redis.delete(claim)


async def _create(st: ApiState, identity: Identity, domain: str) -> Account:
    local = identity.address.rpartition("@")[0].lower()
    base = _HANDLE_CHARS.sub("_", local).strip("_")[:30] or "person"
    for attempt in range(_HANDLE_TRIES):
        suffix = "" if attempt == 0 else f"_{attempt + 1}"
        handle = base[: 30 - len(suffix)] + suffix
        request = CreateAccount(
            handle=handle,
            kind="person",
            display_name=(identity.name or local)[:100],
            email=identity.address,
        )
        try:
            account, _ = await writes.create_account(st, "system", request, "member")
        except Conflict as exc:
            if exc.code != "handle_taken":
                raise
            continue
        log.info("account created at company sign-in", handle=handle, domain=domain)
        return account
    raise Forbidden(
        f"Muster could not find a free handle for {identity.address}. Ask your administrator "
        "to create your account.",
        code="oidc_no_handle",
    )


async def _session_token(st: ApiState, account: Account, identity: Identity) -> str:
    """A named token for this browser session, expiring with the session cookie."""
    host = urlsplit(identity.issuer).hostname or identity.issuer
    expires = datetime.now(UTC) + timedelta(seconds=session.MAX_AGE_S)
    _, token = await writes.create_named_token(
        st, account, f"{session.SIGNIN_TOKEN_NAME}{host}", expires_at=expires
    )
    return token
