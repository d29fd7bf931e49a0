"""Every write of the api: check against current write-side state, build the event, then
append it together with the state it changes (muster.writeside: the same function replay
applies), atomically. A refused write changes nothing.

Hot paths (posts, DMs, bulk enrolment) run one Lua script each (scripts.py, lua/enrol.lua);
the rest use WATCH/MULTI via `transact`. Only global uniqueness that cannot share a slot (a token's hash)
is claimed first and released if the append fails. The api never fans out or delivers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import WatchError

from muster import eventlog, events, keys
from muster.api import accounts, tokens, validation
from muster.api.auditlog import AuditQuery
from muster.api.schemas import CreateAccount, UpdateMe
from muster.api.state import ApiState
from muster.connection import in_multi
from muster.errors import Conflict, Forbidden, Invalid, NotFound
from muster.events import utcnow
from muster.records import Account, Follow, NamedToken, Rule, account_of, follow_of, named_token_of
from muster.writeside import (
    account_of_event,
    enrolment_rules,
    named_token_holder,
    reopened_channels,
)

log = structlog.get_logger("muster.api.writes")
T = TypeVar("T")
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
                if in_multi(pipe):
                    await pipe.execute()
                return result
            except WatchError:
                continue


def _enrolment(
    state: ApiState,
    follower: str,
    account: str,
    channels: tuple[str, ...],
    mandatory: bool,
    actor: str,
    external: bool = False,
) -> events.FollowerEnrolled:
    return events.FollowerEnrolled(
        id=state.ids.next(),
        actor=actor,
        at=utcnow(),
        follower=follower,
        account=account,
        channels=channels,
        mandatory=mandatory,
        external=external,
    )


# --- accounts -------------------------------------------------------------------------------
async def create_account(
    state: ApiState,
    actor: str,
    req: CreateAccount,
    role: str | None,
    *,
    token: str | None = None,
    with_events: Sequence[events.AnyEvent] = (),
) -> tuple[Account, str | None]:
    """Append AccountCreated with the account's state, and `with_events` (of the same
    account's partition) in the same step; returns it and its token (once)."""
    redis, partitions = state.redis, state.settings.partitions
    if token is None and req.kind in {"person", "service"}:
        token = accounts.new_token()
    token_hash = accounts.hash_token(token) if token else None
    account_id = state.ids.next()
    created = events.AccountCreated(
        id=account_id,
        actor=actor,
        at=utcnow(),
        handle=req.handle,
        account_id=account_id,
        kind=req.kind,
        role=role,
        display_name=req.display_name or req.handle,
        email=req.email,
        phone=req.phone,
        webhook_url=req.webhook_url,
        webhook_secret=accounts.new_webhook_secret() if req.webhook_url else None,
        token_hash=token_hash,
    )
    account = account_of_event(created)
    employee = account.is_employee
    rules = await _enrolment_rules(state) if employee else {}
    if token_hash is not None and not await redis.set(keys.token(token_hash), req.handle, nx=True):
        raise Conflict("token collision; try again", code="token_collision")  # 2^-256: never
    p = keys.partition_of(req.handle, partitions)
    key = keys.account(p, req.handle)

    async def body(pipe: Any) -> None:
        # EXISTS as a plain command: redis-py's cluster pipeline splits `exists()` by slot
        # and answers with the pipeline itself, even under WATCH
        if await pipe.execute_command("EXISTS", key):
            raise Conflict(f"handle {req.handle!r} is taken", code="handle_taken", field="handle")
        pipe.multi()
        for event in (created, *with_events):
            await state.writeside.apply(pipe, event)
            eventlog.append(pipe, event, partitions)
        for rule in rules.values():
            await _enrol_member(state, pipe, req.handle, rule)

    try:
        await transact(redis, [key], body)
    except BaseException:
        if token_hash is not None:
            await redis.delete(keys.token(token_hash))
        raise
    if employee:
        # A rule written while we were creating the account: its expansion may have read the
        # members before we joined them, so apply it here (its done set enrols us once).
        late = [r for t, r in (await _enrolment_rules(state)).items() if rules.get(t) != r]
        if late:
            async with redis.pipeline(transaction=False) as pipe:
                for rule in late:
                    await _enrol_member(state, pipe, req.handle, rule)
                await pipe.execute()
    state.metrics.ingested.labels("AccountCreated").inc()
    for event in with_events:
        state.metrics.ingested.labels(events.event_type(event)).inc()
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
    await _replace_token(state, "system", "admin", token, role="admin")
    log.info("admin token replaced from MUSTER_ADMIN_TOKEN")


