"""The web app's posts: home timeline, composing (as yourself or a team), threads and replies,
and the delivery report of a post.

Every read and write goes through the JSON API in-process (inprocess.JsonApi); after a post
is accepted the page waits for it to be stored (readback.py) before showing where it went.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response
from starlette.routing import Match

from muster import incidents as vocabulary
from muster.api.schemas import DeliveriesOut, IncidentOut, IncidentUpdateOut, ThreadOut
from muster.api.state import state
from muster.api.web import forms, readback, session
from muster.api.web.html import Redirect, WebRoute, render
from muster.api.web.inprocess import JsonApi, Refused, path
from muster.api.web.live import stream_for
from muster.api.web.names import faces
from muster.api.web.session import Session
from muster.api.web.teams import teams_of
from muster.errors import ApiError
from muster.views import Post

router = APIRouter(route_class=WebRoute, include_in_schema=False)

PAGE = 20
Before = Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")]
_NEXT = re.compile(r"^/app(/posts/[0-9]{1,19})?$")
_IDEM = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_form(**values: str) -> dict[str, str]:
    """A blank composer: a fresh idempotency key, so a double submit posts once."""
    form = {
        "text": "",
        "as": "",
        "visibility": "",
        "severity": "info",
        "incident_title": "",
        "status": "",
        "impact": "",
        **values,
    }
    form["idem"] = values.get("idem") or secrets.token_urlsafe(18)
    return form


def composer(
    request: Request, current: Session, teams: list[str], form: dict[str, str]
) -> dict[str, Any]:
    external = current.account.role == "external"
    return {
        "teams": teams,
        "form": form,
        "external": external,
        "max_chars": state(request).settings.max_post_chars,
        "default_visibility": "public" if external else "internal",
        "statuses": vocabulary.STATUS_LABELS,
        "impacts": vocabulary.IMPACTS,
    }


async def home_page(
    request: Request,
    current: Session,
    before: str | None = None,
    *,
    form: dict[str, str] | None = None,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    stream = stream_for(request, "/app/stream", "home") if before is None else None
    api = JsonApi(request, current.token)
    posts = (await api.get("/v1/timelines/home", limit=PAGE, before=before)).value(list[Post])
    teams = await teams_of(request, current.handle)
    return render(
        request,
        "app/home.html",
        status=status,
        title="Home",
        section="home",
        session=current,
        stream=stream,
        posts=posts,
        faces=await faces(request, [*teams, *(h for p in posts for h in (p.as_account, p.author))]),
        before=before,
        older=posts[-1].id if len(posts) == PAGE else None,
        error=error,
        **composer(request, current, teams, form or new_form()),
    )


@router.get("/app")
async def home(request: Request, before: Before = None) -> Response:
    return await home_page(request, await session.require(request), before)


async def thread_page(
    request: Request,
    current: Session,
    post_id: str,
    *,
    form: dict[str, str] | None = None,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    api = JsonApi(request, current.token)
    thread = (await api.get(path("v1", "posts", post_id, "thread"))).value(ThreadOut)
    teams = await teams_of(request, current.handle)
    shown = [*thread.ancestors, thread.post, *thread.replies]
    root = shown[0]
    incident = None
    if current.account.is_admin or root.as_account in teams:
        # An incident's id is its opening post's id: a thread rooted there is the incident's.
        found = await api.call("GET", path("v1", "incidents", root.id))
        incident = found.value(IncidentOut) if found.ok else None
    return render(
        request,
        "app/thread.html",
        status=status,
        title="Thread",
        section="home",
        session=current,
        thread=thread,
        faces=await faces(request, [*teams, *(h for p in shown for h in (p.as_account, p.author))]),
        error=error,
        reports=report_links(current, teams, shown),
        incident=incident,
        **composer(request, current, teams, form or new_form()),
    )


def report_links(current: Session, teams: list[str], posts: list[Post]) -> set[str]:
    """Ids of the posts whose delivery report this person may read (the API decides again)."""
    mine = {current.handle, *teams}
    return {
        p.id
        for p in posts
        if current.account.is_admin or p.author == current.handle or p.as_account in mine
    }


@router.get("/app/posts/{post_id}")
async def thread(post_id: str, request: Request) -> Response:
    current = await session.require(request)
    if not post_id.isdigit() or len(post_id) > 19:
        raise Refused(404, "no_such_post", "There is no such post.", None)
    return await thread_page(request, current, post_id)


@router.post("/app/posts")
async def publish(request: Request) -> Response:
    """The composer's one form: a post or reply, an incident opened (an incident title given)
    or, in an incident's thread, an update with its status and impact."""
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    as_account = forms.handle(form.get("as"))
    parent = form.optional("in_reply_to")
    incident = form.optional("incident")
    idem = form.get("idem")
    headers = {"Idempotency-Key": idem} if _IDEM.fullmatch(idem) else {}
    api = JsonApi(request, current.token)
    if incident:
        updates = path("v1", "incidents", incident, "updates")
        reply = await api.call("POST", updates, body=_incident_update(form), headers=headers)
    elif form.optional("incident_title"):
        body = _incident_open(form, as_account)
        reply = await api.call("POST", "/v1/incidents", body=body, headers=headers)
    else:
        body = _post(form, as_account if as_account != current.handle else "", parent)
        reply = await api.call("POST", "/v1/posts", body=body, headers=headers)
    target = form.get("next")
    target = target if _NEXT.fullmatch(target) else "/app"
    if not reply.ok:
        kept = new_form(
            text=form.get("text"),
            visibility=form.get("visibility"),
            severity=form.get("severity", "info"),
            incident_title=form.get("incident_title"),
            status=form.get("status"),
            impact=form.get("impact"),
            idem=idem if headers else "",
            **{"as": as_account},
        )
        shown = parent or (target.rsplit("/", 1)[-1] if incident else None)
        if shown and shown.isdigit() and len(shown) <= 19:
            return await thread_page(
                request, current, shown, form=kept, error=reply.refused(), status=reply.status
            )
        return await home_page(
            request, current, form=kept, error=reply.refused(), status=reply.status
        )
    if incident:
        update = reply.value(IncidentUpdateOut)
        stored = await readback.post_stored(state(request).reader, update.id)
        done = "incident_resolved" if update.status == "resolved" else "incident_updated"
        raise Redirect(f"{target}?notice={done if stored else 'pending'}#post-{update.id}")
    if form.optional("incident_title"):
        opened = reply.value(IncidentOut)
        stored = await readback.post_stored(state(request).reader, opened.id)
        notice = "incident_opened" if stored else "pending"
        raise Redirect(f"/app/posts/{opened.id}?notice={notice}")
    post = reply.value(Post)
    stored = await readback.post_stored(state(request).reader, post.id)
    notice = "posted" if stored else "pending"
    raise Redirect(f"{target}?notice={notice}#post-{post.id}")


