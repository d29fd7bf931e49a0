"""The roll-call answer page a link in an email or SMS opens (`/r/{link}`); no sign-in, no
cookie, no JavaScript needed.

- `GET` and `HEAD /r/{link}`: the question, who the link answers for, one form per option.
  They change nothing: mail firewalls, link scanners and message previews fetch links on
  their own, and must never answer for anyone.
- `POST /r/{link}` (`option`, `token`): only a form from that page answers — `token` is the
  page's, bound to this link and a few minutes old at most (muster.answerlinks). An answer
  that looks automated is recorded as suspect and the page asks for one more press, which
  (coming later, from a person) replaces it.

Every response is `no-store`, `Referrer-Policy: no-referrer` (the link must not leak to a
site the page links to) and `X-Robots-Tag: noindex`. An unknown or expired link is the same
404 page whatever the reason; a roll-call that is over is a 410 page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from muster.api import answering, rollcalls
from muster.api.routes.subscriptions import client_of
from muster.api.state import state
from muster.api.web import forms
from muster.api.web.html import WebRoute, render
from muster.errors import Gone

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _private(response: HTMLResponse) -> HTMLResponse:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["Cache-Control"] = "no-store"
    return response


def _closed(request: Request, asked: answering.Asked) -> HTMLResponse:
    return _private(
        render(
            request,
            "answer/closed.html",
            status=410,
            title="Roll-call closed",
            account=asked.rollcall.post.as_account,
            question=asked.rollcall.post.text,
        )
    )


@router.api_route("/r/{link}", methods=["GET", "HEAD"])
async def page(link: str, request: Request) -> Response:
    st = state(request)
    asked = await answering.asked_by_link(st, link, channels=answering.PAGE_CHANNELS)
    if not asked.open:
        return _closed(request, asked)
    rc = asked.rollcall
    current = await rollcalls.current_answer(st, rc, asked.person.handle)
    labels = {o.key: o.label for o in rc.question.options}
    return _private(
        render(
            request,
            "answer/page.html",
            title="Roll-call",
            heading=f"@{rc.post.as_account} asks",
            account=rc.post.as_account,
            question=rc.post.text,
            name=asked.person.display_name or asked.person.handle,
            handle=asked.person.handle,
            current=labels.get(current.option) if current is not None else None,
            unconfirmed=current is not None and current.suspect,
            options=rc.question.options,
            token=await st.links.page_token(link),
            action=f"/r/{link}",
            deadline=rc.deadline.strftime("%Y-%m-%d %H:%M UTC"),
        )
    )


@router.post("/r/{link}")
async def answer(link: str, request: Request) -> Response:
    st = state(request)
    asked = await answering.asked_by_link(st, link, channels=answering.PAGE_CHANNELS)
    form = await forms.read(request)
    try:
        out = await answering.answer_by_link(
            st,
            asked,
            link,
            form.get("option"),
            form.get("token"),
            client=client_of(request),
            user_agent=request.headers.get("user-agent", ""),
        )
    except Gone:
        return _closed(request, asked)
    label = asked.rollcall.option(out.option).label
    return _private(
        render(
            request,
            "answer/recorded.html",
            title="Answer recorded" if not out.suspect else "Confirm your answer",
            account=asked.rollcall.post.as_account,
            confirm=out.suspect,
            option_key=out.option,
            label=label,
            name=asked.person.display_name or asked.person.handle,
            handle=asked.person.handle,
            token=await st.links.page_token(link),
            action=f"/r/{link}",
        )
    )
