"""The web app's admin pages: accounts (create, search, reset a token, deactivate and
reactivate, a person's manager), posters, enrolments, dead letters (escalation policies:
muster.api.web.policies).

Accounts, posters and enrolments go through the JSON API in-process like every other page.
Two things have no JSON route, so these pages use what the CLI uses on the same Redis: the
`all_members` enrolment rules (writeside.enrolment_rules, read only) and dead letters (muster.dlq,
whose blocking client runs in a worker thread). A dead letter's payload is never shown, only
its event type: it may be a DM, whose text is for its recipient alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
import redis
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from muster import dlq, keys
from muster.api.schemas import (
    AccountCreatedOut,
    AccountSummary,
    EnrolmentOut,
    PostersOut,
    TokenOut,
)
from muster.api.state import state
from muster.api.web import forms, session
from muster.api.web.html import Redirect, WebRoute, render
from muster.api.web.inprocess import JsonApi, Refused, path
from muster.api.web.session import Session
from muster.connection import sync_client
from muster.errors import ApiError
from muster.settings import Settings
from muster.writeside import enrolment_rules

router = APIRouter(route_class=WebRoute, include_in_schema=False)

T = TypeVar("T")
PAGE = 50
HandleQuery = Annotated[str | None, Query(pattern=r"^@?[A-Za-z0-9_]{0,31}$")]


@router.get("/app/admin")
async def admin_home(request: Request) -> Response:
    await session.require(request, admin=True)
    raise Redirect("/app/admin/accounts")


# --- accounts -------------------------------------------------------------------------------
async def accounts_page(
    request: Request,
    current: Session,
    after: str | None = None,
    *,
    q: str | None = None,
    form: dict[str, str] | None = None,
    manager_form: dict[str, str] | None = None,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    api = JsonApi(request, current.token)
    query = {"q": q} if q else {}
    found = (await api.get("/v1/accounts", limit=PAGE, after=after, **query)).value(
        list[AccountSummary]
    )
    return render(
        request,
        "admin/accounts.html",
        status=status,
        title="Accounts",
        section="admin",
        tab="accounts",
        session=current,
        accounts=found,
        after=after,
        q=q or "",
        more=found[-1].handle if len(found) == PAGE else None,
        form=form or {"handle": "", "kind": "person", "role": "member"},
        manager_form=manager_form or {"handle": "", "manager": ""},
        error=error,
    )


@router.get("/app/admin/accounts")
async def accounts(
    request: Request,
    after: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,30}$")] = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    current = await session.require(request, admin=True)
    return await accounts_page(request, current, after, q=(q or "").strip() or None)


@router.post("/app/admin/accounts/{handle}/token")
async def reset_token(request: Request, handle: str) -> Response:
    """A new token for a person or service, shown once; the old one stops working at once."""
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    reply = await JsonApi(request, current.token).call(
        "POST", path("v1", "accounts", handle, "token")
    )
    if not reply.ok:
        return await accounts_page(request, current, error=reply.refused(), status=reply.status)
    return render(
        request,
        "admin/token.html",
        title=f"New token for @{handle}",
        section="admin",
        tab="accounts",
        session=current,
        handle=handle,
        token=reply.value(TokenOut).token,
    )


@router.post("/app/admin/accounts/{handle}/active")
async def set_active(request: Request, handle: str) -> Response:
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    active = form.get("active") == "1"
    reply = await JsonApi(request, current.token).call(
        "PATCH", path("v1", "accounts", handle), body={"active": active}
    )
    if not reply.ok:
        return await accounts_page(request, current, error=reply.refused(), status=reply.status)
    raise Redirect(f"/app/admin/accounts?notice={'reactivated' if active else 'deactivated'}")


@router.post("/app/admin/managers")
async def set_manager(request: Request) -> Response:
    """A person's manager (PATCH /v1/accounts/{handle} {manager}); an empty manager removes it."""
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    person, manager = forms.handle(form.get("handle")), forms.handle(form.get("manager"))
    kept = {"handle": person, "manager": manager}
    if not forms.is_handle(person):
        error = Refused(422, "invalid_handle", "Give the person's handle.", "person")
        return await accounts_page(request, current, manager_form=kept, error=error, status=422)
    reply = await JsonApi(request, current.token).call(
        "PATCH", path("v1", "accounts", person), body={"manager": manager or None}
    )
    if not reply.ok:
        return await accounts_page(
            request, current, manager_form=kept, error=reply.refused(), status=reply.status
        )
    raise Redirect("/app/admin/accounts?notice=manager_saved")


@router.post("/app/admin/accounts")
async def create_account(request: Request) -> Response:
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    kind = form.get("kind", "person")
    body: dict[str, Any] = {"handle": forms.handle(form.get("handle")), "kind": kind}
    for name in ("display_name", "email", "phone", "webhook_url"):
        if form.optional(name):
            body[name] = form.get(name).strip()
    if kind == "person":
        body["role"] = form.get("role", "member")
    reply = await JsonApi(request, current.token).call("POST", "/v1/accounts", body=body)
    if not reply.ok:
        kept = {name: form.get(name) for name in form.values if name != "csrf"}
        return await accounts_page(
            request, current, form=kept, error=reply.refused(), status=reply.status
        )
    created = reply.value(AccountCreatedOut)
    return render(
        request,
        "admin/created.html",
        title=f"Created @{created.handle}",
        section="admin",
        tab="accounts",
        session=current,
        created=created,
    )