async def reset_token(state: ApiState, actor: str, handle: str) -> str:
    """A new token for a person or service (POST /v1/accounts/{handle}/token); the old one
    stops working in every api process before this returns."""
    token = accounts.new_token()
    await _replace_token(state, actor, handle, token, role=None)
    return token


async def _replace_token(
    state: ApiState, actor: str, handle: str, token: str, *, role: str | None
) -> None:
    redis, partitions = state.redis, state.settings.partitions
    token_hash = accounts.hash_token(token)
    await _claim_token(redis, token_hash, handle)
    key = accounts.account_key(handle, partitions)
    old_hash: str | None = None

    async def body(pipe: Any) -> None:
        nonlocal old_hash
        current = account_of(await pipe.hgetall(key))
        if current is None:
            raise NotFound(f"no account {handle!r}", code="no_such_account")
        if current.kind not in {"person", "service"}:
            raise Invalid(f"a {current.kind} has no token", code="no_token", field="handle")
        old_hash = current.token_hash
        reset = events.AccountTokenReset(
            id=state.ids.next(),
            actor=actor,
            at=utcnow(),
            handle=handle,
            token_hash=token_hash,
            role=role,
        )
        pipe.multi()
        await state.writeside.apply(pipe, reset)
        eventlog.append(pipe, reset, partitions)

    try:
        await transact(redis, [key], body)
    except BaseException:
        await redis.delete(keys.token(token_hash))
        raise
    if old_hash and old_hash != token_hash:
        await redis.delete(keys.token(old_hash))
    await _revoked(state, handle)
    state.metrics.ingested.labels("AccountTokenReset").inc()


async def _claim_token(redis: aioredis.Redis, token_hash: str, holder: str) -> None:
    """Claim a token's key before appending (keys.token is outside every partition)."""
    if not await redis.set(keys.token(token_hash), holder, nx=True):
        raise Conflict("token collision; try again", code="token_collision")  # 2^-256: never


async def _revoked(state: ApiState, handle: str) -> None:
    """A token of `handle` may have stopped working: no api process may use a cached one."""
    state.tokens.forget(handle)
    await tokens.announce(state.redis, handle)


async def set_active(state: ApiState, actor: str, handle: str, active: bool) -> Account:
    """Deactivate or reactivate an account (PATCH /v1/accounts/{handle}); no event when it
    is already so. Deactivation takes effect in every api process before this returns."""
    redis, partitions = state.redis, state.settings.partitions
    key = accounts.account_key(handle, partitions)
    changed = False

    async def body(pipe: Any) -> Account:
        nonlocal changed
        current = account_of(await pipe.hgetall(key))
        if current is None:
            raise NotFound(f"no account {handle!r}", code="no_such_account")
        if current.active == active:
            return current
        change: events.AccountDeactivated | events.AccountReactivated
        if active:
            change = events.AccountReactivated(
                id=state.ids.next(),
                actor=actor,
                at=utcnow(),
                handle=handle,
                channels=reopened_channels(current),
            )
        else:
            change = events.AccountDeactivated(
                id=state.ids.next(), actor=actor, at=utcnow(), handle=handle
            )
        pipe.multi()
        await state.writeside.apply(pipe, change)
        eventlog.append(pipe, change, partitions)
        changed = True
        return dataclasses.replace(current, active=active, rev=current.rev + 1)

    account = await transact(redis, [key], body)
    if changed:
        await _revoked(state, handle)
        state.metrics.ingested.labels(
            "AccountReactivated" if active else "AccountDeactivated"
        ).inc()
    return account


