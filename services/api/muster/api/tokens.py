"""Bearer-token authentication: header → token hash → account, with a short in-process cache.

Tokens are stored only as SHA-256 (keys.token). The cache holds an account for a few seconds
so the ingest hot path costs no extra round trip; a changed account is seen within TOKEN_TTL_S.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from fastapi import Request

from muster import keys
from muster.api import accounts
from muster.errors import Forbidden, Unauthorized
from muster.records import Account

TOKEN_TTL_S = 5.0
_CACHE_MAX = 50_000


class TokenCache:
    def __init__(self, redis: aioredis.Redis, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._cache: dict[str, tuple[float, Account]] = {}

    async def account_for(self, token: str) -> Account | None:
        token_hash = accounts.hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(token_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        raw = await self.redis.get(keys.token(token_hash))
        if raw is None:
            return None
        handle = raw.decode() if isinstance(raw, bytes) else str(raw)
        account = await accounts.load(self.redis, handle, self.partitions)
        if account is None or account.token_hash != token_hash:
            return None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token_hash] = (now + TOKEN_TTL_S, account)
        return account

    def forget(self, handle: str) -> None:
        """Drop cached entries of `handle` after this process changed its account."""
        for token_hash, (_, account) in list(self._cache.items()):
            if account.handle == handle:
                self._cache.pop(token_hash, None)


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
