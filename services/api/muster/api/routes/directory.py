"""Admin listings the web app's admin pages need, and any admin client may use: every account
(paged by handle) and the posters of a team.

Handles live in one set per partition (keys.handles); a page merges them in handle order, so
the cursor is a handle and paging is stable while accounts are added (they are never removed).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from muster import keys
from muster.api import accounts, bodies, lookups
from muster.api.openapi import SECURED, responds
from muster.api.reads import page_limit
from muster.api.schemas import AccountSummary, Handle, Kind, PostersOut
from muster.api.state import ApiState, state
from muster.api.tokens import require_admin
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


def _matches(account: Account, q: str | None, kind: str | None) -> bool:
    if kind is not None and account.kind != kind:
        return False
    if not q:
        return True
    needle = q.casefold().lstrip("@")
    return needle in account.handle or needle in account.display_name.casefold()


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
    handles = [h for h in await all_handles(st) if after is None or h > after]
    wanted = page_limit(limit)
    page: list[Account] = []
    for start in range(0, len(handles), _BATCH):
        found = await accounts.load_many(
            st.redis, handles[start : start + _BATCH], st.settings.partitions
        )
        page += [a for a in found.values() if a is not None and _matches(a, q, kind)]
        if len(page) >= wanted:
            break
    return bodies.json(
        [
            AccountSummary(
                id=a.id,
                handle=a.handle,
                kind=a.kind,  # type: ignore[arg-type]
                role=a.role,  # type: ignore[arg-type]
                display_name=a.display_name,
                active=a.active,
            )
            for a in page[:wanted]
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
