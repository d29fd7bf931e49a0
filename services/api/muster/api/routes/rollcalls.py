"""Roll-calls: answers, the report, the list of the people asked, export, close and extend.

A roll-call is opened by its post (POST /v1/posts with `rollcall`); the logic is in
muster.api.rollcalls. Who may do what: the people asked answer for themselves; the author,
the posters of its account and admins run it (report, lists, proxy answers, close, extend,
help handled); to anyone else a roll-call does not exist (404).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response, StreamingResponse

from muster.api import bodies, rollcallgroups, rollcallhub, rollcalls
from muster.api.openapi import SECURED, body, merge, responds
from muster.api.schemas import (
    AnswerRollCall,
    ExtendRollCall,
    HandleHelp,
    RollCallAnswerOut,
    RollCallGroupOut,
    RollCallOut,
    RollCallRecipientOut,
)
from muster.api.state import state
from muster.api.tokens import authenticate
from muster.errors import NotFound

router = APIRouter(tags=["rollcalls"])

RollCallId = Annotated[str, Path(pattern=r"^[0-9]{1,19}$", description="the roll-call's post id")]
PersonHandle = Annotated[str, Path(pattern=r"^[a-z0-9_]{1,30}$")]
_ERRORS = (401, 404, 422)


@router.post(
    "/v1/rollcalls/{rollcall_id}/responses",
    summary="Answer a roll-call you were asked in (your latest answer counts)",
    openapi_extra=merge(body(AnswerRollCall), SECURED),
    responses=responds(200, RollCallAnswerOut, errors=(400, 403, 410, *_ERRORS)),
)
async def answer(rollcall_id: RollCallId, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    req = await bodies.read(request, AnswerRollCall)
    note = rollcalls.note_of(req.note)
    rc = await rollcalls.load(st, rollcall_id)
    out = await rollcalls.answer(st, caller, rc, caller.handle, req.option, note, channel="app")
    return bodies.json(out)


@router.put(
    "/v1/rollcalls/{rollcall_id}/responses/{handle}",
    summary="Answer for someone asked (a proxy answer; the author, a poster, an admin, or "
    "the person's manager)",
    openapi_extra=merge(body(AnswerRollCall), SECURED),
    responses=responds(200, RollCallAnswerOut, errors=(400, 410, *_ERRORS)),
)
async def proxy_answer(rollcall_id: RollCallId, handle: PersonHandle, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    req = await bodies.read(request, AnswerRollCall)
    note = rollcalls.note_of(req.note)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_proxy(st, caller, rc, handle)
    out = await rollcalls.answer(st, caller, rc, handle, req.option, note, channel="proxy")
    return bodies.json(out)


@router.post(
    "/v1/rollcalls/{rollcall_id}/help/{handle}/handled",
    summary="Mark someone's `help` answer handled (it leaves help_open)",
    openapi_extra=merge(body(HandleHelp, required=False), SECURED),
    responses=responds(200, RollCallAnswerOut, errors=(400, 409, *_ERRORS)),
)
async def help_handled(rollcall_id: RollCallId, handle: PersonHandle, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    raw = await request.body()
    req = bodies.decode(raw, HandleHelp) if raw.strip() else HandleHelp()
    note = rollcalls.note_of(req.note)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    return bodies.json(await rollcalls.handle_help(st, caller, rc, handle, note))


@router.get(
    "/v1/rollcalls/{rollcall_id}",
    summary="A roll-call's report (a person asked sees the question and their own answer; "
    "one who also runs it, both)",
    openapi_extra=SECURED,
    responses=responds(200, RollCallOut, errors=_ERRORS),
)
async def report(rollcall_id: RollCallId, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    rc = await rollcalls.load(st, rollcall_id)
    if await rollcalls.runs(st, caller, rc):
        out = await rollcalls.report(st, rc)
        if await rollcalls.in_audience(st, rc, caller.handle):  # a poster asked too
            out.asked = True
            out.answer = (await rollcalls.own_view(st, rc, caller.handle)).answer
        return bodies.json(out)
    if await rollcalls.in_audience(st, rc, caller.handle):
        return bodies.json(await rollcalls.own_view(st, rc, caller.handle))
    raise NotFound(f"no roll-call {rollcall_id}", code="no_such_rollcall")


@router.get(
    "/v1/rollcalls/{rollcall_id}/stream",
    summary="Live report (SSE): `event: report` on connect and as it changes, `event: help` "
    "per new help answer; ends after the report that shows it closed",
    openapi_extra=SECURED,
    responses=responds(200, {"type": "string"}, media_type="text/event-stream", errors=_ERRORS),
)
async def stream(rollcall_id: RollCallId, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    return rollcallhub.sse(request.app.state.rollcalls, rc)


@router.get(
    "/v1/rollcalls/{rollcall_id}/recipients",
    summary="The people asked, by handle, with their latest answers (filtered, paged)",
    openapi_extra=SECURED,
    responses=responds(200, list[RollCallRecipientOut], errors=_ERRORS),
)
async def recipients(
    rollcall_id: RollCallId,
    request: Request,
    status: str | None = None,
    option: str | None = None,
    channel: str | None = None,
    limit: int | None = None,
    after: Annotated[str | None, Query(max_length=30)] = None,
) -> Response:
    st = state(request)
    caller = await authenticate(request)
    size = rollcalls.check_filters(status, limit)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    page = []
    for row in await rollcalls.rows(st, rc):
        if after is not None and row.handle <= after:
            continue
        if rollcalls.matches(row, status, option, channel):
            page.append(row)
            if len(page) == size:
                break
    return bodies.json(page)


@router.get(
    "/v1/rollcalls/{rollcall_id}/groups",
    summary="The report per team of the people asked, or per manager (where accounts have one)",
    openapi_extra=SECURED,
    responses=responds(200, list[RollCallGroupOut], errors=_ERRORS),
)
async def groups(
    rollcall_id: RollCallId, request: Request, by: rollcallgroups.Grouping = "team"
) -> Response:
    st = state(request)
    caller = await authenticate(request)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    return bodies.json(await rollcallgroups.groups(st, rc, by))


@router.get(
    "/v1/rollcalls/{rollcall_id}/export",
    summary="Every person asked and their latest answer, as CSV or JSON lines",
    openapi_extra=SECURED,
    responses=responds(200, None, errors=_ERRORS, media_type="text/csv"),
)
async def export(
    rollcall_id: RollCallId, request: Request, format: Literal["csv", "jsonl"] = "csv"
) -> Response:
    st = state(request)
    caller = await authenticate(request)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    found = await rollcalls.rows(st, rc)
    name = f"rollcall-{rc.id}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        return StreamingResponse(
            rollcalls.export_csv(found), media_type="text/csv; charset=utf-8", headers=headers
        )
    return StreamingResponse(
        rollcalls.export_jsonl(found), media_type="application/x-ndjson", headers=headers
    )


@router.post(
    "/v1/rollcalls/{rollcall_id}/close",
    summary="Close a roll-call: no more answers (the author, a poster or an admin)",
    openapi_extra=SECURED,
    responses=responds(200, RollCallOut, errors=(409, *_ERRORS)),
)
async def close(rollcall_id: RollCallId, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    await rollcalls.close(st, caller, rc)
    return bodies.json(await rollcalls.report(st, await rollcalls.load(st, rollcall_id)))


@router.post(
    "/v1/rollcalls/{rollcall_id}/extend",
    summary="Move an open roll-call's deadline later (the author, a poster or an admin)",
    openapi_extra=merge(body(ExtendRollCall), SECURED),
    responses=responds(200, RollCallOut, errors=(400, 409, *_ERRORS)),
)
async def extend(rollcall_id: RollCallId, request: Request) -> Response:
    st = state(request)
    caller = await authenticate(request)
    req = await bodies.read(request, ExtendRollCall)
    rc = await rollcalls.load(st, rollcall_id)
    await rollcalls.require_runner(st, caller, rc)
    await rollcalls.extend(st, caller, rc, req.deadline)
    return bodies.json(await rollcalls.report(st, await rollcalls.load(st, rollcall_id)))
