"""Which teams and services a person may post as: the choices of the composer's "Post as".

There is no person → teams index (posters are kept per team, keys.posters), so this asks
every account's posters set in one pipeline and keeps the answer a few seconds per person.
The JSON API checks the choice again when the post is made (403 not_a_poster).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request

from muster import keys
from muster.api.routes.directory import all_handles
from muster.api.state import state

TTL_S = 5.0
_MAX_CACHED = 10_000


class PosterIndex:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def teams_of(self, request: Request, handle: str) -> list[str]:
        now = time.monotonic()
        hit = self._cache.get(handle)
        if hit is not None and hit[0] > now:
            return hit[1]
        st = state(request)
        candidates = [h for h in await all_handles(st) if h != handle]
        async with st.redis.pipeline(transaction=False) as pipe:
            for team in candidates:
                p = keys.partition_of(team, st.settings.partitions)
                pipe.sismember(keys.posters(p, team), handle)
            member: list[Any] = await pipe.execute()
        teams = [team for team, yes in zip(candidates, member, strict=True) if yes]
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[handle] = (now + TTL_S, teams)
        return teams


async def teams_of(request: Request, handle: str) -> list[str]:
    index: PosterIndex | None = getattr(request.app.state, "web_posters", None)
    if index is None:
        index = request.app.state.web_posters = PosterIndex()
    return await index.teams_of(request, handle)