# --- posters --------------------------------------------------------------------------------
async def posters_page(
    request: Request,
    current: Session,
    team: str,
    *,
    error: ApiError | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
) -> Response:
    found: PostersOut | None = None
    if team and error is None:
        reply = await JsonApi(request, current.token).get(path("v1", "accounts", team, "posters"))
        if reply.ok:
            found = reply.value(PostersOut)
        else:
            error, status = reply.refused(), reply.status
    return render(
        request,
        "admin/posters.html",
        status=status,
        title="Posters",
        section="admin",
        tab="posters",
        session=current,
        team=team,
        found=found,
        form=form or {"team": team, "handle": ""},
        error=error,
    )


@router.get("/app/admin/posters")
async def posters(request: Request, team: HandleQuery = None) -> Response:
    current = await session.require(request, admin=True)
    return await posters_page(request, current, forms.handle(team or ""))


@router.post("/app/admin/posters")
async def change_poster(request: Request) -> Response:
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    team, person = forms.handle(form.get("team")), forms.handle(form.get("handle"))
    grant = form.get("action") != "revoke"
    if not (forms.is_handle(team) and forms.is_handle(person)):
        error = Refused(422, "invalid_handle", "Give the team's and the person's handles.", None)
        kept = {"team": team, "handle": person}
        return await posters_page(request, current, "", error=error, status=422, form=kept)
    reply = await JsonApi(request, current.token).call(
        "PUT" if grant else "DELETE", path("v1", "accounts", team, "posters", person)
    )
    if not reply.ok:
        kept = {"team": team, "handle": person}
        return await posters_page(
            request, current, team, error=reply.refused(), status=reply.status, form=kept
        )
    notice = "granted" if grant else "revoked"
    raise Redirect(f"/app/admin/posters?team={team}&notice={notice}")


# --- enrolments -----------------------------------------------------------------------------
async def enrolments_page(
    request: Request,
    current: Session,
    *,
    form: dict[str, Any] | None = None,
    error: ApiError | None = None,
    status: int = 200,
    done: EnrolmentOut | None = None,
) -> Response:
    st = state(request)
    found = await enrolment_rules(st.redis, st.settings.partitions)
    rules = sorted(found.values(), key=lambda rule: rule.account)
    return render(
        request,
        "admin/enrolments.html",
        status=status,
        title="Enrolments",
        section="admin",
        tab="enrolments",
        session=current,
        rules=rules,
        channels=keys.CHANNELS,
        form=form or {"account": "", "followers": "", "all": False, "channels": ["app"]},
        error=error,
        done=done,
    )


@router.get("/app/admin/enrolments")
async def enrolments(request: Request) -> Response:
    return await enrolments_page(request, await session.require(request, admin=True))


@router.post("/app/admin/enrolments")
async def enrol(request: Request) -> Response:
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    account = forms.handle(form.get("account"))
    everyone = form.get("all") == "1"
    channels = [c for c in form.getall("channels") if c in keys.CHANNELS]
    kept: dict[str, Any] = {
        "account": account,
        "followers": form.get("followers"),
        "all": everyone,
        "channels": channels,
        "mandatory": form.get("mandatory") == "1",
    }
    followers: Any = "all_members" if everyone else forms.handles(form.get("followers"))
    if not forms.is_handle(account) or (not everyone and not followers):
        error = Refused(
            422, "invalid_enrolment", "Name the account, and who follows it (or all members).", None
        )
        return await enrolments_page(request, current, form=kept, error=error, status=422)
    body = {"followers": followers, "channels": channels, "mandatory": kept["mandatory"]}
    reply = await JsonApi(request, current.token).call(
        "PUT", path("v1", "accounts", account, "enrolments"), body=body
    )
    if not reply.ok:
        return await enrolments_page(
            request, current, form=kept, error=reply.refused(), status=reply.status
        )
    return await enrolments_page(request, current, done=reply.value(EnrolmentOut))


# --- dead letters ---------------------------------------------------------------------------
def _event_type(payload: bytes | None) -> str:
    if payload is None:
        return "(no payload)"
    try:
        decoded = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return "(unreadable)"
    kind = decoded.get("type") if isinstance(decoded, dict) else None
    return str(kind) if kind else "(unknown)"


async def _blocking(settings: Settings, work: Callable[[redis.Redis], T]) -> T:
    """Run muster.dlq's blocking calls in a worker thread, on a client of their own."""

    def run() -> T:
        with sync_client(settings) as client:
            return work(client)

    return await asyncio.to_thread(run)


@router.get("/app/admin/dead-letters")
async def dead_letters(request: Request) -> Response:
    current = await session.require(request, admin=True)
    settings = state(request).settings
    letters = await _blocking(
        settings, lambda client: dlq.list_dead_letters(client, settings.partitions, limit=200)
    )
    rows = [(letter, _event_type(letter.payload)) for letter in letters]
    return render(
        request,
        "admin/dead_letters.html",
        title="Dead letters",
        section="admin",
        tab="dead-letters",
        session=current,
        rows=rows,
    )


@router.post("/app/admin/dead-letters")
async def redrive(request: Request) -> Response:
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    settings = state(request).settings
    refs: set[str] | None = None if form.get("all") == "1" else set(form.getall("ref"))
    if refs is not None and not refs:
        raise Refused(422, "nothing_chosen", "Choose the dead letters to send back.", "ref")
    await _blocking(settings, lambda client: dlq.redrive(client, settings.partitions, refs))
    raise Redirect("/app/admin/dead-letters?notice=redriven")
