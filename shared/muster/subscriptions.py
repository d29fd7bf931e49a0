"""Subscriptions of people without an account: their identity, and their changes of state.

A subscription is one (account, channel, address). Its id is derived from those three
(`subscription_id`), so asking again for the same address finds the same subscription, and
its recipient name `sub-<id>` (records.subscriber_recipient) decides its partition, where
its record, its place in routing and its events live together (one slot).

`change` is the one way a subscription's state changes after it was asked for: read the
record under WATCH, let the caller decide on an event from it, then apply that event
(writeside.WriteSide.apply, the function replay uses) and append it in one MULTI. The api
uses it for confirmations and endings, the delivery worker for a webhook's handshake.
It never sends anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from muster import eventlog, keys
from muster.events import SubscriptionConfirmed, SubscriptionEnded
from muster.records import (
    Subscription,
    subscriber_recipient,
    subscription_address,
    subscription_of,
)
from muster.writeside import WriteSide

Change = SubscriptionConfirmed | SubscriptionEnded


def subscription_id(account: str, channel: str, address: str) -> str:
    """20 hex digits of SHA-256 over the account, channel and address (as compared)."""
    data = "\n".join((account, channel, subscription_address(channel, address))).encode()
    return hashlib.sha256(data).hexdigest()[:20]


def partition(subscription: str, partitions: int) -> int:
    return keys.partition_of(subscriber_recipient(subscription), partitions)


def secret_hash(subscription: str, secret: str) -> str:
    """What is stored of a confirmation token or code: SHA-256 over the subscription id and
    the secret (a code is short: bound to its subscription, it proves nothing elsewhere)."""
    return hashlib.sha256(f"{subscription}\n{secret}".encode()).hexdigest()


def secret_matches(subscription: str, secret: str, stored: str) -> bool:
    return bool(stored) and hmac.compare_digest(secret_hash(subscription, secret), stored)


def new_token() -> str:
    """A confirmation or unsubscribe token: 32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def new_code() -> str:
    """An SMS confirmation code: 6 random digits (bound to its subscription, 24 h, and
    wrong guesses are counted: api.subscribing)."""
    return f"{secrets.randbelow(10**6):06d}"


def token_hash(token: str) -> str:
    """keys.unsubscribe_token is keyed by SHA-256 of the token (the token is never kept)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def load(redis: aioredis.Redis, subscription: str, partitions: int) -> Subscription | None:
    key = keys.subscription(partition(subscription, partitions), subscription)
    return subscription_of(await redis.hgetall(key))


async def change(
    redis: aioredis.Redis,
    writeside: WriteSide,
    partitions: int,
    subscription: str,
    decide: Callable[[Subscription | None], Change | None],
) -> Change | None:
    """Append the event `decide` makes of the current record, with its writes, in one MULTI
    under WATCH of the record (a concurrent change makes it decide again). `decide` may
    raise to refuse (nothing is written) or return None (nothing to do)."""
    key = keys.subscription(partition(subscription, partitions), subscription)
    pipeline: Any = redis.pipeline(transaction=True)
    async with pipeline as pipe:
        while True:
            try:
                await pipe.watch(key)
                event = decide(subscription_of(await pipe.hgetall(key)))
                if event is None:
                    await pipe.unwatch()
                    return None
                pipe.multi()
                await writeside.apply(pipe, event)
                eventlog.append(pipe, event, partitions)
                await pipe.execute()
                return event
            except WatchError:
                continue
