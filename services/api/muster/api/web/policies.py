"""The admin pages for escalation policies: the list, and one form to create or edit a policy.

Through the JSON API in-process like the other admin pages (GET, PUT and DELETE
/v1/escalation-policies), so its checks and errors are the API's. The form has a row per
step (the policy's steps, then blank rows up to MAX_STEPS); a row with no delay is left out.
Delays are typed in seconds or minutes and sent in seconds. A refused form is shown again as
it was typed, the API's message above it and the field it named marked.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from muster.api.schemas import EscalationPolicyOut
from muster.api.web import forms, session
from muster.api.web.html import Redirect, WebRoute, render
from muster.api.web.inprocess import JsonApi, Refused, path
from muster.api.web.session import Session
from muster.errors import ApiError

router = APIRouter(route_class=WebRoute, include_in_schema=False)

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""A policy's name, as the API takes it."""
PolicyName = Annotated[str, Path(pattern=NAME.pattern)]
MAX_STEPS = 10
"""The API's limit; the form shows the policy's steps and blank rows up to it (at least 2)."""
BLANK_ROWS = 2
CHANNELS = ("email", "sms", "webhook")
TARGETS = ("recipient", "manager", "fallback")
UNITS = {"s": 1, "min": 60}

Row = dict[str, Any]


def _blank() -> Row:
    return {
        "after": "",
        "unit": "min",
        "to": "recipient",
        "mode": "chosen",
        "channels": [],
        "fallback": "",
    }


