"""Reads from the projections the timeline worker keeps: posts, timelines, threads, DMs.

Timelines are sorted sets ordered by id as text; every id Muster makes has 18 digits (until
the year 2453), so text order is time order, and `before` ids of other widths are clamped.
Home timelines merge the posts of followed accounts that are read-merged (keys.BIG_ACCOUNTS)
with the fanned-out ones, with one ordering and one cursor. Visibility is checked on every
item read: what a viewer may not see does not exist for them (404).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from muster import keys, views
from muster.connection import texts
from muster.errors import Invalid
from muster.records import Account
from muster.views import Message, Post

ID_DIGITS = 18
MAX_PAGE = 100
_MAX_READ = 1000  # ids read per round at most, when filtering left a page short


def can_see(post: Post, viewer: Account | None) -> bool:
    if post.visibility == "public":
        return True
    if viewer is None:
        return False
    return viewer.is_employee or viewer.handle in (post.author, post.as_account)


def upper_bound(before: str | None) -> str | None:
    """The lex range start for ids < before; None when nothing can be older (empty page)."""
    if before is None:
        return "+"
    if not before.isascii() or not before.isdigit():
        raise Invalid("before must be an id", code="invalid_cursor", field="before")
    digits = before.lstrip("0")
    if len(digits) < ID_DIGITS:
        return None
    if len(digits) > ID_DIGITS:
        return "+"
    return f"({digits}"


def page_limit(limit: int | None) -> int:
    if limit is None:
        return 20
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(
            f"limit must be between 1 and {MAX_PAGE}", code="invalid_limit", field="limit"
        )
    return limit


class Reader:
    def __init__(self, redis: aioredis.Redis, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._home_prefixes = tuple(keys.home_prefix(p) for p in range(partitions))

    # --- records ---------------------------------------------------------------------------
    async def posts(self, ids: Iterable[str]) -> list[Post]:
        ids = list(ids)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for post_id in ids:
                pipe.get(keys.post(keys.partition_of_id(post_id, self.partitions), post_id))
            raw: list[Any] = await pipe.execute()
        return [views.decode_post(r) for r in raw if r is not None]

    async def post(self, post_id: str) -> Post | None:
        found = await self.posts([post_id])
        return found[0] if found else None

    async def messages(self, ids: Iterable[str]) -> list[Message]:
        ids = list(ids)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.get(
                    keys.message(keys.partition_of_id(message_id, self.partitions), message_id)
                )
            raw: list[Any] = await pipe.execute()
        return [views.decode_message(r) for r in raw if r is not None]

    async def _newest(self, sources: list[str], start: str, limit: int) -> list[str]:
        """Up to `limit` newest ids below `start` across sorted sets, merged, newest first.

        Home timelines hold keys.home_member(id) (newest first, so read forward); logs hold
        ids (oldest first, so read backward)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for source in sources:
                if source.startswith(self._home_prefixes):
                    first = "-" if start == "+" else f"({keys.home_member(start[1:])}"
                    pipe.zrange(source, first, "+", bylex=True, offset=0, num=limit)
                else:
                    pipe.zrange(source, start, "-", desc=True, bylex=True, offset=0, num=limit)
            pages: list[Any] = await pipe.execute()
        ordered = [
            [keys.home_member(m) for m in texts(page)]
            if source.startswith(self._home_prefixes)
            else texts(page)
            for source, page in zip(sources, pages, strict=True)
        ]
        merged = heapq.merge(*ordered, reverse=True)
        out: list[str] = []
        for post_id in merged:
            if not out or out[-1] != post_id:
                out.append(post_id)
            if len(out) == limit:
                break
        return out

    async def _filtered_page(
        self, sources: list[str], before: str | None, limit: int, keep: Any
    ) -> list[Post]:
        """A page of visible posts: reads on past items the filter drops, never skips one.

        It reads on until the page is full or the sources run out: a page ended short would
        tell the client there is nothing older. Each further round reads twice as many ids.
        The filter drops only what a home still holds of an unfollowed account, or what a
        stale projection left, so the extra reads are bounded by MUSTER_TIMELINE_MAX."""
        start = upper_bound(before)
        found: list[Post] = []
        count = limit
        while start is not None:
            ids = await self._newest(sources, start, count)
            found += [p for p in await self.posts(ids) if keep(p)]
            if len(found) >= limit or len(ids) < count:
                break
            start = f"({ids[-1]}"
            count = min(2 * count, _MAX_READ)
        return found[:limit]

    # --- timelines ---------------------------------------------------------------------------
    async def home(self, viewer: Account, before: str | None, limit: int) -> list[Post]:
        p = keys.partition_of(viewer.handle, self.partitions)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hkeys(keys.follows(p, viewer.handle))
            pipe.smembers(keys.BIG_ACCOUNTS)
            followed_raw, big_raw = await pipe.execute()
        followed = set(texts(followed_raw))
        external = viewer.role == "external"
        sources = [keys.home(p, viewer.handle)]
        for account in sorted(followed & set(texts(big_raw))):
            pa = keys.partition_of(account, self.partitions)
            sources.append(
                keys.public_log(pa, account) if external else keys.account_log(pa, account)
            )

        def keep(post: Post) -> bool:
            mine = viewer.handle in (post.author, post.as_account)
            return can_see(post, viewer) and (mine or post.as_account in followed)

        return await self._filtered_page(sources, before, limit, keep)

    async def account_posts(
        self, account: Account, viewer: Account | None, before: str | None, limit: int
    ) -> list[Post]:
        p = keys.partition_of(account.handle, self.partitions)
        sees_internal = viewer is not None and (
            viewer.is_employee or viewer.handle == account.handle
        )
        source = (
            keys.account_log(p, account.handle)
            if sees_internal
            else keys.public_log(p, account.handle)
        )
        return await self._filtered_page(
            [source], before, limit, lambda post: can_see(post, viewer)
        )

    async def thread(self, post: Post, viewer: Account | None) -> tuple[list[Post], list[Post]]:
        """Visible ancestors (oldest first) and visible direct replies (oldest first)."""
        ancestors: list[Post] = []
        parent_id = post.in_reply_to
        seen = {post.id}
        while parent_id is not None and parent_id not in seen and len(seen) <= 100:
            seen.add(parent_id)
            parent = await self.post(parent_id)
            if parent is None:
                break
            if can_see(parent, viewer):
                ancestors.append(parent)
            parent_id = parent.in_reply_to
        ancestors.reverse()
        source = keys.replies(keys.partition_of_id(post.id, self.partitions), post.id)
        reply_ids = texts(await self.redis.zrange(source, "-", "+", bylex=True, offset=0, num=500))
        replies = [r for r in await self.posts(reply_ids) if can_see(r, viewer)]
        return ancestors, replies

    # --- direct messages -----------------------------------------------------------------------
    async def conversations(self, viewer: Account, limit: int = 100) -> list[tuple[str, Message]]:
        p = keys.partition_of(viewer.handle, self.partitions)
        others = texts(
            await self.redis.zrange(keys.conversations(p, viewer.handle), 0, limit - 1, desc=True)
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.zrange(
                    keys.conversation(p, viewer.handle, other),
                    "+",
                    "-",
                    desc=True,
                    bylex=True,
                    offset=0,
                    num=1,
                )
            latest: list[Any] = await pipe.execute()
        last_ids = [texts(ids)[0] for ids in latest if ids]
        by_id = {m.id: m for m in await self.messages(last_ids)}
        out: list[tuple[str, Message]] = []
        for other, ids in zip(others, latest, strict=True):
            if ids and texts(ids)[0] in by_id:
                out.append((other, by_id[texts(ids)[0]]))
        return out

    async def conversation(
        self, viewer: Account, other: str, before: str | None, limit: int
    ) -> list[Message]:
        """A page of the conversation, oldest first; `before` pages back in time."""
        start = upper_bound(before)
        if start is None:
            return []
        p = keys.partition_of(viewer.handle, self.partitions)
        ids = texts(
            await self.redis.zrange(
                keys.conversation(p, viewer.handle, other),
                start,
                "-",
                desc=True,
                bylex=True,
                offset=0,
                num=limit,
            )
        )
        ids.reverse()
        return await self.messages(ids)