async def record_audit_read(
    state: ApiState, auditor: Account, route: str, query: AuditQuery
) -> None:
    """Append AuditRead before an auditor's read of the audit log (DMs' text included)."""
    read = events.AuditRead(
        id=state.ids.next(),
        actor=auditor.handle,
        at=utcnow(),
        route=route,
        since=query.since,
        until=query.until,
        account=query.account,
        event_type=query.type,
        after=query.after,
    )
    async with state.redis.pipeline(transaction=True) as pipe:
        eventlog.append(pipe, read, state.settings.partitions)
        await pipe.execute()
    state.metrics.ingested.labels("AuditRead").inc()


# --- named tokens ---------------------------------------------------------------------------
MAX_NAMED_TOKENS = 100
"""Live named tokens one person may hold (expired ones are revoked as new ones are made)."""


async def create_named_token(
    state: ApiState, account: Account, name: str, *, expires_at: datetime | None = None
) -> tuple[NamedToken, str]:
    """A named token for `account` (POST /v1/me/tokens; company sign-in's web sessions):
    returned once with its secret, which is never stored. Expired tokens are revoked in the
    same step, so sessions that ran out do not pile up."""
    redis, partitions = state.redis, state.settings.partitions
    token = accounts.new_token()
    token_hash = accounts.hash_token(token)
    token_id = state.ids.next()
    await _claim_token(redis, token_hash, named_token_holder(account.handle, token_id))
    key = keys.api_tokens(keys.partition_of(account.handle, partitions), account.handle)
    expired: list[NamedToken] = []

    async def body(pipe: Any) -> NamedToken:
        now = utcnow()
        held = [named_token_of(raw) for raw in (await pipe.hgetall(key)).values()]
        expired[:] = [t for t in held if t.expired(now)]
        if len(held) - len(expired) >= MAX_NAMED_TOKENS:
            raise Conflict(
                f"at most {MAX_NAMED_TOKENS} tokens; revoke one first", code="too_many_tokens"
            )
        created = events.NamedTokenCreated(
            id=token_id,
            actor=account.handle,
            at=now,
            handle=account.handle,
            token_id=token_id,
            name=name,
            token_hash=token_hash,
            expires_at=expires_at,
        )
        pipe.multi()
        for old in expired:
            await _append_revoke(state, pipe, account.handle, old, actor="system")
        await state.writeside.apply(pipe, created)
        eventlog.append(pipe, created, partitions)
        return NamedToken(
            id=token_id, name=name, token_hash=token_hash, created_at=now, expires_at=expires_at
        )

    try:
        made = await transact(redis, [key], body)
    except BaseException:
        await redis.delete(keys.token(token_hash))
        raise
    if expired:
        await redis.delete(*(keys.token(t.token_hash) for t in expired))
    state.metrics.ingested.labels("NamedTokenCreated").inc()
    return made, token


async def _append_revoke(
    state: ApiState, pipe: Any, handle: str, token: NamedToken, *, actor: str
) -> None:
    revoked = events.NamedTokenRevoked(
        id=state.ids.next(),
        actor=actor,
        at=utcnow(),
        handle=handle,
        token_id=token.id,
        token_hash=token.token_hash,
    )
    await state.writeside.apply(pipe, revoked)
    eventlog.append(pipe, revoked, state.settings.partitions)


async def revoke_named_token(state: ApiState, handle: str, token_id: str) -> bool:
    """Revoke one of `handle`'s named tokens (False: no such token); it stops working in
    every api process before this returns."""
    redis, partitions = state.redis, state.settings.partitions
    key = keys.api_tokens(keys.partition_of(handle, partitions), handle)

    async def body(pipe: Any) -> NamedToken | None:
        raw = await pipe.hget(key, token_id)
        if raw is None:
            return None
        token = named_token_of(raw)
        pipe.multi()
        await _append_revoke(state, pipe, handle, token, actor=handle)
        return token

    token = await transact(redis, [key], body)
    if token is None:
        return False
    await redis.delete(keys.token(token.token_hash))
    await _revoked(state, handle)
    state.metrics.ingested.labels("NamedTokenRevoked").inc()
    return True


