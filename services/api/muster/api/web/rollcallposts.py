"""Roll-calls in the timeline: a roll-call post's options as buttons, answered in one tap,
and the composer's roll-call.

A roll-call post in the home timeline or a thread shows its options as the buttons of one
form (a POST answers; the page comes back saying "You answered: Safe · change"); to those
who run it, the progress and a link to the report (rollcalls.py). Answers go through the
JSON API in-process, like every form.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from muster.api.schemas import RollCallOut
from muster.api.web import forms, session
from muster.api.web.html import Redirect, WebRoute
from muster.api.web.inprocess import JsonApi, path
from muster.events import utcnow
from muster.views import Post, rfc3339

router = APIRouter(route_class=WebRoute, include_in_schema=False)

RollCallId = Annotated[str, Path(pattern=r"^[0-9]{1,19}$")]
_NEXT = re.compile(r"^/app(/posts/[0-9]{1,19})?$")

PRESETS: dict[str, list[dict[str, str]]] = {
    "safe_help": [
        {"key": "safe", "label": "Safe", "kind": "ok"},
        {"key": "help", "label": "Need help", "kind": "help"},
    ],
    "safe_help_away": [
        {"key": "safe", "label": "Safe", "kind": "ok"},
        {"key": "help", "label": "Need help", "kind": "help"},
        {"key": "away", "label": "Not on site", "kind": "other"},
    ],
}
"""The composer's choices of options ("Safe / Need help" first)."""


def composer_rollcall(form: forms.Form) -> dict[str, Any] | None:
    """The `rollcall` of a post the composer sends (None when not asked for). The deadline is
    `rollcall_minutes` from now; one that is not a number makes it now, which the API refuses
    (deadline_past); an unknown preset falls back to Safe / Need help."""
    if form.get("rollcall") != "on":
        return None
    minutes = form.get("rollcall_minutes", "60")
    ahead = int(minutes) if minutes.isdigit() and len(minutes) < 6 else 0
    return {
        "options": PRESETS.get(form.get("rollcall_options"), PRESETS["safe_help"]),
        "deadline": rfc3339(utcnow() + timedelta(minutes=ahead)),
    }


async def views_of(api: JsonApi, posts: list[Post]) -> dict[str, RollCallOut | None]:
    """What the viewer sees of each roll-call among `posts`: the report to those who run it,
    their own answer to those asked, None to others."""
    found: dict[str, RollCallOut | None] = {}
    for post in posts:
        if post.rollcall is not None and post.id not in found:
            reply = await api.get(path("v1", "rollcalls", post.id))
            found[post.id] = reply.value(RollCallOut) if reply.ok else None
    return found


@router.post("/app/rollcalls/{rollcall_id}/answer")
async def answer(rollcall_id: RollCallId, request: Request) -> Response:
    current = await session.require(request)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    target = form.get("next")
    target = target if _NEXT.fullmatch(target) else "/app"
    reply = await JsonApi(request, current.token).call(
        "POST",
        path("v1", "rollcalls", rollcall_id, "responses"),
        body={"option": form.get("option")},
    )
    if not reply.ok:
        raise reply.refused()
    raise Redirect(f"{target}?notice=answered#post-{rollcall_id}")
