"""The people's directory (`/app/people`): find accounts by handle or display name, by kind,
and follow or unfollow them from the list.

It reads GET /v1/directory in-process, so who finds whom is the JSON API's rule (employees
find every active account, externals teams and services only, admins deactivated accounts
too); follow and unfollow are the follows page's forms (profile.py), which come back here.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from muster.api.schemas import DirectoryEntry, FollowOut
from muster.api.web import session
from muster.api.web.html import WebRoute, render
from muster.api.web.inprocess import JsonApi
from muster.api.web.names import Face

router = APIRouter(route_class=WebRoute, include_in_schema=False)

PAGE = 30


def here(q: str | None, kind: str | None, after: str | None = None) -> str:
    """This page's address with its search (where a follow form comes back to)."""
    query = urlencode({k: v for k, v in (("q", q), ("kind", kind), ("after", after)) if v})
    return "/app/people" + (f"?{query}" if query else "")


@router.get("/app/people")
async def people(
    request: Request,
    q: Annotated[str | None, Query(max_length=100)] = None,
    kind: Annotated[str | None, Query(pattern=r"^(person|team|service)?$")] = None,
    after: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,30}$")] = None,
) -> Response:
    current = await session.require(request)
    q = (q or "").strip() or None
    kind = kind or None  # the form's "All kinds" sends an empty kind
    api = JsonApi(request, current.token)
    found = (await api.get("/v1/directory", q=q, kind=kind, after=after, limit=PAGE)).value(
        list[DirectoryEntry]
    )
    follows = {f.account: f for f in (await api.get("/v1/me/follows")).value(list[FollowOut])}
    return render(
        request,
        "app/people.html",
        title="People",
        section="people",
        session=current,
        entries=found,
        follows=follows,
        faces={e.handle: Face(e.handle, e.display_name, e.active) for e in found},
        q=q or "",
        kind=kind or "",
        external=current.account.role == "external",
        back=here(q, kind, after),
        first_page=here(q, kind) if after else None,
        more=here(q, kind, found[-1].handle) if len(found) == PAGE else None,
    )
