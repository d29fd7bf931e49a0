"""The web app's incident desk: open, update and resolve incidents and set components, for
each team or service a person may post as (`/app/incidents/{handle}`).

Every read and write goes through the JSON API in-process (inprocess.JsonApi), so who may
(posters of the account; admins for components), the vocabulary and the events appended are
the API's own. A component's field in an incident form is `component:<name>`; an empty
choice leaves the component as it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster import incidents as vocabulary
from muster.api.schemas import ComponentOut, IncidentOut
from muster.api.web import forms, session
from muster.api.web.html import Redirect, WebRoute, render
from muster.api.web.inprocess import JsonApi, Refused, path
from muster.api.web.names import faces
from muster.api.web.session import Session
from muster.api.web.teams import teams_of
from muster.errors import ApiError

router = APIRouter(route_class=WebRoute, include_in_schema=False)

RESOLVED_SHOWN = 5
_COMPONENT_FIELD = "component:"


def blank_open() -> dict[str, str]:
    return {"title": "", "status": "investigating", "impact": "minor", "text": "", "visibility": ""}


def _account(handle: str) -> str:
    if not forms.is_handle(handle):
        raise Refused(404, "no_such_account", "There is no such account.", None)
    return handle


async def _may_manage(request: Request, current: Session, handle: str) -> list[str]:
    """The person's teams; 403 unless they may post as `handle` or are an admin."""
    teams = await teams_of(request, current.handle)
    if handle not in teams and not current.account.is_admin:
        raise Refused(403, "not_a_poster", f"You may not post as @{handle}.", None)
    return teams


def component_states(form: forms.Form) -> dict[str, str]:
    """`component:<name>` fields with a state chosen (an empty choice: leave it as it is)."""
    return {
        name[len(_COMPONENT_FIELD) :]: values[0]
        for name, values in form.values.items()
        if name.startswith(_COMPONENT_FIELD) and values and values[0]
    }


async def desk_page(
    request: Request,
    current: Session,
    handle: str,
    *,
    form: dict[str, str] | None = None,
    error: ApiError | None = None,
    failed: str | None = None,
    status: int = 200,
) -> Response:
    """`failed`: which form the error belongs to ("open", "component" or an incident id)."""
    teams = await _may_manage(request, current, handle)
    api = JsonApi(request, current.token)
    accounts = path("v1", "accounts", handle)
    open_ = (await api.get(f"{accounts}/incidents", state="open")).value(list[IncidentOut])
    resolved = (
        await api.get(f"{accounts}/incidents", state="resolved", limit=RESOLVED_SHOWN)
    ).value(list[IncidentOut])
    components = (await api.get(f"{accounts}/components")).value(list[ComponentOut])
    return render(
        request,
        "app/incidents.html",
        status=status,
        title=f"Incidents of @{handle}",
        section="incidents",
        session=current,
        handle=handle,
        teams=teams,
        open_incidents=open_,
        resolved=resolved,
        components=components,
        faces=await faces(request, [handle, *teams]),
        form=form or blank_open(),
        error=error,
        failed=failed,
        statuses=vocabulary.STATUS_LABELS,
        impacts=vocabulary.IMPACTS,
        labels=vocabulary.COMPONENT_LABELS,
        external=current.account.role == "external",
    )


@router.get("/app/incidents")
async def index(request: Request) -> Response:
    """The accounts this person may post incidents as; straight to the one when there is one."""
    current = await session.require(request)
    teams = await teams_of(request, current.handle)
    if len(teams) == 1:
        raise Redirect(f"/app/incidents/{teams[0]}")
    return render(
        request,
        "app/incidents_index.html",
        title="Incidents",
        section="incidents",
        session=current,
        teams=teams,
        faces=await faces(request, teams),
    )


@router.get("/app/incidents/{handle}")
async def desk(handle: str, request: Request) -> Response:
    current = await session.require(request)
    return await desk_page(request, current, _account(handle))


@router.post("/app/incidents/{handle}")
async def open_incident(handle: str, request: Request) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    handle = _account(handle)
    body: dict[str, Any] = {
        "as": handle,
        "title": form.get("title"),
        "status": form.get("status"),
        "impact": form.get("impact"),
        "text": form.get("text"),
    }
    if form.optional("visibility"):
        body["visibility"] = form.get("visibility")
    states = component_states(form)
    if states:
        body["components"] = states
    reply = await JsonApi(request, current.token).call("POST", "/v1/incidents", body=body)
    if not reply.ok:
        kept = {k: form.get(k) for k in ("title", "status", "impact", "text", "visibility")}
        return await desk_page(
            request,
            current,
            handle,
            form=kept,
            error=reply.refused(),
            failed="open",
            status=reply.status,
        )
    incident = reply.value(IncidentOut)
    raise Redirect(f"/app/incidents/{handle}?notice=incident_opened#incident-{incident.id}")


@router.post("/app/incidents/{handle}/{incident_id}/updates")
async def update_incident(handle: str, incident_id: str, request: Request) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    handle = _account(handle)
    if not incident_id.isdigit() or len(incident_id) > 19:
        raise Refused(404, "no_such_incident", "There is no such incident.", None)
    status = "resolved" if form.has("resolve") else form.get("status")
    body: dict[str, Any] = {"status": status, "text": form.get("text")}
    if form.optional("impact"):
        body["impact"] = form.get("impact")
    states = component_states(form)
    if states:
        body["components"] = states
    reply = await JsonApi(request, current.token).call(
        "POST", path("v1", "incidents", incident_id, "updates"), body=body
    )
    if not reply.ok:
        return await desk_page(
            request,
            current,
            handle,
            error=reply.refused(),
            failed=incident_id,
            status=reply.status,
        )
    notice = "incident_resolved" if status == "resolved" else "incident_updated"
    raise Redirect(f"/app/incidents/{handle}?notice={notice}#incident-{incident_id}")


@router.post("/app/incidents/{handle}/components")
async def set_component(handle: str, request: Request) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    handle = _account(handle)
    name = form.get("name").strip()
    body: dict[str, Any] = {"status": form.get("status")}
    if form.has("description"):
        body["description"] = form.get("description").strip()
    if not name:
        error = Refused(422, "text_empty", "Name the component, like API or Checkout.", "name")
        return await desk_page(
            request, current, handle, error=error, failed="component", status=422
        )
    reply = await JsonApi(request, current.token).call(
        "PUT", path("v1", "accounts", handle, "components", name), body=body
    )
    if not reply.ok:
        return await desk_page(
            request,
            current,
            handle,
            error=reply.refused(),
            failed="component",
            status=reply.status,
        )
    raise Redirect(f"/app/incidents/{handle}?notice=component_saved#components")