async def named_tokens(state: ApiState, handle: str) -> list[NamedToken]:
    """`handle`'s named tokens, oldest first (expired ones included until revoked)."""
    key = keys.api_tokens(keys.partition_of(handle, state.settings.partitions), handle)
    raw: dict[Any, Any] = await state.redis.hgetall(key)
    return sorted((named_token_of(v) for v in raw.values()), key=lambda t: int(t.id))


async def update_me(state: ApiState, caller: Account, req: UpdateMe) -> tuple[Account, str | None]:
    """Apply a PATCH /v1/me; returns the new account and a webhook secret if one was made now."""
    updated, secret = await update_account(state, caller.handle, caller.handle, req)
    assert updated is not None
    return updated, secret


async def update_account(
    state: ApiState,
    actor: str,
    handle: str,
    req: UpdateMe | None,
    *,
    with_events: Sequence[events.AnyEvent] = (),
) -> tuple[Account | None, str | None]:
    """Change `handle`'s profile and contact points as `actor` (ContactPointsChanged, full
    state) and append `with_events` (of the same account's partition) in the same step.
    `req` None: only `with_events`. Returns the account after it (None if there is no such
    account: nothing is written) and a webhook secret if one was made now."""
    redis, partitions = state.redis, state.settings.partitions
    key = accounts.account_key(handle, partitions)

    async def body(pipe: Any) -> tuple[Account | None, str | None]:
        current = account_of(await pipe.hgetall(key))
        if current is None:
            return None, None
        updated, secret, changed = current, None, None
        if req is not None:
            updated, secret, changed = _contact_points_changed(state, actor, current, req)
        pipe.multi()
        for event in (changed, *with_events) if changed else with_events:
            await state.writeside.apply(pipe, event)
            eventlog.append(pipe, event, partitions)
        if req is not None and not isinstance(req.webhook_url, msgspec.UnsetType):
            # a new URL gets a fresh chance after a 410
            pipe.srem(keys.webhooks_disabled(keys.partition_of(handle, partitions)), handle)
        return updated, secret

    result = await transact(redis, [key], body)
    state.tokens.forget(handle)
    if req is not None and result[0] is not None:
        state.metrics.ingested.labels("ContactPointsChanged").inc()
    for event in with_events:
        state.metrics.ingested.labels(events.event_type(event)).inc()
    return result


def _contact_points_changed(
    state: ApiState, actor: str, current: Account, req: UpdateMe
) -> tuple[Account, str | None, events.ContactPointsChanged]:
    """The account after `req` (omitted fields stay), the webhook secret made for a first
    webhook URL, and the event stating it."""
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
    changed = events.ContactPointsChanged(
        id=state.ids.next(),
        actor=actor,
        at=utcnow(),
        handle=current.handle,
        display_name=updated.display_name,
        email=updated.email,
        phone=updated.phone,
        webhook_url=updated.webhook_url,
        webhook_secret=updated.webhook_secret,
        dm_channels=tuple(updated.dm_channels.split(",")),
        reachable=updated.active,
    )
    return updated, secret, changed


async def update_status_page(
    state: ApiState,
    actor: str,
    handle: str,
    *,
    display_name: str | msgspec.UnsetType,
    logo_url: str | msgspec.UnsetType | None,
    accent_color: str | msgspec.UnsetType | None,
) -> Account:
    """The status page's look: a new display name (ContactPointsChanged, as PATCH /v1/me
    makes it) and logo or accent colour (StatusPageChanged, full state), in one step."""
    redis, partitions = state.redis, state.settings.partitions
    key = accounts.account_key(handle, partitions)
    page = keys.status_page(keys.partition_of(handle, partitions), handle)

    async def body(pipe: Any) -> Account:
        current = account_of(await pipe.hgetall(key))
        if current is None:
            raise NotFound(f"no account {handle!r}", code="no_such_account")
        look: dict[Any, Any] = await pipe.hgetall(page)
        now = {k.decode(): v.decode() for k, v in look.items()}
        changes: list[events.AnyEvent] = []
        updated = current
        if not isinstance(display_name, msgspec.UnsetType) and display_name != current.display_name:
            updated, _, changed = _contact_points_changed(
                state, actor, current, UpdateMe(display_name=display_name)
            )
            changes.append(changed)
        after: dict[str, str | None] = {
            "logo_url": now.get("logo_url")
            if isinstance(logo_url, msgspec.UnsetType)
            else logo_url,
            "accent_color": (
                now.get("accent_color")
                if isinstance(accent_color, msgspec.UnsetType)
                else accent_color
            ),
        }
        if after != {k: now.get(k) for k in after}:
            changes.append(
                events.StatusPageChanged(
                    id=state.ids.next(),
                    actor=actor,
                    at=utcnow(),
                    handle=handle,
                    logo_url=after["logo_url"],
                    accent_color=after["accent_color"],
                )
            )
        if not changes:
            return current
        pipe.multi()
        for event in changes:
            await state.writeside.apply(pipe, event)
            eventlog.append(pipe, event, partitions)
        return updated

    updated = await transact(redis, [key, page], body)
    state.tokens.forget(handle)
    return updated