def _amount(seconds: float) -> tuple[str, str]:
    """A delay as the form shows it: whole minutes in minutes, anything else in seconds."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}", "min"
    return (f"{int(seconds)}" if seconds == int(seconds) else f"{seconds:g}"), "s"


def _padded(rows: list[Row]) -> list[Row]:
    blanks = max(0, min(BLANK_ROWS, MAX_STEPS - len(rows)))
    return rows + [_blank() for _ in range(blanks)]


def form_of(policy: EscalationPolicyOut) -> dict[str, Any]:
    rows = []
    for step in policy.steps:
        after, unit = _amount(step.after_s)
        listed = not isinstance(step.channels, str)
        rows.append(
            {
                "after": after,
                "unit": unit,
                "to": step.to,
                "mode": "list" if listed else step.channels,
                "channels": list(step.channels) if listed else [],
                "fallback": step.fallback or "",
            }
        )
    every, every_unit = _amount(policy.repeat.every_s) if policy.repeat else ("", "min")
    return {
        "name": policy.name,
        "steps": _padded(rows),
        "repeat_times": str(policy.repeat.times) if policy.repeat else "",
        "repeat_every": every,
        "repeat_unit": every_unit,
        "max_sends": str(policy.max_sends_per_recipient or ""),
    }


def _empty_form() -> dict[str, Any]:
    return {
        "name": "",
        "steps": _padded([]),
        "repeat_times": "",
        "repeat_every": "",
        "repeat_unit": "min",
        "max_sends": "",
    }


def _number(value: str, field: str) -> float:
    try:
        found = float(value)
    except ValueError:
        raise Refused(422, "invalid_field", f"{value!r} is not a number.", field) from None
    if found != found or found in (float("inf"), float("-inf")):
        raise Refused(422, "invalid_field", f"{value!r} is not a number.", field)
    return found


def _kept(form: forms.Form) -> dict[str, Any]:
    """The form as typed, to send and to show again: the step rows with a delay, in order
    (so row i is the API's `steps[i]`), then blank rows."""
    rows = [
        {
            "after": form.get(f"step-{i}-after").strip(),
            "unit": form.get(f"step-{i}-unit", "min"),
            "to": form.get(f"step-{i}-to", "recipient"),
            "mode": form.get(f"step-{i}-mode", "chosen"),
            "channels": [c for c in form.getall(f"step-{i}-channels") if c in CHANNELS],
            "fallback": form.get(f"step-{i}-fallback").strip(),
        }
        for i in range(MAX_STEPS)
        if form.get(f"step-{i}-after").strip()
    ]
    return {
        "name": form.get("name").strip(),
        "steps": _padded(rows),
        "repeat_times": form.get("repeat_times").strip(),
        "repeat_every": form.get("repeat_every").strip(),
        "repeat_unit": form.get("repeat_unit", "min"),
        "max_sends": form.get("max_sends").strip(),
    }


def _whole(value: float) -> float | int:
    return int(value) if value == int(value) else value


def _body(kept: dict[str, Any]) -> dict[str, Any]:
    """The PUT body. Refused (422) for a delay or count that is not a number; everything
    else is the API's to judge."""
    steps = []
    for i, row in enumerate(r for r in kept["steps"] if r["after"]):
        step: dict[str, Any] = {
            "after_s": _number(row["after"], f"steps[{i}].after_s") * UNITS.get(row["unit"], 60),
            "to": row["to"],
            "channels": row["channels"] if row["mode"] == "list" else row["mode"],
        }
        if row["fallback"]:
            step["fallback"] = forms.handle(row["fallback"])
        steps.append(step)
    body: dict[str, Any] = {"steps": steps}
    if kept["repeat_times"] or kept["repeat_every"]:
        every = _number(kept["repeat_every"] or "0", "repeat.every_s")
        body["repeat"] = {
            "times": _whole(_number(kept["repeat_times"] or "0", "repeat.times")),
            "every_s": every * UNITS.get(kept["repeat_unit"], 60),
        }
    if kept["max_sends"]:
        sends = _number(kept["max_sends"], "max_sends_per_recipient")
        body["max_sends_per_recipient"] = _whole(sends)
    return body


def describe(policy: EscalationPolicyOut) -> list[str]:
    """Each step in words, for the list."""
    lines = []
    for step in policy.steps:
        after, unit = _amount(step.after_s)
        who = f"@{step.fallback}" if step.to == "fallback" else step.to
        how = step.channels if isinstance(step.channels, str) else ", ".join(step.channels)
        lines.append(f"after {after} {unit}: {who} ({how})")
    return lines


def _repeat_text(policy: EscalationPolicyOut) -> str | None:
    if policy.repeat is None:
        return None
    every, unit = _amount(policy.repeat.every_s)
    return f"{policy.repeat.times} more, every {every} {unit}"


async def list_page(
    request: Request, current: Session, *, error: ApiError | None = None, status: int = 200
) -> Response:
    reply = await JsonApi(request, current.token).get("/v1/escalation-policies")
    policies = reply.value(list[EscalationPolicyOut])
    return render(
        request,
        "admin/policies.html",
        status=status,
        title="Escalation policies",
        section="admin",
        tab="policies",
        session=current,
        policies=[(p, describe(p), _repeat_text(p)) for p in policies],
        error=error,
    )


def edit_page(
    request: Request,
    current: Session,
    form: dict[str, Any],
    *,
    existing: EscalationPolicyOut | None = None,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "admin/policy.html",
        status=status,
        title=f"Escalation policy {form['name']}" if existing else "New escalation policy",
        section="admin",
        tab="policies",
        session=current,
        form=form,
        existing=existing,
        targets=TARGETS,
        channels=CHANNELS,
        error=error,
    )


@router.get("/app/admin/escalation-policies")
async def policies(request: Request) -> Response:
    return await list_page(request, await session.require(request, admin=True))


@router.get("/app/admin/escalation-policies/new")
async def new_policy(request: Request) -> Response:
    current = await session.require(request, admin=True)
    return edit_page(request, current, _empty_form())


@router.get("/app/admin/escalation-policies/{name}")
async def policy(request: Request, name: PolicyName) -> Response:
    current = await session.require(request, admin=True)
    reply = await JsonApi(request, current.token).get(path("v1", "escalation-policies", name))
    if not reply.ok:
        raise reply.refused()
    found = reply.value(EscalationPolicyOut)
    return edit_page(request, current, form_of(found), existing=found)


@router.post("/app/admin/escalation-policies")
async def save_policy(request: Request) -> Response:
    """Create or change (PUT) the policy the form names: a new version."""
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    kept = _kept(form)
    api = JsonApi(request, current.token)
    existing = None
    if form.get("editing") == "1" and NAME.match(kept["name"]):
        found = await api.get(path("v1", "escalation-policies", kept["name"]))
        existing = found.value(EscalationPolicyOut) if found.ok else None
    if not NAME.match(kept["name"]):
        error = Refused(
            422,
            "invalid_parameter",
            "Name the policy: lower-case letters, digits, - and _ (up to 64), a letter or digit first.",
            "name",
        )
        return edit_page(request, current, kept, error=error, status=422)
    try:
        body = _body(kept)
    except Refused as refused:
        return edit_page(request, current, kept, existing=existing, error=refused, status=422)
    reply = await api.call("PUT", path("v1", "escalation-policies", kept["name"]), body=body)
    if not reply.ok:
        return edit_page(
            request, current, kept, existing=existing, error=reply.refused(), status=reply.status
        )
    raise Redirect("/app/admin/escalation-policies?notice=saved")


@router.post("/app/admin/escalation-policies/{name}/delete")
async def delete_policy(request: Request, name: PolicyName) -> Response:
    current = await session.require(request, admin=True)
    form = await forms.read(request)
    session.check_csrf(request, current, form)
    reply = await JsonApi(request, current.token).call(
        "DELETE", path("v1", "escalation-policies", name)
    )
    if not reply.ok:
        return await list_page(request, current, error=reply.refused(), status=reply.status)
    raise Redirect("/app/admin/escalation-policies?notice=deleted")
