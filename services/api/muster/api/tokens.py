"""Bearer-token authentication: header → token hash → account, with an in-process cache that
every api process drops at once when a token stops working.

Tokens are stored only as SHA-256 (keys.token → the holder: a handle for the account's own
token, `handle/id` for a named token). The cache holds an account for at most TOKEN_TTL_S,
so the ingest hot path costs no extra round trip. A token reset, a revoked named token or a
deactivation must take effect on the very next request in every process, so the writer
`announce`s the handle on keys.AUTH_CHANGES after its commit and waits (bounded) until every
subscribed process has dropped the handle and acknowledged; only then does it answer. A
process whose subscription is down caches nothing (every request reads Redis) and clears its
cache when it subscribes again, since it may have missed a change meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis
import structlog
from fastapi import Request
from redis.exceptions import RedisError

from muster import keys
from muster.api import accounts
from muster.connection import text
from muster.errors import Forbidden, Unauthorized
from muster.records import Account, named_token_of

log = structlog.get_logger("muster.api.tokens")

TOKEN_TTL_S = 5.0
"""The longest a cached account is used without reading Redis (a backstop: changes are
announced and dropped at once)."""
_CACHE_MAX = 50_000
ANNOUNCE_WAIT_S = 2.0
"""How long a writer waits for every api process to acknowledge a change before answering
anyway (a process that has not acknowledged by then stops trusting its cache in TOKEN_TTL_S)."""
_RESUBSCRIBE_S = 0.5


class TokenCache:
    def __init__(self, redis: aioredis.Redis, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._cache: dict[str, tuple[float, Account]] = {}
        self._standing: dict[str, tuple[float, str, bool]] = {}  # handle → (until, kind, active)
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    async def start(self, listener: aioredis.Redis) -> None:
        """Subscribe to keys.AUTH_CHANGES on `listener` (a client of its own: the
        subscription holds a connection for good); returns once subscribed, or after a
        bounded wait (until then nothing is cached)."""
        subscribed = asyncio.Event()
        self._task = asyncio.create_task(
            self._listen(listener, subscribed), name="muster-auth-changes"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(subscribed.wait(), timeout=2.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._listening = False

    async def _listen(self, listener: aioredis.Redis, subscribed: asyncio.Event) -> None:
        while True:
            try:
                async with listener.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.AUTH_CHANGES)
                    self._cache.clear()  # changes made while we were not listening
                    self._standing.clear()
                    self._listening = True
                    subscribed.set()
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "message":
                            await self._changed(text(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("auth change subscription lost; not caching", error=str(exc))
            finally:
                self._listening = False
                self._cache.clear()
                self._standing.clear()
            await asyncio.sleep(_RESUBSCRIBE_S)

    async def _changed(self, message: str) -> None:
        handle, _, ack = message.partition(" ")
        self.forget(handle)
        if ack:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(ack)
                pipe.expire(ack, keys.AUTH_ACK_TTL_S)
                await pipe.execute()

    async def account_for(self, token: str) -> Account | None:
        """The account `token` belongs to (deactivated ones too: callers decide), or None."""
        token_hash = accounts.hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(token_hash)
        if hit is not None and hit[0] > now and self._listening:
            return hit[1]
        raw = await self.redis.get(keys.token(token_hash))
        if raw is None:
            return None
        handle, _, token_id = text(raw).partition("/")
        account = await accounts.load(self.redis, handle, self.partitions)
        if account is None:
            return None
        until = now + TOKEN_TTL_S
        if token_id:
            p = keys.partition_of(handle, self.partitions)
            stored = await self.redis.hget(keys.api_tokens(p, handle), token_id)
            if stored is None:
                return None
            named = named_token_of(stored)
            wall = datetime.now(UTC)
            if named.token_hash != token_hash or named.expired(wall):
                return None
            if named.expires_at is not None:
                until = min(until, now + (named.expires_at - wall).total_seconds())
        elif account.token_hash != token_hash:
            return None
        if self._listening:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[token_hash] = (until, account)
        return account

    async def standing(self, handle: str) -> tuple[str, bool] | None:
        """An account's kind and whether it is active (None: no such account), cached like
        accounts by token: requests that name another account (post as a team, DM a
        person) check it without a round trip."""
        now = time.monotonic()
        hit = self._standing.get(handle)
        if hit is not None and hit[0] > now and self._listening:
            return hit[1], hit[2]
        account = await accounts.load(self.redis, handle, self.partitions)
        if account is None:
            return None
        if self._listening:
            if len(self._standing) >= _CACHE_MAX:
                self._standing.clear()
            self._standing[handle] = (now + TOKEN_TTL_S, account.kind, account.active)
        return account.kind, account.active

    def forget(self, handle: str) -> None:
        """Drop cached entries of `handle` (its account or one of its tokens changed)."""
        self._standing.pop(handle, None)
        for token_hash, (_, account) in list(self._cache.items()):
            if account.handle == handle:
                self._cache.pop(token_hash, None)


async def announce(redis: aioredis.Redis, handle: str) -> int:
    """After a committed change that can stop a token of `handle` working: tell every api
    process and wait until each has dropped its cache (at most ANNOUNCE_WAIT_S). Returns
    how many acknowledged."""
    ack = keys.auth_ack(secrets.token_hex(8))
    listeners = int(await redis.publish(keys.AUTH_CHANGES, f"{handle} {ack}"))
    deadline = time.monotonic() + ANNOUNCE_WAIT_S
    acked = 0
    while True:
        acked = int(await redis.get(ack) or 0)
        if acked >= listeners:
            break
        if time.monotonic() > deadline:
            log.warning("not every api process acknowledged", handle=handle, of=listeners)
            break
        await asyncio.sleep(0.002)
    await redis.delete(ack)
    return acked


def bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization: Bearer <token>", code="missing_token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be `Bearer <token>`", code="missing_token")
    return token.strip()


async def authenticate(request: Request) -> Account:
    cache: TokenCache = request.app.state.muster.tokens
    account = await cache.account_for(bearer(request))
    if account is None:
        raise Unauthorized("unknown token", code="unknown_token")
    if not account.active:
        raise Unauthorized(
            f"the account {account.handle} is deactivated", code="account_deactivated"
        )
    return account


async def require_admin(request: Request) -> Account:
    caller = await authenticate(request)
    if not caller.is_admin:
        raise Forbidden("only admins may do this", code="admin_only")
    return caller


async def require_person(request: Request) -> Account:
    caller = await authenticate(request)
    if caller.kind != "person":
        raise Forbidden("only people may do this", code="person_only")
    return caller


async def optional_viewer(request: Request) -> Account | None:
    """Routes anyone may read: anonymous without a header, 401 with a bad one."""
    if request.headers.get("authorization") is None:
        return None
    return await authenticate(request)
