"""Unknown addresses under the web app and the status pages answer with an HTML 404 page
(the JSON API's own 404 stays JSON). Included last, so every real route matches first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster.api.web.html import WebRoute, error_page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.api_route("/app/{rest:path}", methods=["GET", "POST"])
async def app_not_found(rest: str, request: Request) -> Response:
    return error_page(request, 404, "There is no such page in the app.")


@router.api_route("/@{handle}/{rest:path}", methods=["GET"])
async def status_not_found(handle: str, rest: str, request: Request) -> Response:
    return error_page(request, 404, "There is no such page.")
