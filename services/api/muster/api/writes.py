"""Every write of the api: check against current write-side state, then append the event
together with the state it changes, atomically. A refused write changes nothing.

Hot paths (posts, DMs, bulk enrolment) run one Lua script each (scripts.py); the rest use
WATCH/MULTI via `transact`. Only global uniqueness that cannot share a slot (a token's hash)
is claimed first and released if the append fails. The api never fans out or delivers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import WatchError

from muster import eventlog, events, keys, views
from muster.api import accounts, follows, scripts, validation
from muster.api.accounts import Account
from muster.api.follows import Follow
from muster.api.schemas import CreateAccount, UpdateMe
from muster.api.state import ApiState
from muster.errors import Conflict, Forbidden
from muster.events import utcnow

log = structlog.get_logger("muster.api.writes")
T = TypeVar("T")
_ENROL_BATCH = 1000
_BOOTSTRAP_WAIT_S = 10.0  # how long a starting api waits for another one creating `admin`


async def transact(
    redis: aioredis.Redis, watch: list[str], body: Callable[[Any], Awaitable[T]]
) -> T:
    """Run `body(pipe)` under WATCH until it commits: it reads, calls pipe.multi(), queues writes."""
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(*watch)
                result = await body(pipe)
                if pipe.explicit_transaction:
                    await pipe.execute()
                return result
            except WatchError:
                continue


def _enrol_args(
    state: ApiState,
    follower: str,
    account: str,
    channels: tuple[str, ...],
    mandatory: bool,
    actor: str,
    external: bool = False,
) -> tuple[list[str], list[str | bytes]]:
    partitions = state.settings.partitions
    event = events.FollowerEnrolled(
        id=state.ids.next(),
        actor=actor,
        at=utcnow(),
        follower=follower,
        account=account,
        channels=channels,
        mandatory=mandatory,
        external=external,
    )
    p = keys.partition_of(follower, partitions)
    return (
        [keys.follows(p, follower), keys.events(p)],
        [
            account,
            ",".join(channels),
            "1" if mandatory else "0",
            events.encode(event),
            ",".join(keys.CHANNELS),
        ],
    )


# --- accounts -------------------------------------------------------------------------------
async def create_account(
    state: ApiState,
    actor: str,
    req: CreateAccount,
    role: str | None,
    *,
    token: str | None = None,
) -> tuple[Account, str | None]:
    """Append AccountCreated with the account's state; returns it and its token (once)."""
    redis, partitions = state.redis, state.settings.partitions
    if token is None and req.kind in {"person", "service"}:
        token = accounts.new_token()
    token_hash = accounts.hash_token(token) if token else None
    now = utcnow()
    account = Account(
        handle=req.handle,
        id=state.ids.next(),
        kind=req.kind,
        role=role,
        display_name=req.display_name or req.handle,
        email=req.email,
        phone=req.phone,
        webhook_url=req.webhook_url,
        webhook_secret=accounts.new_webhook_secret() if req.webhook_url else None,
        token_hash=token_hash,
        created_at=views.rfc3339(now),
        rev=1,
    )
    employee = account.is_employee
    rules = await _enrolment_rules(redis) if employee else {}
    if token_hash is not None and not await redis.set(keys.token(token_hash), req.handle, nx=True):
        raise Conflict("token collision; try again", code="token_collision")  # 2^-256: never
    p = keys.partition_of(req.handle, partitions)
    key = keys.account(p, req.handle)

    async def body(pipe: Any) -> None:
        if await pipe.exists(key):
            raise Conflict(f"handle {req.handle!r} is taken", code="handle_taken", field="handle")
        pipe.multi()
        pipe.hset(key, mapping=account.to_hash())
        pipe.sadd(keys.handles(p), req.handle)
        if employee:
            pipe.sadd(keys.members(p), req.handle)
        eventlog.append(
            pipe,
            events.AccountCreated(
                id=account.id,
                actor=actor,
                at=now,
                handle=account.handle,
                account_id=account.id,
                kind=account.kind,
                role=account.role,
                display_name=account.display_name,
                email=account.email,
                phone=account.phone,
                webhook_url=account.webhook_url,
                webhook_secret=account.webhook_secret,
                token_hash=token_hash,
            ),
            partitions,
        )
        for target, follow in rules.items():
            keys_, argv = _enrol_args(
                state, req.handle, target, follow.channels, follow.mandatory, "system"
            )
            pipe.eval(scripts.ENROL, 2, *keys_, *argv)

    try:
        await transact(redis, [key], body)
    except BaseException:
        if token_hash is not None:
            await redis.delete(keys.token(token_hash))
        raise
    if employee:
        # A rule added while we were creating the account: its enrolment scanned the members
        # before we joined them, so apply it here (enrolling twice is harmless).
        late = {t: f for t, f in (await _enrolment_rules(redis)).items() if t not in rules}
        for target, follow in late.items():
            await enrol_one(state, req.handle, target, follow.channels, follow.mandatory, "system")
    state.metrics.ingested.labels("AccountCreated").inc()
    return account, token


