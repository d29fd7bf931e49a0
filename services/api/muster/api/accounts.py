"""Accounts' write-side records: the hash each account keeps in its partition (keys.account).

The api reads these to authorise and validate writes; they are written only together with
the event that changes them (writes.py). Nothing here formats a key by hand.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, fields
from typing import Any

import redis.asyncio as aioredis

from muster import keys

TOKEN_PREFIX = "mst_"  # noqa: S105 - a prefix, not a secret
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True, slots=True)
class Account:
    handle: str
    id: str
    kind: str
    role: str | None = None
    display_name: str = ""
    email: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    token_hash: str | None = None
    dm_channels: str = "app,email"  # csv, CHANNELS order
    created_at: str = ""
    rev: int = 0

    @property
    def is_admin(self) -> bool:
        return self.kind == "person" and self.role == "admin"

    @property
    def is_employee(self) -> bool:
        """Members and admins: the people who may see internal posts."""
        return self.kind == "person" and self.role in {"member", "admin"}

    def to_hash(self) -> dict[str, str]:
        """Field → value for HSET; None values are left out (and HDELed by the writer)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = str(value)
        return out


NULLABLE_FIELDS = tuple(
    f.name
    for f in fields(Account)
    if f.name not in {"handle", "id", "kind", "display_name", "dm_channels", "created_at", "rev"}
)


def from_hash(raw: dict[Any, Any]) -> Account | None:
    if not raw:
        return None
    values = {k.decode(): v.decode() for k, v in raw.items()}
    return Account(
        handle=values["handle"],
        id=values["id"],
        kind=values["kind"],
        role=values.get("role"),
        display_name=values.get("display_name", ""),
        email=values.get("email"),
        phone=values.get("phone"),
        webhook_url=values.get("webhook_url"),
        webhook_secret=values.get("webhook_secret"),
        token_hash=values.get("token_hash"),
        dm_channels=values.get("dm_channels", "app,email"),
        created_at=values.get("created_at", ""),
        rev=int(values.get("rev", "0")),
    )


def account_key(handle: str, partitions: int) -> str:
    return keys.account(keys.partition_of(handle, partitions), handle)


async def load(redis: aioredis.Redis, handle: str, partitions: int) -> Account | None:
    return from_hash(await redis.hgetall(account_key(handle, partitions)))


async def load_many(
    redis: aioredis.Redis, handles: list[str], partitions: int
) -> dict[str, Account | None]:
    async with redis.pipeline(transaction=False) as pipe:
        for handle in handles:
            pipe.hgetall(account_key(handle, partitions))
        replies = await pipe.execute()
    return {h: from_hash(r) for h, r in zip(handles, replies, strict=True)}


def new_token() -> str:
    """32 random bytes; only its SHA-256 is stored (a token is not a password: it has full entropy)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_webhook_secret() -> str:
    """Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
