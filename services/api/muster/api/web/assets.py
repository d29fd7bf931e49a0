"""The web layer's static files (one script, one stylesheet, an icon), served from memory.

No build step: the files in static/ are what browsers get. They are read once at import;
templates link them as `/static/<name>?v=<hash of the content>`, so a link names one version
and can be cached for a year, while a changed file gets a new link. Only the files listed
here are served (no path from the request reaches the filesystem).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from muster.api.web.headers import harden

STATIC = Path(__file__).parent / "static"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    version: str


def _load() -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for path in sorted(STATIC.iterdir()):
        media_type = _TYPES.get(path.suffix)
        if media_type is not None and path.is_file():
            body = path.read_bytes()
            found[path.name] = Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])
    return found


ASSETS = _load()


def asset_url(name: str) -> str:
    return f"/static/{name}?v={ASSETS[name].version}"


router = APIRouter(include_in_schema=False)


@router.get("/static/{name}")
async def static_file(name: str, request: Request) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        return harden(Response("no such file", status_code=404, media_type="text/plain"))
    etag = f'"{asset.version}"'
    cache = _IMMUTABLE if request.query_params.get("v") == asset.version else "no-cache"
    headers = {"ETag": etag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == etag:
        return harden(Response(status_code=304, headers=headers))
    return harden(Response(asset.body, media_type=asset.media_type, headers=headers))


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers ask for it on every site; the pages link the SVG icon, this answers the rest."""
    asset = ASSETS["icon.svg"]
    headers = {"Cache-Control": "public, max-age=86400"}
    return harden(Response(asset.body, media_type=asset.media_type, headers=headers))