async def set_poster(
    state: ApiState, admin: Account, account: str, poster: str, *, grant: bool
) -> None:
    partitions = state.settings.partitions
    key = keys.posters(keys.partition_of(account, partitions), account)

    async def body(pipe: Any) -> None:
        present = bool(await pipe.sismember(key, poster))
        if present == grant:
            return
        kind = events.PosterGranted if grant else events.PosterRevoked
        change = kind(
            id=state.ids.next(), actor=admin.handle, at=utcnow(), account=account, poster=poster
        )
        pipe.multi()
        await state.writeside.apply(pipe, change)
        eventlog.append(pipe, change, partitions)

    await transact(state.redis, [key], body)


# --- follows --------------------------------------------------------------------------------
def follows_key(handle: str, partitions: int) -> str:
    return keys.follows(keys.partition_of(handle, partitions), handle)


def _seq_key(handle: str, partitions: int) -> str:
    return keys.follow_seq(keys.partition_of(handle, partitions), handle)


async def _next_seq(pipe: Any, seq_key: str, target: str) -> int:
    """The pair's next change number, read under WATCH: the append commits only if nothing
    changed the pair meanwhile, so the seq is taken atomically with the append."""
    return int(await pipe.hget(seq_key, target) or 0) + 1


async def follow(
    state: ApiState, follower: Account, target: str, channels: tuple[str, ...] | None
) -> Follow:
    partitions = state.settings.partitions
    key, seq_key = follows_key(follower.handle, partitions), _seq_key(follower.handle, partitions)

    async def body(pipe: Any) -> Follow:
        raw = await pipe.hget(key, target)
        current = follow_of(target, raw) if raw is not None else None
        if current is not None and (channels is None or channels == current.channels):
            return current
        fields: dict[str, Any] = {
            "id": state.ids.next(),
            "actor": follower.handle,
            "at": utcnow(),
            "follower": follower.handle,
            "account": target,
            "channels": channels or ("app",),
            "mandatory": current is not None and current.mandatory,
            "external": follower.role == "external",
            "seq": await _next_seq(pipe, seq_key, target),
        }
        change: events.AccountFollowed | events.FollowChannelsChanged = (
            events.AccountFollowed(**fields)
            if current is None
            else events.FollowChannelsChanged(**fields)
        )
        pipe.multi()
        await state.writeside.apply(pipe, change)
        eventlog.append(pipe, change, partitions)
        return Follow(target, change.channels, change.mandatory)

    return await transact(state.redis, [key, seq_key], body)


async def unfollow(state: ApiState, follower: Account, target: str) -> None:
    """A person stops following `target`; 403 `mandatory_follow` if an admin enrolled them
    with no opt-out."""
    await _unfollow(state, follower.handle, follower.handle, target, mandatory_too=False)


async def remove_follow(state: ApiState, actor: str, follower: str, target: str) -> bool:
    """`actor` (the directory) removes `follower`'s follow of `target`, mandatory or not;
    False if there was none."""
    return await _unfollow(state, actor, follower, target, mandatory_too=True)


