"""GET /v1/audit and /v1/audit/export: the audit projection, for admins and auditors.

Admins see that a DM happened (parties, time), never its text ("[withheld]"); auditors see
the text, and each of their reads is itself appended to the log first (events.AuditRead:
who, when, which filter), so reading DMs leaves a trace in the very log it reads.

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
from muster.api import writes
from muster.api.auditlog import AuditLog, AuditQuery
from muster.api.openapi import SECURED, responds
from muster.api.schemas import AuditEvent
from muster.api.state import state
from muster.api.tokens import authenticate
from muster.errors import Forbidden

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


async def _log(request: Request, route: str, query: AuditQuery) -> AuditLog:
    """The log as the caller may read it; an auditor's read is recorded before it starts."""
    st = state(request)
    caller = await authenticate(request)
    if not (caller.is_admin or caller.is_auditor):
        raise Forbidden("only admins and auditors read the audit log", code="admin_only")
    if caller.is_auditor:
        await writes.record_audit_read(st, caller, route, query)
    return AuditLog(st.redis, st.settings.partitions, dm_text=caller.is_auditor)


@router.get(
    "/v1/audit",
    summary="Audit events in log order, filtered by time, account and type (admin, auditor)",
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
    query = _query(since, until, account, event_type, after)
    found = await (await _log(request, "GET /v1/audit", query)).page(query, limit)
    body = b"[" + b",".join(payload for _, payload in found) + b"]"
    return Response(body, media_type="application/json")


@router.get(
    "/v1/audit/export",
    summary="Every matching audit event as JSON Lines, streamed (admin, auditor)",
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
    query = _query(since, until, account, event_type, None)
    lines = (await _log(request, "GET /v1/audit/export", query)).export(query)
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="muster-audit.jsonl"'},
    )
