"""The web app's direct messages: conversations, one conversation, sending.

Reads and the send go through the JSON API in-process, so a DM is seen by its two parties
only, as everywhere. A conversation page shows messages received while it is open (the
session's stream); a sent one is on the page the browser comes back to (the send waits,
briefly and bounded, for the timeline worker to store it).
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from muster.api.schemas import ConversationOut
from muster.api.state import state
from muster.api.web import forms, readback, session
from muster.api.web.html import Redirect, WebRoute, render
from muster.api.web.inprocess import JsonApi, Refused, path
from muster.api.web.live import stream_for
from muster.api.web.names import faces
from muster.api.web.session import Session
from muster.errors import ApiError
from muster.views import Message

router = APIRouter(route_class=WebRoute, include_in_schema=False)

PAGE = 50
Before = Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")]
_IDEM = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_form(**values: str) -> dict[str, str]:
    form = {"to": "", "text": "", **values}
    form["idem"] = values.get("idem") or secrets.token_urlsafe(18)
    return form


async def list_page(
    request: Request,
    current: Session,
    *,
    form: dict[str, str] | None = None,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    stream = stream_for(request, "/app/stream", "dm")
    api = JsonApi(request, current.token)
    found = (await api.get("/v1/dms")).value(list[ConversationOut])
    return render(
        request,
        "app/dms.html",
        status=status,
        title="Messages",
        section="dms",
        session=current,
        stream=stream,
        conversations=found,
        faces=await faces(request, [c.with_ for c in found]),
        max_chars=state(request).settings.max_post_chars,
        form=form or new_form(),
        error=error,
    )


@router.get("/app/dms")
async def conversations(request: Request) -> Response:
    return await list_page(request, await session.require(request))


async def conversation_page(
    request: Request,
    current: Session,
    other: str,
    before: str | None = None,
    *,
    form: dict[str, str] | None = None,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    if not forms.is_handle(other):
        raise Refused(404, "no_such_account", "There is no such person.", None)
    stream = stream_for(request, "/app/stream", "dm") if before is None else None
    api = JsonApi(request, current.token)
    found = (await api.get(path("v1", "dms", other), limit=PAGE, before=before)).value(
        list[Message]
    )
    return render(
        request,
        "app/conversation.html",
        status=status,
        title=f"Messages with @{other}",
        section="dms",
        session=current,
        stream=stream,
        other=other,
        messages=found,
        faces=await faces(request, [other, *(m.from_ for m in found)]),
        max_chars=state(request).settings.max_post_chars,
        earlier=found[0].id if len(found) == PAGE else None,
        form=form or new_form(to=other),
        error=error,
    )


@router.get("/app/dms/{handle}")
async def conversation(handle: str, request: Request, before: Before = None) -> Response:
    return await conversation_page(request, await session.require(request), handle, before)


@router.post("/app/dms")
async def send(request: Request) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    to = forms.handle(form.get("to"))
    idem = form.get("idem")
    headers = {"Idempotency-Key": idem} if _IDEM.fullmatch(idem) else {}
    reply = await JsonApi(request, current.token).call(
        "POST", "/v1/dms", body={"to": to, "text": form.get("text")}, headers=headers
    )
    if not reply.ok:
        kept = new_form(to=to, text=form.get("text"), idem=idem if headers else "")
        error = reply.refused()
        if form.get("from_page") == "conversation" and forms.is_handle(to):
            return await conversation_page(
                request, current, to, form=kept, error=error, status=reply.status
            )
        return await list_page(request, current, form=kept, error=error, status=reply.status)
    message = reply.value(Message)
    stored = await readback.message_stored(state(request).reader, message.id)
    notice = "sent" if stored else "pending"
    raise Redirect(f"{path('app', 'dms', to)}?notice={notice}#dm-{message.id}")