async def ensure_admin(state: ApiState, token: str) -> None:
    """MUSTER_ADMIN_TOKEN: make sure `admin` exists and that this token is its token."""
    redis, partitions = state.redis, state.settings.partitions
    token_hash = accounts.hash_token(token)
    existing = await accounts.load(redis, "admin", partitions)
    deadline = time.monotonic() + _BOOTSTRAP_WAIT_S
    while existing is None:
        try:
            await create_account(
                state,
                "system",
                CreateAccount(handle="admin", kind="person", display_name="Administrator"),
                "admin",
                token=token,
            )
        except Conflict:
            # Another api process starting at the same time holds the token (or the handle)
            # and is creating the account: wait for its commit, then check its token below.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            log.info("admin account created from MUSTER_ADMIN_TOKEN")
            return
        existing = await accounts.load(redis, "admin", partitions)
    if existing.token_hash == token_hash:
        return
    old_hash = existing.token_hash
    await redis.set(keys.token(token_hash), "admin")
    key = accounts.account_key("admin", partitions)

    async def body(pipe: Any) -> None:
        pipe.multi()
        pipe.hset(key, mapping={"token_hash": token_hash, "role": "admin"})
        pipe.hincrby(key, "rev", 1)
        eventlog.append(
            pipe,
            events.AccountTokenReset(
                id=state.ids.next(),
                actor="system",
                at=utcnow(),
                handle="admin",
                token_hash=token_hash,
            ),
            partitions,
        )

    await transact(redis, [key], body)
    if old_hash and old_hash != token_hash:
        await redis.delete(keys.token(old_hash))
    log.info("admin token replaced from MUSTER_ADMIN_TOKEN")


async def update_me(state: ApiState, caller: Account, req: UpdateMe) -> tuple[Account, str | None]:
    """Apply a PATCH /v1/me; returns the new account and a webhook secret if one was made now."""
    redis, partitions = state.redis, state.settings.partitions
    key = accounts.account_key(caller.handle, partitions)

    async def body(pipe: Any) -> tuple[Account, str | None]:
        current = accounts.from_hash(await pipe.hgetall(key))
        assert current is not None
        changes: dict[str, Any] = {
            name: getattr(req, name)
            for name in ("display_name", "email", "phone", "webhook_url")
            if getattr(req, name) is not msgspec.UNSET
        }
        if not isinstance(req.dm_channels, msgspec.UnsetType):
            changes["dm_channels"] = ",".join(validation.channels(list(req.dm_channels)))
        secret = None
        if changes.get("webhook_url") and current.webhook_secret is None:
            secret = changes["webhook_secret"] = accounts.new_webhook_secret()
        if changes.get("display_name") == "":
            changes["display_name"] = current.handle
        updated = dataclasses.replace(current, rev=current.rev + 1, **changes)
        pipe.multi()
        pipe.hset(key, mapping=updated.to_hash())
        cleared = [f for f in accounts.NULLABLE_FIELDS if getattr(updated, f) is None]
        if cleared:
            pipe.hdel(key, *cleared)
        eventlog.append(
            pipe,
            events.ContactPointsChanged(
                id=state.ids.next(),
                actor=caller.handle,
                at=utcnow(),
                handle=caller.handle,
                display_name=updated.display_name,
                email=updated.email,
                phone=updated.phone,
                webhook_url=updated.webhook_url,
                webhook_secret=updated.webhook_secret,
                dm_channels=tuple(updated.dm_channels.split(",")),
            ),
            partitions,
        )
        if "webhook_url" in changes:  # a new URL gets a fresh chance after a 410
            p = keys.partition_of(caller.handle, partitions)
            pipe.srem(keys.webhooks_disabled(p), caller.handle)
        return updated, secret

    result = await transact(redis, [key], body)
    state.tokens.forget(caller.handle)
    state.metrics.ingested.labels("ContactPointsChanged").inc()
    return result


async def set_poster(
    state: ApiState, admin: Account, account: str, poster: str, *, grant: bool
) -> None:
    partitions = state.settings.partitions
    key = keys.posters(keys.partition_of(account, partitions), account)

    async def body(pipe: Any) -> None:
        present = bool(await pipe.sismember(key, poster))
        if present == grant:
            return
        pipe.multi()
        (pipe.sadd if grant else pipe.srem)(key, poster)
        kind = events.PosterGranted if grant else events.PosterRevoked
        eventlog.append(
            pipe,
            kind(
                id=state.ids.next(), actor=admin.handle, at=utcnow(), account=account, poster=poster
            ),
            partitions,
        )

    await transact(state.redis, [key], body)


