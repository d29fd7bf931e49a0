"""The web app's roll-call report, live, and what its runners do from it.

The report page (/app/rollcalls/{id}) shows the counts, who needs help (each with "Mark handled"), who has not answered, and the counts per
team and per manager (that column only where accounts have managers), with close, extend
and remind (remind only once the JSON API has that route). Its script follows
/app/rollcalls/{id}/stream (GET /v1/rollcalls/{id}/stream's hub, by session cookie); a
reload shows the same without it.

Everything goes through the JSON API in-process (inprocess.JsonApi), like the other pages,
but the stream, which joins the roll-call hub after the same check (as live.py does).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from muster.api import rollcallhub, rollcalls
from muster.api.schemas import RollCallGroupOut, RollCallOut, RollCallRecipientOut
from muster.api.state import state
from muster.api.web import forms, session
from muster.api.web.headers import harden
from muster.api.web.html import Redirect, WebRoute, render
from muster.api.web.inprocess import JsonApi, Refused, path
from muster.api.web.names import faces
from muster.api.web.session import Session
from muster.api.web.timeline import has_route
from muster.events import utcnow
from muster.views import Post, rfc3339

router = APIRouter(route_class=WebRoute, include_in_schema=False)

RollCallId = Annotated[str, Path(pattern=r"^[0-9]{1,19}$")]
PersonHandle = Annotated[str, Path(pattern=r"^[a-z0-9_]{1,30}$")]
LIST = 50
"""People listed per section of the report page (the export has everyone)."""
REFRESH_LISTS_MAX = 5000
"""Up to this many people asked, the page's script re-fetches the page for fresh lists as
answers come (each fetch reads every answer); above, the lists refresh on reload."""


async def _report(request: Request, current: Session, rollcall_id: str) -> RollCallOut:
    """The report, or 404 to someone who does not run the roll-call."""
    api = JsonApi(request, current.token)
    report = (await api.get(path("v1", "rollcalls", rollcall_id))).value(RollCallOut)
    if report.counts is None:
        raise Refused(404, "no_such_rollcall", "There is no such roll-call.", None)
    return report


@router.get("/app/rollcalls/{rollcall_id}")
async def report_page(rollcall_id: RollCallId, request: Request) -> Response:
    current = await session.require(request)
    api = JsonApi(request, current.token)
    report = await _report(request, current, rollcall_id)
    post = (await api.get(path("v1", "posts", rollcall_id))).value(Post)
    base = path("v1", "rollcalls", rollcall_id)
    help_open = (await api.get(f"{base}/recipients", status="help_open", limit=LIST)).value(
        list[RollCallRecipientOut]
    )
    waiting = (await api.get(f"{base}/recipients", status="unanswered", limit=LIST)).value(
        list[RollCallRecipientOut]
    )
    teams = (await api.get(f"{base}/groups", by="team")).value(list[RollCallGroupOut])
    managers = (await api.get(f"{base}/groups", by="manager")).value(list[RollCallGroupOut])
    shown = [post.as_account, post.author, *(r.handle for r in [*help_open, *waiting])]
    shown += [g.group for g in [*teams, *managers] if g.group]
    counts = report.counts
    assert counts is not None
    return render(
        request,
        "app/rollcall.html",
        title="Roll-call report",
        section="home",
        wide=True,
        session=current,
        post=post,
        report=report,
        counts=counts,
        not_answered=counts.targeted - counts.answered,
        percent=round(100 * counts.accounted_for / counts.targeted) if counts.targeted else 0,
        labels={o.key: o.label for o in report.options},
        help_open=help_open,
        waiting=waiting,
        teams=teams,
        managers=managers,
        can_remind=has_route(request, "POST", f"{base}/remind"),
        live_url=f"/app/rollcalls/{rollcall_id}/stream" if report.state == "open" else None,
        refresh_lists=counts.targeted <= REFRESH_LISTS_MAX,
        faces=await faces(request, shown),
        list_size=LIST,
    )


async def _act(
    request: Request, rollcall_id: str, tail: str, body: dict[str, Any] | None, notice: str
) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    reply = await JsonApi(request, current.token).call(
        "POST", path("v1", "rollcalls", rollcall_id) + tail, body=body
    )
    if not reply.ok:
        raise reply.refused()
    raise Redirect(f"/app/rollcalls/{rollcall_id}?notice={notice}")


@router.post("/app/rollcalls/{rollcall_id}/handled/{handle}")
async def handled(rollcall_id: RollCallId, handle: PersonHandle, request: Request) -> Response:
    return await _act(request, rollcall_id, f"/help/{handle}/handled", {}, "help_handled")


@router.post("/app/rollcalls/{rollcall_id}/close")
async def close(rollcall_id: RollCallId, request: Request) -> Response:
    return await _act(request, rollcall_id, "/close", None, "rollcall_closed")


@router.post("/app/rollcalls/{rollcall_id}/remind")
async def remind(rollcall_id: RollCallId, request: Request) -> Response:
    return await _act(request, rollcall_id, "/remind", {}, "rollcall_reminded")


@router.post("/app/rollcalls/{rollcall_id}/extend")
async def extend(rollcall_id: RollCallId, request: Request) -> Response:
    """The deadline `minutes` later (from now, if it has passed)."""
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    report = await _report(request, current, rollcall_id)
    minutes = form.get("minutes")
    ahead = int(minutes) if minutes.isdigit() and len(minutes) < 6 else 0
    deadline = max(datetime.fromisoformat(report.deadline.replace("Z", "+00:00")), utcnow())
    reply = await JsonApi(request, current.token).call(
        "POST",
        path("v1", "rollcalls", rollcall_id, "extend"),
        body={"deadline": rfc3339(deadline + timedelta(minutes=ahead))},
    )
    if not reply.ok:
        raise reply.refused()
    raise Redirect(f"/app/rollcalls/{rollcall_id}?notice=rollcall_extended")


@router.get("/app/rollcalls/{rollcall_id}/export")
async def export(rollcall_id: RollCallId, request: Request) -> Response:
    current = await session.require(request)
    target = path("v1", "rollcalls", rollcall_id, "export")
    reply = await JsonApi(request, current.token).get(target, format="csv")
    if not reply.ok:
        raise reply.refused()
    name = f"rollcall-{rollcall_id}.csv"
    return harden(
        Response(
            reply.body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    )


@router.get("/app/rollcalls/{rollcall_id}/stream")
async def stream(
    rollcall_id: RollCallId,
    request: Request,
) -> Response:
    """GET /v1/rollcalls/{id}/stream by session cookie (EventSource sends no bearer token)."""
    current = await session.current(request)
    if current is None:
        return harden(Response("sign in first", status_code=401, media_type="text/plain"))
    st = state(request)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, current.account, rc)
    return rollcallhub.sse(request.app.state.rollcalls, rc)
