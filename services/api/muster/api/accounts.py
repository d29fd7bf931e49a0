"""Accounts as the api loads them (records.Account, from keys.account), and the secrets
it makes for them: tokens (only their hash is stored) and webhook secrets."""

from __future__ import annotations

import base64
import hashlib
import secrets

import redis.asyncio as aioredis

from muster import keys
from muster.records import Account, account_of, email_key, email_range, handle_of_entry

TOKEN_PREFIX = "mst_"  # noqa: S105 - a prefix, not a secret
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def account_key(handle: str, partitions: int) -> str:
    return keys.account(keys.partition_of(handle, partitions), handle)


async def load(redis: aioredis.Redis, handle: str, partitions: int) -> Account | None:
    return account_of(await redis.hgetall(account_key(handle, partitions)))


async def load_many(
    redis: aioredis.Redis, handles: list[str], partitions: int
) -> dict[str, Account | None]:
    async with redis.pipeline(transaction=False) as pipe:
        for handle in handles:
            pipe.hgetall(account_key(handle, partitions))
        replies = await pipe.execute()
    return {h: account_of(r) for h, r in zip(handles, replies, strict=True)}


async def with_email(redis: aioredis.Redis, address: str, partitions: int) -> list[Account]:
    """The accounts whose email contact point is `address` (ASCII case aside), by handle,
    from the email index (keys.emails) of every partition."""
    low, high = email_range(address)
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):
            pipe.zrangebylex(keys.emails(p), low, high)
        replies: list[list[bytes]] = await pipe.execute()
    handles = sorted({handle_of_entry(entry) for reply in replies for entry in reply})
    found = await load_many(redis, handles, partitions) if handles else {}
    # The index changes with the account in one MULTI; checking again costs nothing.
    wanted = email_key(address)
    return [a for a in found.values() if a is not None and email_key(a.email or "") == wanted]


def new_token() -> str:
    """32 random bytes; only its SHA-256 is stored (a token is not a password: it has full entropy)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_webhook_secret() -> str:
    """Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
