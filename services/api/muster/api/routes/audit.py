"""GET /v1/audit and /v1/audit/export: the audit projection, for admins only.

Both take the same filters: `since` (inclusive) and `until` (exclusive), RFC 3339; `account`
(events whose actor or subject is that handle); `type` (an event type, e.g. PostPublished);
`after` (an event id: the cursor, the last id of the previous page). /v1/audit answers one
page (`limit`, default 100, at most 1000) in log order; /export streams every match as JSON
Lines. Token hashes and webhook secrets read "[redacted]".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from muster import events
from muster.api.auditlog import AuditLog, AuditQuery
from muster.api.openapi import SECURED, responds
from muster.api.schemas import AuditEvent
from muster.api.state import state
from muster.api.tokens import require_admin

router = APIRouter(tags=["audit"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_TYPES = "|".join(sorted(str(t.__struct_config__.tag) for t in events.EVENT_TYPES))

Since = Annotated[datetime | None, Query(description="RFC 3339; only events at or after this time")]
Until = Annotated[datetime | None, Query(description="RFC 3339; only events before this time")]
AccountFilter = Annotated[
    str | None,
    Query(pattern=r"^[a-z0-9_]{1,30}$", description="only events naming this account"),
]
TypeFilter = Annotated[
    str | None,
    Query(alias="type", pattern=f"^({_TYPES})$", description="only events of this type"),
]
After = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{1,19}$", description="cursor: only events after this event id"),
]
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"page size (default {DEFAULT_LIMIT})")
]


def _utc(moment: datetime | None) -> datetime | None:
    """RFC 3339 carries an offset; a time without one is taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _query(
    since: datetime | None,
    until: datetime | None,
    account: str | None,
    event_type: str | None,
    after: str | None,
) -> AuditQuery:
    return AuditQuery(
        since=_utc(since), until=_utc(until), account=account, type=event_type, after=after
    )


def _log(request: Request) -> AuditLog:
    st = state(request)
    return AuditLog(st.redis, st.settings.partitions)


@router.get(
    "/v1/audit",
    summary="Audit events in log order, filtered by time, account and type (admin)",
    openapi_extra=SECURED,
    responses=responds(200, list[AuditEvent], errors=(401, 403, 422)),
)
async def audit(
    request: Request,
    since: Since = None,
    until: Until = None,
    account: AccountFilter = None,
    event_type: TypeFilter = None,
    after: After = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Response:
    await require_admin(request)
    found = await _log(request).page(_query(since, until, account, event_type, after), limit)
    body = b"[" + b",".join(payload for _, payload in found) + b"]"
    return Response(body, media_type="application/json")


@router.get(
    "/v1/audit/export",
    summary="Every matching audit event as JSON Lines, streamed (admin)",
    openapi_extra=SECURED,
    responses=responds(
        200,
        {"type": "string", "description": "one event (JSON) per line"},
        errors=(401, 403, 422),
        media_type="application/x-ndjson",
    ),
)
async def audit_export(
    request: Request,
    since: Since = None,
    until: Until = None,
    account: AccountFilter = None,
    event_type: TypeFilter = None,
) -> Response:
    await require_admin(request)
    lines = _log(request).export(_query(since, until, account, event_type, None))
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="muster-audit.jsonl"'},
    )
