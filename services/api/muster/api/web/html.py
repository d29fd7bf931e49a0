"""HTML out: autoescaped Jinja2 templates, error pages, and the route class of web pages.

Every web route is a `WebRoute`: what it raises becomes an HTML page (an ApiError keeps its
status and message; a malformed query is 400), `Redirect` becomes a 303, and each response
gets the security headers of headers.py unless the route set its own (the banner does).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from redis.exceptions import MaxConnectionsError, RedisError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from muster.api import crowd
from muster.api.web import times
from muster.api.web.assets import asset_url
from muster.api.web.headers import harden
from muster.api.web.names import Face
from muster.errors import ApiError
from muster.views import Message, Post

log = structlog.get_logger("muster.api.web")

TEMPLATES = Path(__file__).parent / "templates"

BLANK_POST = Post(
    id="", author="", as_account="", text="", visibility="public", severity="info",
    in_reply_to=None, created_at="",
)  # fmt: skip
"""What a <template> copy of a post is rendered from; the page script fills it in."""
BLANK_MESSAGE = Message(id="", from_="", to="", text="", in_reply_to=None, created_at="")


class Redirect(Exception):
    """Raised by a page that must send the browser elsewhere (a 303 See Other)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


@jinja2.pass_context
def ago(context: jinja2.runtime.Context, moment: str) -> str:
    """Relative to when the page is rendered (times.py); every time on a page agrees."""
    return times.relative(moment, context["now"])


@jinja2.pass_context
def face(context: jinja2.runtime.Context, handle: str) -> Face:
    """The display name and avatar of a handle the page's route looked up (names.faces)."""
    found: Face | None = context["faces"].get(handle)
    return found if found is not None else Face(handle, handle)


def fill(pattern: str, item: Any) -> str:
    """`/@{as_account}/posts/{id}` with the item's fields, each URL-quoted (muster.js: same)."""
    out = pattern
    for name in ("id", "as_account", "author", "in_reply_to", "handle", "with"):
        token = "{" + name + "}"
        if token in out:
            value = getattr(item, name, None) if not isinstance(item, dict) else item.get(name)
            out = out.replace(token, quote(str(value or ""), safe=""))
    return out


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, every value: escaped unless marked safe (none are)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["asset"] = asset_url
    env.globals["blank_post"] = BLANK_POST
    env.globals["blank_message"] = BLANK_MESSAGE
    env.globals["face"] = face
    env.filters["when"] = times.absolute
    env.filters["ago"] = ago
    env.filters["fill"] = fill
    return env


NOTICES = {
    "posted": "Posted.",
    "sent": "Message sent.",
    "saved": "Saved.",
    "followed": "Following.",
    "unfollowed": "Unfollowed.",
    "signedout": "You are signed out.",
    "pending": "Accepted. It will show here in a moment.",
    "granted": "Poster added.",
    "revoked": "Poster removed.",
    "redriven": "Sent back for another try.",
    "deactivated": "Account deactivated: its tokens stopped working and nothing reaches it.",
    "reactivated": "Account reactivated.",
    "manager_saved": "Manager saved: escalation steps to managers tell them from now on.",
    "deleted": "Deleted. Roll-calls opened with it keep their copy.",
    "token_revoked": "Token revoked: it stopped working.",
    "incident_opened": "Incident opened: followers and subscribers are being told.",
    "incident_updated": "Update posted.",
    "incident_resolved": "Incident resolved.",
    "component_saved": "Component saved.",
    "answered": "Answer recorded.",
    "help_handled": "Marked handled.",
    "rollcall_closed": "Roll-call closed: no more answers are taken.",
    "rollcall_extended": "Deadline extended.",
    "rollcall_reminded": "Reminder sent to everyone not yet accounted for.",
}
"""Messages a redirect may ask a page to show (`?notice=posted`): fixed texts, never echoed."""


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("session", None)
    context.setdefault("stream", None)
    context.setdefault("notice", NOTICES.get(request.query_params.get("notice", "")))
    context.setdefault("title", "Muster")
    context.setdefault("section", None)
    context.setdefault("faces", {})
    me = context["session"]
    if me is not None and me.handle not in context["faces"]:  # the header shows who is signed in
        faces = context["faces"] = dict(context["faces"])
        faces[me.handle] = Face(me.handle, me.account.display_name)
    context.setdefault("now", times.now())
    html = environment().get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {
        400: "Bad request",
        401: "Not signed in",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        413: "Too large",
        422: "Not accepted",
        429: "Busy",
        503: "Unavailable",
    }
    title = titles.get(status, "Something went wrong")
    response = render(
        request, "error.html", status=status, title=title, heading=title, message=message
    )
    response.headers["Cache-Control"] = "no-store"
    return response


class WebRoute(APIRoute):
    """An HTML route: errors as pages, redirects as 303s, security headers on everything."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            response: Response
            try:
                response = await handler(request)
            except Redirect as exc:
                response = RedirectResponse(exc.location, status_code=303)
            except ApiError as exc:
                response = error_page(request, exc.status, exc.message)
                if exc.status == 429:
                    response.headers["Retry-After"] = str(getattr(exc, "retry_after", 1) or 1)
            except RequestValidationError:
                response = error_page(request, 400, "This address has a malformed parameter.")
            except MaxConnectionsError:  # a crowd, not a fault (api/crowd.py)
                response = error_page(request, 429, "Muster is very busy right now; retry soon.")
                response.headers["Retry-After"] = str(crowd.BUSY_RETRY_AFTER_S)
            except RedisError as exc:
                log.error("redis unavailable", path=request.url.path, error=str(exc))
                response = error_page(request, 503, "Muster cannot reach its database; retry soon.")
                response.headers["Retry-After"] = "2"
            except Exception:
                log.exception("unhandled error", path=request.url.path)
                response = error_page(
                    request, 500, "Something went wrong on our side; it is logged."
                )
            return harden(response)

        return run
