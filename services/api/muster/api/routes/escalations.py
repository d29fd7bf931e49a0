"""Escalation policies (admins) and reminding a roll-call (those who run it).

The logic is in muster.api.escalations. Policies are admins' alone: anyone else gets 403
`admin_only`, before the policy is looked up. A remind is for the roll-call's author, the
posters of its account and admins; to anyone else the roll-call does not exist (404).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from muster.api import bodies, escalations, rollcalls
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.routes.rollcalls import RollCallId
from muster.api.schemas import (
    DeliveryState,
    EscalationDeliveriesOut,
    EscalationPolicyIn,
    EscalationPolicyOut,
    RollCallOut,
)
from muster.api.state import state
from muster.api.tokens import authenticate
from muster.errors import Forbidden
from muster.records import Account

router = APIRouter(tags=["rollcalls"])

PolicyName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


def _admin(caller: Account) -> None:
    if not caller.is_admin:
        raise Forbidden("only admins manage escalation policies", code="admin_only")


@router.get(
    "/v1/escalation-policies",
    summary="Every escalation policy, by name, at its latest version (admins)",
    openapi_extra=SECURED,
    responses=responds(200, list[EscalationPolicyOut], errors=(401, 403)),
)
async def list_policies(request: Request) -> Response:
    st = state(request)
    _admin(await authenticate(request))
    return bodies.json([escalations.policy_out(s) for s in await escalations.every(st)])


@router.get(
    "/v1/escalation-policies/{name}",
    summary="An escalation policy at its latest version (admins)",
    openapi_extra=SECURED,
    responses=responds(200, EscalationPolicyOut, errors=(401, 403, 404, 422)),
)
async def get_policy(name: PolicyName, request: Request) -> Response:
    st = state(request)
    _admin(await authenticate(request))
    return bodies.json(escalations.policy_out(await escalations.require(st, name)))


@router.put(
    "/v1/escalation-policies/{name}",
    summary="Create or replace an escalation policy: a new version (admins)",
    openapi_extra=merge(body(EscalationPolicyIn), SECURED),
    responses=responds(200, EscalationPolicyOut, errors=(400, 401, 403, 413, 422)),
)
async def put_policy(name: PolicyName, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    _admin(caller)
    req = await bodies.read(request, EscalationPolicyIn)
    return bodies.json(escalations.policy_out(await escalations.put(st, caller, name, req)))


@router.delete(
    "/v1/escalation-policies/{name}",
    status_code=204,
    summary="Delete an escalation policy; roll-calls opened with it keep their copy (admins)",
    openapi_extra=SECURED,
    responses=responds(204, errors=(401, 403, 404, 422)),
)
async def delete_policy(name: PolicyName, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    _admin(caller)
    await escalations.delete(st, caller, name)
    return Response(status_code=204)


@router.post(
    "/v1/rollcalls/{rollcall_id}/remind",
    status_code=202,
    summary="Send the roll-call again to everyone not yet accounted for (once per 5 minutes)",
    openapi_extra=SECURED,
    responses=responds(202, RollCallOut, errors=(401, 404, 409, 422, 429)),
)
async def remind(rollcall_id: RollCallId, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    await escalations.remind(st, caller, rc)
    return bodies.json(await rollcalls.report(st, await rollcalls.load(st, rollcall_id)), 202)


@router.get(
    "/v1/rollcalls/{rollcall_id}/deliveries",
    summary="What the roll-call's escalation steps and reminds sent, and where each stands",
    openapi_extra=SECURED,
    responses=responds(200, EscalationDeliveriesOut, errors=(401, 404, 422)),
)
async def escalation_deliveries(
    rollcall_id: RollCallId,
    request: Request,
    status: Annotated[DeliveryState | None, Query(description="only this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="per page (default 100)")] = 100,
    after: Annotated[
        str | None,
        Query(max_length=200, description="page after this delivery id (the last one seen)"),
    ] = None,
) -> Response:
    st = state(request)
    caller = await authenticate(request)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    return bodies.json(await escalations.deliveries(st, rc, status, limit, after))
