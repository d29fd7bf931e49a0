"""Account listings: the admin's (every account, paged by handle; the posters of a team) and
the people's directory (`GET /v1/directory`: public fields only, for finding whom to follow).

Handles live in one set per partition (keys.handles); a page merges them in handle order, so
the cursor is a handle and paging is stable while accounts are added (they are never removed).

Who finds whom in the directory: employees (members, admins, auditors) find every active
account; externals (customers, partners) find teams and services only, never the employee
list; admins also find deactivated accounts (marked `active: false`), everyone else does not.
Services may not search it (a directory is for people). A directory entry never carries a
contact point or a role: the same fields `GET /v1/accounts/{handle}` gives anyone.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from muster import keys
from muster.api import accounts, bodies, lookups
from muster.api.openapi import SECURED, responds
from muster.api.reads import page_limit
from muster.api.schemas import AccountSummary, DirectoryEntry, Handle, Kind, PostersOut
from muster.api.state import ApiState, state
from muster.api.tokens import require_admin, require_person
from muster.connection import texts
from muster.records import Account

router = APIRouter(tags=["accounts"])

Limit = Annotated[int | None, Query(ge=1, le=100, description="page size (default 20)")]
After = Annotated[
    str | None,
    Query(pattern=r"^[a-z0-9_]{1,30}$", description="only handles after this one (the cursor)"),
]


async def all_handles(st: ApiState) -> list[str]:
    """Every handle, sorted: one SMEMBERS per partition."""
    async with st.redis.pipeline(transaction=False) as pipe:
        for p in range(st.settings.partitions):
            pipe.smembers(keys.handles(p))
        replies: list[Any] = await pipe.execute()
    return sorted(h for reply in replies for h in texts(reply))


Search = Annotated[
    str | None,
    Query(max_length=100, description="only accounts whose handle or display name contains this"),
]
KindFilter = Annotated[Kind | None, Query(description="only accounts of this kind")]
_BATCH = 200


def _matches(account: Account, q: str | None, kinds: set[str], inactive: bool) -> bool:
    if account.kind not in kinds or (not account.active and not inactive):
        return False
    if not q:
        return True
    needle = q.casefold().lstrip("@")
    return needle in account.handle or needle in account.display_name.casefold()


async def search(
    st: ApiState,
    *,
    after: str | None,
    limit: int,
    q: str | None,
    kinds: set[str],
    inactive: bool,
) -> list[Account]:
    """Up to `limit` accounts after the handle `after` that match, in handle order."""
    handles = [h for h in await all_handles(st) if after is None or h > after]
    page: list[Account] = []
    for start in range(0, len(handles), _BATCH):
        found = await accounts.load_many(
            st.redis, handles[start : start + _BATCH], st.settings.partitions
        )
        page += [a for a in found.values() if a is not None and _matches(a, q, kinds, inactive)]
        if len(page) >= limit:
            break
    return page[:limit]


ALL_KINDS = {"person", "team", "service"}


@router.get(
    "/v1/accounts",
    summary="Every account, in handle order; `after` is the last handle of the previous page (admin)",
    openapi_extra=SECURED,
    responses=responds(200, list[AccountSummary], errors=(401, 403, 422)),
)
async def list_accounts(
    request: Request,
    limit: Limit = None,
    after: After = None,
    q: Search = None,
    kind: KindFilter = None,
) -> Response:
    st = state(request)
    await require_admin(request)
    kinds: set[str] = ALL_KINDS if kind is None else {kind}
    found = await search(st, after=after, limit=page_limit(limit), q=q, kinds=kinds, inactive=True)
    return bodies.json(
        [
            AccountSummary(
                id=a.id,
                handle=a.handle,
                kind=a.kind,  # type: ignore[arg-type]
                role=a.role,  # type: ignore[arg-type]
                display_name=a.display_name,
                active=a.active,
                manager=a.manager,
            )
            for a in found
        ]
    )


@router.get(
    "/v1/directory",
    summary="Find accounts to follow, in handle order: public fields only (people; "
    "externals find teams and services)",
    openapi_extra=SECURED,
    responses=responds(200, list[DirectoryEntry], errors=(401, 403, 422)),
)
async def directory(
    request: Request,
    limit: Limit = None,
    after: After = None,
    q: Search = None,
    kind: KindFilter = None,
) -> Response:
    st = state(request)
    caller = await require_person(request)
    visible = ALL_KINDS if caller.is_employee else {"team", "service"}
    kinds = visible if kind is None else visible & {kind}
    found = (
        await search(
            st, after=after, limit=page_limit(limit), q=q, kinds=kinds, inactive=caller.is_admin
        )
        if kinds
        else []
    )
    return bodies.json(
        [
            DirectoryEntry(
                id=a.id,
                handle=a.handle,
                kind=a.kind,  # type: ignore[arg-type]
                display_name=a.display_name,
                active=a.active,
            )
            for a in found
        ]
    )


@router.get(
    "/v1/accounts/{team}/posters",
    summary="The people who may post as a team or service, in handle order (admin)",
    openapi_extra=SECURED,
    responses=responds(200, PostersOut, errors=(401, 403, 404, 422)),
)
async def list_posters(team: Handle, request: Request) -> Response:
    st = state(request)
    await require_admin(request)
    account = await lookups.existing(st, team, field="team")
    lookups.require_kind(account, {"team", "service"}, field="team", what="a team or service")
    p = keys.partition_of(team, st.settings.partitions)
    posters = sorted(texts(await st.redis.smembers(keys.posters(p, team))))
    return bodies.json(PostersOut(account=team, posters=posters))