def _post(form: forms.Form, as_account: str, parent: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"text": form.get("text"), "severity": form.get("severity", "info")}
    if form.optional("visibility"):
        body["visibility"] = form.get("visibility")
    if as_account:
        body["as"] = as_account
    if parent:
        body["in_reply_to"] = parent
    return body


def _incident_open(form: forms.Form, as_account: str) -> dict[str, Any]:
    """Severity is left to the API, which derives it from the impact."""
    body: dict[str, Any] = {
        "as": as_account,
        "title": form.get("incident_title"),
        "status": form.get("status"),
        "impact": form.get("impact"),
        "text": form.get("text"),
    }
    if form.optional("visibility"):
        body["visibility"] = form.get("visibility")
    return body


def _incident_update(form: forms.Form) -> dict[str, Any]:
    status = "resolved" if form.has("resolve") else form.get("status")
    body: dict[str, Any] = {"status": status, "text": form.get("text")}
    if form.optional("impact"):
        body["impact"] = form.get("impact")
    return body


def has_route(request: Request, method: str, example: str) -> bool:
    """Whether this app serves `method example` (a route another part may not have yet)."""
    scope = {**request.scope, "method": method, "path": example, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)


@router.get("/app/posts/{post_id}/deliveries")
async def deliveries(
    post_id: str,
    request: Request,
    after: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,30}:[a-z]{1,10}$")] = None,
) -> Response:
    current = await session.require(request)
    if not post_id.isdigit() or len(post_id) > 19:
        raise Refused(404, "no_such_post", "There is no such post.", None)
    api = JsonApi(request, current.token)
    post = (await api.get(path("v1", "posts", post_id))).value(Post)
    report: DeliveriesOut | None = None
    target = path("v1", "posts", post_id, "deliveries")
    if has_route(request, "GET", target):
        report = (await api.get(target, limit=PAGE * 5, after=after)).value(DeliveriesOut)
    more = None
    if report is not None and len(report.recipients) == PAGE * 5:
        last = report.recipients[-1]
        more = f"{last.handle}:{last.channel}"
    return render(
        request,
        "app/deliveries.html",
        title="Delivery report",
        section="home",
        session=current,
        post=post,
        faces=await faces(
            request,
            [
                post.as_account,
                post.author,
                *(r.handle for r in (report.recipients if report else [])),
            ],
        ),
        report=report,
        more=more,
    )
