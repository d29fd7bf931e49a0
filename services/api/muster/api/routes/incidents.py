"""Incidents and components (JSON). Logic in muster.api.incidents."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from muster import incidents as vocabulary
from muster.api import bodies, incidents, lookups
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.publishing import Claim
from muster.api.reads import page_limit
from muster.api.routes.posts import IdempotencyKey, admit, idempotency_key_of
from muster.api.routes.reads import OPTIONAL_AUTH, Before, Limit
from muster.api.schemas import (
    ComponentOut,
    CreateIncident,
    Handle,
    IncidentOut,
    IncidentUpdateOut,
    PutComponent,
    UpdateIncident,
)
from muster.api.state import state
from muster.api.tokens import authenticate, optional_viewer
from muster.errors import Invalid

router = APIRouter(tags=["incidents"])

IncidentId = Annotated[str, Path(description="an incident id (its first update's post id)")]
ComponentPath = Annotated[str, Path(description="the component's name (1-64 characters)")]
State = Annotated[
    Literal["open", "resolved"] | None, Query(description="only open or only resolved ones")
]
_COMPONENT_NAME = re.compile(r"^[^,|\x00-\x1f\x7f]{1,64}$")


@router.post(
    "/v1/incidents",
    status_code=201,
    summary="Open an incident of a team or service (its posters; a service as itself)",
    openapi_extra=merge(body(CreateIncident), SECURED),
    responses=responds(201, IncidentOut, errors=(400, 401, 403, 404, 413, 422, 429)),
)
async def open_incident(request: Request, idempotency_key: IdempotencyKey = None) -> Response:
    st = state(request)
    caller = await authenticate(request)
    req = await bodies.read(request, CreateIncident)
    key = idempotency_key_of(idempotency_key)
    admit(st, (req.severity or vocabulary.severity_of(req.impact)) == "critical")

    async def write() -> msgspec.Struct:
        return await incidents.open_incident(st, caller, req, idempotency_key=key)

    return await _once(request, caller.handle, key, "POST /v1/incidents", req, write, 201)


@router.post(
    "/v1/incidents/{incident_id}/updates",
    status_code=202,
    summary="Post an update of an incident; `resolved` resolves it (its account's posters)",
    openapi_extra=merge(body(UpdateIncident), SECURED),
    responses=responds(202, IncidentUpdateOut, errors=(400, 401, 403, 404, 413, 422, 429)),
)
async def update_incident(
    incident_id: IncidentId, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    st = state(request)
    caller = await authenticate(request)
    req = await bodies.read(request, UpdateIncident)
    key = idempotency_key_of(idempotency_key)
    admit(st, req.severity == "critical" or req.impact == "critical")

    async def write() -> msgspec.Struct:
        return await incidents.update_incident(st, caller, incident_id, req, idempotency_key=key)

    route = f"POST /v1/incidents/{incident_id}/updates"
    return await _once(request, caller.handle, key, route, req, write, 202)


async def _once(
    request: Request,
    caller: str,
    key: str | None,
    route: str,
    req: msgspec.Struct,
    write: Callable[[], Awaitable[msgspec.Struct]],
    status: int,
) -> Response:
    """The write, once per Idempotency-Key: a retry gets the first answer (the claim in the
    caller's partition) and writes nothing (the receipt in the write's MULTI)."""
    if key is None:
        return bodies.json(await write(), status)
    claim = Claim.of(state(request), caller, key, route, req)
    earlier = await claim.begin()
    if earlier is not None:
        return bodies.raw_json(earlier, status)
    try:
        answer = bodies.encode(await write())
    except BaseException:
        await claim.release()
        raise
    await claim.done(answer)
    return bodies.raw_json(answer, status)


@router.get(
    "/v1/incidents/{incident_id}",
    summary="An incident with every update (404 when it is internal and you are not staff)",
    openapi_extra=OPTIONAL_AUTH,
    responses=responds(200, IncidentOut, errors=(401, 404)),
)
async def get_incident(incident_id: IncidentId, request: Request) -> Response:
    viewer = await optional_viewer(request)
    return bodies.json(await incidents.visible(state(request), incident_id, viewer))


@router.get(
    "/v1/accounts/{handle}/incidents",
    summary="An account's incidents, newest first (anonymous readers see public ones only)",
    openapi_extra=OPTIONAL_AUTH,
    responses=responds(200, list[IncidentOut], errors=(401, 404, 422)),
)
async def account_incidents(
    handle: Handle,
    request: Request,
    state_: Annotated[State, Query(alias="state")] = None,
    limit: Limit = None,
    before: Before = None,
) -> Response:
    st = state(request)
    viewer = await optional_viewer(request)
    await lookups.existing(st, handle)
    found = await incidents.list_incidents(
        st,
        handle,
        state=state_,
        public=not incidents.sees_internal(viewer, handle),
        before=before,
        limit=page_limit(limit),
    )
    return bodies.json(found)


def _component_name(name: str) -> str:
    if not _COMPONENT_NAME.match(name) or not name.strip():
        raise Invalid(
            "a component name is 1-64 characters, without commas, | or control characters",
            code="invalid_field",
            field="name",
        )
    return name


@router.put(
    "/v1/accounts/{handle}/components/{name}",
    summary="Create a component or set its state (the account's posters, admins)",
    openapi_extra=merge(body(PutComponent), SECURED),
    responses=responds(200, ComponentOut, errors=(400, 401, 403, 404, 413, 422)),
)
async def put_component(handle: Handle, name: ComponentPath, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    req = await bodies.read(request, PutComponent)
    account = await lookups.existing(st, handle)
    component = await incidents.set_component(st, caller, account, _component_name(name), req)
    return bodies.json(component)


@router.get(
    "/v1/accounts/{handle}/components",
    summary="An account's components and their states, in the order they were created",
    responses=responds(200, list[ComponentOut], errors=(404,)),
)
async def list_components(handle: Handle, request: Request) -> Response:
    st = state(request)
    await lookups.existing(st, handle)
    found = await incidents.components(st, handle)
    return bodies.json([incidents.component_out(c) for c in found])