async def _unfollow(
    state: ApiState, actor: str, follower: str, target: str, *, mandatory_too: bool
) -> bool:
    partitions = state.settings.partitions
    key, seq_key = follows_key(follower, partitions), _seq_key(follower, partitions)

    async def body(pipe: Any) -> bool:
        raw = await pipe.hget(key, target)
        if raw is None:
            return False
        if not mandatory_too and follow_of(target, raw).mandatory:
            raise Forbidden(
                f"following {target} is mandatory for you; an admin enrolled you",
                code="mandatory_follow",
            )
        change = events.AccountUnfollowed(
            id=state.ids.next(),
            actor=actor,
            at=utcnow(),
            follower=follower,
            account=target,
            seq=await _next_seq(pipe, seq_key, target),
        )
        pipe.multi()
        await state.writeside.apply(pipe, change)
        eventlog.append(pipe, change, partitions)
        return True

    return await transact(state.redis, [key, seq_key], body)


async def list_follows(state: ApiState, follower: Account) -> list[Follow]:
    raw: dict[Any, Any] = await state.redis.hgetall(
        follows_key(follower.handle, state.settings.partitions)
    )
    return sorted((follow_of(k.decode(), v) for k, v in raw.items()), key=lambda f: f.account)


async def _enrol_member(state: ApiState, pipe: Any, handle: str, rule: Rule) -> None:
    """Queue an `all_members` rule's enrolment of a new member on `pipe`: made once, by
    this or by the rule's expansion, whichever comes first (the enrolment's done set)."""
    p = keys.partition_of(handle, state.settings.partitions)
    event = _enrolment(state, handle, rule.account, rule.channels, rule.mandatory, "system")
    if rule.enrolment is None:  # a rule stored before rules named their enrolment
        await state.writeside.enrol(pipe, event)
        return
    # The rule's done set, so the expansion and this enrol them once; but not its id as the
    # event's `enrolment`: they join now, and the posts made before are no news to route
    done = keys.enrolment_done(p, rule.enrolment)
    await state.writeside.enrol(pipe, event, done=done)
    pipe.expire(done, keys.ENROLMENT_DONE_TTL_S)


async def enrol(
    state: ApiState,
    actor: str,
    account: str,
    followers: dict[str, bool] | None,
    channels: tuple[str, ...],
    mandatory: bool,
    *,
    with_events: Sequence[events.AnyEvent] = (),
) -> tuple[str, int]:
    """Append one enrolment: `followers` (handle → is external) or, None, every member now
    and future. The timeline worker expands it into one FollowerEnrolled per person, once
    each, however often it is handled (muster.enrolments). Constant work here,
    whatever the member count: the enrolment's id and how many it will enrol (members: as
    of now). `with_events` (of `account`'s partition) are appended in the same step."""
    redis, partitions = state.redis, state.settings.partitions
    enrolment: events.MembersEnrolled | events.FollowersEnrolled
    if followers is None:
        enrolment = events.MembersEnrolled(
            id=state.ids.next(),
            actor=actor,
            at=utcnow(),
            account=account,
            channels=channels,
            mandatory=mandatory,
        )
        async with redis.pipeline(transaction=False) as pipe:
            for p in range(partitions):
                pipe.scard(keys.members(p))
            pipe.sismember(keys.members(keys.partition_of(account, partitions)), account)
            *sizes, itself = await pipe.execute()
        count = sum(sizes) - int(itself)
    else:
        targets = sorted(f for f in followers if f != account)
        enrolment = events.FollowersEnrolled(
            id=state.ids.next(),
            actor=actor,
            at=utcnow(),
            account=account,
            followers=tuple(targets),
            externals=tuple(f for f in targets if followers[f]),
            channels=channels,
            mandatory=mandatory,
        )
        count = len(targets)
    async with redis.pipeline(transaction=True) as pipe:
        for event in (enrolment, *with_events):
            await state.writeside.apply(pipe, event)  # an `all_members` rule, with its event
            eventlog.append(pipe, event, partitions)
        await pipe.execute()
    for event in (enrolment, *with_events):
        state.metrics.ingested.labels(events.event_type(event)).inc()
    return enrolment.id, count


async def _enrolment_rules(state: ApiState) -> dict[str, Rule]:
    return await enrolment_rules(state.redis, state.settings.partitions)
