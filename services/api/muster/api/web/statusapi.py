"""Atlassian Statuspage's public status API for an account, so tools that read Statuspage
pages (dashboards, aggregators, Slack apps) read Muster's: `/@{handle}/api/v2/summary.json`,
`status.json`, `components.json`, `incidents.json`, `incidents/unresolved.json`.

The shapes are Statuspage's documented ones (page, status {indicator, description},
components, incidents with incident_updates, scheduled_maintenances), from public data only
(statusview.py). Muster has no ids of its own for components, so a component's id is a short
hash of the account and its name, stable for as long as the name is. Cached like the page
(pagecache.py), with CORS open: the data is public and browser widgets fetch it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from muster import views
from muster.api.schemas import IncidentOut
from muster.api.state import state
from muster.api.web import statusview, times
from muster.api.web.pagecache import Rendering
from muster.api.web.status import cached
from muster.api.web.statusview import StatusView
from muster.records import Account

router = APIRouter(include_in_schema=False)

INCIDENTS_SHOWN = 50
"""incidents.json: the newest incidents, as Statuspage lists them."""


def component_id(handle: str, name: str) -> str:
    return hashlib.sha256(f"{handle}\n{name}".encode()).hexdigest()[:12]


def _page(request: Request, view: StatusView) -> dict[str, Any]:
    base = state(request).settings.public_url.rstrip("/")
    last = max(
        [i.updated_at for i in (*view.open, *view.resolved)]
        + [views.rfc3339(c.component.updated_at) for c in view.components],
        default=views.rfc3339(view.now),
    )
    return {
        "id": view.account.handle,
        "name": view.account.display_name,
        "url": f"{base}/@{view.account.handle}",
        "time_zone": "Etc/UTC",
        "updated_at": last,
    }


def _status(view: StatusView) -> dict[str, str]:
    return {"indicator": view.indicator, "description": view.description}


def _components(view: StatusView) -> list[dict[str, Any]]:
    handle = view.account.handle
    return [
        {
            "id": component_id(handle, c.component.name),
            "name": c.component.name,
            "status": c.component.status,
            "created_at": views.rfc3339(c.component.updated_at),
            "updated_at": views.rfc3339(c.component.updated_at),
            "position": position,
            "description": c.component.description or None,
            "showcase": True,
            "start_date": None,
            "group_id": None,
            "page_id": handle,
            "group": False,
            "only_show_if_degraded": False,
        }
        for position, c in enumerate(view.components, start=1)
    ]


def _incident(request: Request, view: StatusView, incident: IncidentOut) -> dict[str, Any]:
    handle = view.account.handle
    base = state(request).settings.public_url.rstrip("/")
    monitoring = [u.created_at for u in incident.updates if u.status == "monitoring"]
    named = {c.component.name: c for c in view.components}
    affected = [named[n] for n in statusview.affected(incident) if n in named]
    return {
        "id": incident.id,
        "name": incident.title,
        "status": incident.status,
        "created_at": incident.created_at,
        "updated_at": incident.updated_at,
        "monitoring_at": monitoring[-1] if monitoring else None,
        "resolved_at": incident.resolved_at,
        "impact": incident.impact,
        "shortlink": f"{base}/@{handle}/incidents/{incident.id}",
        "started_at": incident.created_at,
        "page_id": handle,
        "incident_updates": [
            {
                "id": u.id,
                "status": u.status,
                "body": u.message,
                "incident_id": incident.id,
                "created_at": u.created_at,
                "updated_at": u.created_at,
                "display_at": u.created_at,
                "affected_components": [
                    {
                        "code": component_id(handle, name),
                        "name": name,
                        "old_status": None,
                        "new_status": status,
                    }
                    for name, status in u.components.items()
                ],
                "deliver_notifications": True,
            }
            for u in reversed(incident.updates)  # Statuspage lists the newest first
        ],
        "components": [
            {
                "id": component_id(handle, c.component.name),
                "name": c.component.name,
                "status": c.component.status,
                "page_id": handle,
            }
            for c in affected
        ],
    }


def _json(document: dict[str, Any]) -> Rendering:
    return Rendering(
        msgspec.json.encode(document),
        "application/json",
        headers={"Access-Control-Allow-Origin": "*"},
    )


_DOCUMENTS: dict[str, Callable[[Request, StatusView], dict[str, Any]]] = {
    "summary": lambda r, v: {
        "page": _page(r, v),
        "status": _status(v),
        "components": _components(v),
        "incidents": [_incident(r, v, i) for i in v.open],
        "scheduled_maintenances": [],
    },
    "status": lambda r, v: {"page": _page(r, v), "status": _status(v)},
    "components": lambda r, v: {"page": _page(r, v), "components": _components(v)},
    "incidents": lambda r, v: {
        "page": _page(r, v),
        "incidents": [
            _incident(r, v, i)
            for i in sorted((*v.open, *v.resolved), key=lambda i: -int(i.id))[:INCIDENTS_SHOWN]
        ],
    },
    "unresolved": lambda r, v: {
        "page": _page(r, v),
        "incidents": [_incident(r, v, i) for i in v.open],
    },
}


async def _answer(request: Request, handle: str, document: str) -> Response:
    async def make(account: Account) -> Response:
        view = await statusview.read(state(request), account, times.now())
        made = _json(_DOCUMENTS[document](request, view))
        return Response(made.body, media_type=made.media_type, headers=made.headers)

    response = await cached(request, handle, f"api-{document}", make, relative_times=False)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@router.get("/@{handle}/api/v2/summary.json")
async def summary(handle: str, request: Request) -> Response:
    return await _answer(request, handle, "summary")


@router.get("/@{handle}/api/v2/status.json")
async def status(handle: str, request: Request) -> Response:
    return await _answer(request, handle, "status")


@router.get("/@{handle}/api/v2/components.json")
async def components(handle: str, request: Request) -> Response:
    return await _answer(request, handle, "components")


@router.get("/@{handle}/api/v2/incidents.json")
async def incidents(handle: str, request: Request) -> Response:
    return await _answer(request, handle, "incidents")


@router.get("/@{handle}/api/v2/incidents/unresolved.json")
async def unresolved(handle: str, request: Request) -> Response:
    return await _answer(request, handle, "unresolved")