# --- follows --------------------------------------------------------------------------------
def follows_key(handle: str, partitions: int) -> str:
    return keys.follows(keys.partition_of(handle, partitions), handle)


async def follow(
    state: ApiState, follower: Account, target: str, channels: tuple[str, ...] | None
) -> Follow:
    partitions = state.settings.partitions
    key = follows_key(follower.handle, partitions)

    async def body(pipe: Any) -> Follow:
        raw = await pipe.hget(key, target)
        current = follows.decode(target, raw) if raw is not None else None
        if current is not None and (channels is None or channels == current.channels):
            return current
        wanted = channels or ("app",)
        event: events.Event
        if current is None:
            record = Follow(target, wanted, False)
            event = events.AccountFollowed(
                id=state.ids.next(),
                actor=follower.handle,
                at=utcnow(),
                follower=follower.handle,
                account=target,
                channels=wanted,
                external=follower.role == "external",
            )
        else:
            record = Follow(target, wanted, current.mandatory)
            event = events.FollowChannelsChanged(
                id=state.ids.next(),
                actor=follower.handle,
                at=utcnow(),
                follower=follower.handle,
                account=target,
                channels=wanted,
            )
        pipe.multi()
        pipe.hset(key, target, record.encode())
        eventlog.append(pipe, event, partitions)
        return record

    return await transact(state.redis, [key], body)


async def unfollow(state: ApiState, follower: Account, target: str) -> None:
    partitions = state.settings.partitions
    key = follows_key(follower.handle, partitions)

    async def body(pipe: Any) -> None:
        raw = await pipe.hget(key, target)
        if raw is None:
            return
        if follows.decode(target, raw).mandatory:
            raise Forbidden(
                f"following {target} is mandatory for you; an admin enrolled you",
                code="mandatory_follow",
            )
        pipe.multi()
        pipe.hdel(key, target)
        eventlog.append(
            pipe,
            events.AccountUnfollowed(
                id=state.ids.next(),
                actor=follower.handle,
                at=utcnow(),
                follower=follower.handle,
                account=target,
            ),
            partitions,
        )

    await transact(state.redis, [key], body)


async def list_follows(state: ApiState, follower: Account) -> list[Follow]:
    raw: dict[Any, Any] = await state.redis.hgetall(
        follows_key(follower.handle, state.settings.partitions)
    )
    return sorted((follows.decode(k.decode(), v) for k, v in raw.items()), key=lambda f: f.account)


async def enrol_one(
    state: ApiState,
    follower: str,
    account: str,
    channels: tuple[str, ...],
    mandatory: bool,
    actor: str,
) -> None:
    keys_, argv = _enrol_args(state, follower, account, channels, mandatory, actor)
    await state.redis.eval(scripts.ENROL, 2, *keys_, *argv)


async def enrol(
    state: ApiState,
    admin: Account,
    account: str,
    followers: dict[str, bool] | None,
    channels: tuple[str, ...],
    mandatory: bool,
) -> int:
    """Make each follower (handle → is external; None: every member, now and later) follow
    `account`; returns how many."""
    redis, partitions = state.redis, state.settings.partitions
    if followers is None:
        # The rule first, then the scan of members: a member created meanwhile either is in
        # the scan or reads the rule itself (create_account), so nobody is missed.
        rule = Follow(account, channels, mandatory)
        await redis.hset(keys.ENROLMENT_RULES, account, rule.encode())
        async with redis.pipeline(transaction=True) as pipe:
            eventlog.append(
                pipe,
                events.MembersEnrolled(
                    id=state.ids.next(),
                    actor=admin.handle,
                    at=utcnow(),
                    account=account,
                    channels=channels,
                    mandatory=mandatory,
                ),
                partitions,
            )
            await pipe.execute()
        followers = dict.fromkeys(sorted(await _all_members(redis, partitions)), False)
    targets = [(f, external) for f, external in followers.items() if f != account]
    for start in range(0, len(targets), _ENROL_BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for follower, external in targets[start : start + _ENROL_BATCH]:
                keys_, argv = _enrol_args(
                    state, follower, account, channels, mandatory, admin.handle, external
                )
                pipe.eval(scripts.ENROL, 2, *keys_, *argv)
            await pipe.execute()
    state.metrics.ingested.labels("FollowerEnrolled").inc(len(targets))
    return len(targets)


async def _all_members(redis: aioredis.Redis, partitions: int) -> set[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):
            pipe.smembers(keys.members(p))
        replies: list[Any] = await pipe.execute()
    return {m.decode() for reply in replies for m in reply}


async def _enrolment_rules(redis: aioredis.Redis) -> dict[str, Follow]:
    raw: dict[Any, Any] = await redis.hgetall(keys.ENROLMENT_RULES)
    return {k.decode(): follows.decode(k.decode(), v) for k, v in raw.items()}
