"""The api's write-side state, rebuilt from events: what a total loss of Redis takes away and
the log alone can give back — accounts (with token hashes, so old tokens keep working),
tokens, posters, follow records, the handles and members sets, `all_members` rules.

Each event is turned into exactly the writes services/api/muster/api/writes.py made when it
accepted that event (the same Account and Follow encodings; tests compare the two states).
Idempotency keys are not rebuilt: they live 24 hours and are not in the log.

Writes are queued on the caller's pipeline. The follow merges that depend on the current
record run as a script, in order, server-side; only a token reset reads first (it is rare).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from muster import keys, views
from muster.api.accounts import Account
from muster.api.follows import Follow
from muster.connection import text
from muster.events import (
    AccountCreated,
    AccountFollowed,
    AccountTokenReset,
    AccountUnfollowed,
    AnyEvent,
    ContactPointsChanged,
    FollowChannelsChanged,
    FollowerEnrolled,
    MembersEnrolled,
    PosterGranted,
    PosterRevoked,
)

# KEYS: the follower's follows hash   ARGV: op, followed handle, channels csv, mandatory (1/0),
# channel order csv.  op "channels": new channels, the record's mandatory flag kept (writes.follow);
# op "enrol": channels merged with the record's, mandatory the enrolment's (scripts.ENROL).
_FOLLOW_RECORD = """
local current = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[1] == 'channels' then
  local mandatory = '0'
  if current then
    mandatory = string.sub(current, string.find(current, '|', 1, true) + 1)
  end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|' .. mandatory)
  return 1
end
local chosen = {}
for c in string.gmatch(ARGV[3], '[^,]+') do chosen[c] = true end
if current then
  local cut = string.find(current, '|', 1, true)
  for c in string.gmatch(string.sub(current, 1, cut - 1), '[^,]+') do chosen[c] = true end
end
local merged = {}
for c in string.gmatch(ARGV[5], '[^,]+') do
  if chosen[c] then table.insert(merged, c) end
end
redis.call('HSET', KEYS[1], ARGV[2], table.concat(merged, ',') .. '|' .. ARGV[4])
return 1
"""

_CONTACT_FIELDS = ("email", "phone", "webhook_url", "webhook_secret")


class WriteSide:
    def __init__(self, redis: aioredis.Redis, *, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._follow = redis.register_script(_FOLLOW_RECORD)

    def _p(self, handle: str) -> int:
        return keys.partition_of(handle, self.partitions)

    async def queue(self, pipe: Any, event: AnyEvent) -> None:
        """Queue the writes of one event; AccountTokenReset needs `flush_token_reset` instead."""
        match event:
            case AccountCreated():
                self._created(pipe, event)
            case ContactPointsChanged():
                self._contacts(pipe, event)
            case PosterGranted():
                pipe.sadd(keys.posters(self._p(event.account), event.account), event.poster)
            case PosterRevoked():
                pipe.srem(keys.posters(self._p(event.account), event.account), event.poster)
            case AccountFollowed():
                record = Follow(event.account, tuple(event.channels), False)
                pipe.hset(self._follows(event.follower), event.account, record.encode())
            case FollowChannelsChanged():
                await self._follow_script(
                    pipe, "channels", event.follower, event.account, event.channels, False
                )
            case FollowerEnrolled():
                await self._follow_script(
                    pipe, "enrol", event.follower, event.account, event.channels, event.mandatory
                )
            case AccountUnfollowed():
                pipe.hdel(self._follows(event.follower), event.account)
            case MembersEnrolled():
                rule = Follow(event.account, tuple(event.channels), event.mandatory)
                pipe.hset(keys.ENROLMENT_RULES, event.account, rule.encode())
            case _:
                pass  # posts and DMs keep no write-side state (idempotency keys expire)

    @staticmethod
    def needs_read(event: AnyEvent) -> bool:
        return isinstance(event, AccountTokenReset)

    async def token_reset(self, event: AccountTokenReset) -> None:
        """writes.ensure_admin: the new hash on the account, the old token key gone."""
        key = keys.account(self._p(event.handle), event.handle)
        old = await self.redis.hget(key, "token_hash")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.token(event.token_hash), event.handle)
            pipe.hset(key, mapping={"token_hash": event.token_hash, "role": "admin"})
            pipe.hincrby(key, "rev", 1)
            if old is not None and text(old) != event.token_hash:
                pipe.delete(keys.token(text(old)))
            await pipe.execute()

    async def apply_batch(self, pipe: Any, batch: Sequence[AnyEvent]) -> None:
        """Queue a batch in order on `pipe`, executing it early around a token reset."""
        for event in batch:
            if isinstance(event, AccountTokenReset):
                await pipe.execute()
                await self.token_reset(event)
            else:
                await self.queue(pipe, event)

    # --- the writes ---------------------------------------------------------------------------
    def _follows(self, follower: str) -> str:
        return keys.follows(self._p(follower), follower)

    async def _follow_script(
        self,
        pipe: Any,
        op: str,
        follower: str,
        account: str,
        channels: Sequence[str],
        mandatory: bool,
    ) -> None:
        await self._follow(
            keys=[self._follows(follower)],
            args=[
                op,
                account,
                ",".join(channels),
                "1" if mandatory else "0",
                ",".join(keys.CHANNELS),
            ],
            client=pipe,
        )

    def _created(self, pipe: Any, event: AccountCreated) -> None:
        p = self._p(event.handle)
        account = Account(
            handle=event.handle,
            id=event.account_id,
            kind=event.kind,
            role=event.role,
            display_name=event.display_name,
            email=event.email,
            phone=event.phone,
            webhook_url=event.webhook_url,
            webhook_secret=event.webhook_secret,
            token_hash=event.token_hash,
            dm_channels=",".join(event.dm_channels),
            created_at=views.rfc3339(event.at),
            rev=1,
        )
        pipe.hset(keys.account(p, event.handle), mapping=account.to_hash())
        pipe.sadd(keys.handles(p), event.handle)
        if account.is_employee:
            pipe.sadd(keys.members(p), event.handle)
        if event.token_hash is not None:
            pipe.set(keys.token(event.token_hash), event.handle)

    def _contacts(self, pipe: Any, event: ContactPointsChanged) -> None:
        """writes.update_me: the profile as the event states it, and rev + 1."""
        key = keys.account(self._p(event.handle), event.handle)
        values: dict[str, str] = {
            "display_name": event.display_name,
            "dm_channels": ",".join(event.dm_channels),
        }
        cleared = []
        for name in _CONTACT_FIELDS:
            value = getattr(event, name)
            if value is None:
                cleared.append(name)
            else:
                values[name] = value
        pipe.hset(key, mapping=values)
        if cleared:
            pipe.hdel(key, *cleared)
        pipe.hincrby(key, "rev", 1)
