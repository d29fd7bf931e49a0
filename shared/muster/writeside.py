"""The api's write-side state as a function of the events: `WriteSide.apply(pipe, event)`.

State changes only by applying an event. The api builds an event from a request and the
state it checked, then queues `apply` and the event's XADD in one MULTI (writes.py); replay
and restore (muster replay) queue the very same `apply` for each event of the history. There
is no second implementation to drift: what the api wrote when it accepted an event is what a
rebuild writes for it (tests compare the two).

What it keeps, all in the account's (or follower's) partition: accounts (records.Account,
with token hashes), the email index (keys.emails: company sign-in finds an account by its
address), posters, follow records (records.Follow) and each pair's last change
seq, the handles and members sets, the directory's (SCIM) users, groups and their members,
and who is reachable on which channel (keys.reach,
keys.dm_channels), which delivery routing reads as current state. One thing lives outside any partition and is not queued
by `apply`: a token's key (the api claims it before appending, so two accounts never share
one); `apply_global` writes it for replay.

Follow changes of v2 state the follow as it is afterwards, so applying one is plain writes.
v1 changes (before seq) stated less; their record is merged server-side, in order, by the
one channel-merge rule (lua/channels.lua). Bulk enrolment applies FollowerEnrolled in
lua/enrol.lua, which takes the seq, merges and appends in one step; `apply` reproduces its
writes from the event it appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from muster import eventlog, events, keys, scripts, views
from muster.connection import text
from muster.events import (
    AccountCreated,
    AccountDeactivated,
    AccountFollowed,
    AccountReactivated,
    AccountTokenReset,
    AccountUnfollowed,
    AnyEvent,
    ComponentChanged,
    ContactPointOptedIn,
    ContactPointOptedOut,
    ContactPointsChanged,
    DirectoryGroupChanged,
    DirectoryGroupRemoved,
    DirectoryUserChanged,
    DirectoryUserRemoved,
    FollowChannelsChanged,
    FollowerEnrolled,
    IncidentOpened,
    IncidentUpdated,
    MembersEnrolled,
    NamedTokenCreated,
    NamedTokenRevoked,
    PosterGranted,
    PosterRevoked,
    RollCallAnswered,
    RollCallAudienceRecorded,
    RollCallClosed,
    RollCallExtended,
    RollCallHelpHandled,
    StatusPageChanged,
    SubscriptionConfirmed,
    SubscriptionEnded,
    SubscriptionRequested,
)
from muster.records import (
    REQUEST_FIELDS,
    ROLLCALL_HANDLED_TAIL,
    ROLLCALL_UNHANDLED_TAIL,
    Account,
    Component,
    DirectoryGroup,
    DirectoryUser,
    Follow,
    IncidentUpdate,
    NamedToken,
    RollCallAnswer,
    Rule,
    active_hash,
    component_change,
    directory_index_entry,
    email_entry,
    encode_component,
    encode_directory,
    encode_incident_update,
    encode_named_token,
    encode_rollcall_answer,
    ended_hash,
    incident_hash,
    incident_member,
    request_hash,
    rule_of,
    subscriber_entry,
    subscriber_recipient,
    subscription_identity,
    subscription_index_entry,
)

FAMILIES = (
    keys.Family(
        "accounts",
        (
            lambda p: keys.account(p, keys.ANY),
            lambda p: keys.posters(p, keys.ANY),
            lambda p: keys.api_tokens(p, keys.ANY),
            lambda p: keys.follows(p, keys.ANY),
            lambda p: keys.follow_seq(p, keys.ANY),
            keys.handles,
            keys.members,
            keys.emails,
            keys.enrolment_rules,
            lambda p: keys.reach(p, keys.ANY),
            keys.dm_channels,
            keys.directory_users,
            keys.directory_index,
            keys.directory_groups,
            lambda p: keys.directory_members(p, keys.ANY),
            lambda p: keys.subscription(p, keys.ANY),
            lambda p: keys.subscribers(p, keys.ANY),
            lambda p: keys.account_subscriptions(p, keys.ANY),
            keys.subscription_index,
            lambda p: keys.incident(p, keys.ANY),
            lambda p: keys.incident_updates(p, keys.ANY),
            lambda p: keys.incidents(p, keys.ANY, keys.ANY, False),
            lambda p: keys.components(p, keys.ANY),
            lambda p: keys.component_order(p, keys.ANY),
            lambda p: keys.component_history(p, keys.ANY),
            lambda p: keys.status_page(p, keys.ANY),
            lambda p: keys.rollcall_audience(p, keys.ANY),
            lambda p: keys.rollcall_answers(p, keys.ANY),
            lambda p: keys.rollcall_counts(p, keys.ANY),
            lambda p: keys.rollcall_state(p, keys.ANY),
            keys.sms_opted_out,
        ),
        (keys.token(keys.ANY), keys.ENROLMENT_RULES),
    ),
)
"""The write side as a family: rebuilt from the log only with the api stopped."""

_CONTACT_FIELDS = ("email", "phone", "webhook_url", "webhook_secret")
CONTACT_CHANNELS = (("email", "email"), ("phone", "sms"), ("webhook_url", "webhook"))
"""Contact-point field of an account event → the off-app channel it opens."""
FollowChange = AccountFollowed | FollowChannelsChanged | FollowerEnrolled | AccountUnfollowed


def account_of_event(event: AccountCreated) -> Account:
    """The account record an AccountCreated makes."""
    return Account(
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


def rollcall_answer_of_event(event: RollCallAnswered) -> RollCallAnswer:
    """The answer record a RollCallAnswered leaves (keys.rollcall_answers)."""
    return RollCallAnswer(
        option=event.option,
        kind=event.kind,
        channel=event.channel,
        at=event.at,
        actor=event.actor,
        note=event.note,
        late=event.late,
        suspect=event.suspect,
        event=event.id,
    )


def named_token_holder(handle: str, token_id: str) -> str:
    """What keys.token holds for a named token: `handle/token id` (handles hold no `/`)."""
    return f"{handle}/{token_id}"


def reopened_channels(account: Account) -> tuple[str, ...]:
    """The off-app channels an account's contact points open (AccountReactivated)."""
    return tuple(c for f, c in CONTACT_CHANNELS if getattr(account, f))


def rule_of_event(event: MembersEnrolled) -> Rule:
    """The `all_members` rule a MembersEnrolled makes."""
    return Rule(event.account, tuple(event.channels), event.mandatory, event.id)


def follow_after(event: FollowChange) -> Follow | None:
    """The follow record a v2 change leaves (None: unfollowed)."""
    match event:
        case AccountUnfollowed():
            return None
        case FollowerEnrolled(follow_channels=channels) if channels is not None:
            return Follow(event.account, tuple(channels), event.mandatory)
        case _:
            return Follow(event.account, tuple(event.channels), event.mandatory)


class WriteSide:
    def __init__(self, redis: aioredis.Redis, *, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._follow_v1 = scripts.register(redis, "follow_v1")
        self._enrol = scripts.register(redis, "enrol")
        self._email_index = scripts.register(redis, "email_index")
        self._answer_script = scripts.register(redis, "rollcall_answer")

    def _p(self, handle: str) -> int:
        return keys.partition_of(handle, self.partitions)

    async def apply(self, pipe: Any, event: AnyEvent) -> None:
        """Queue the partition-local writes of one event on `pipe` (a MULTI or a pipeline)."""
        match event:
            case AccountCreated():
                p = self._p(event.handle)
                account = account_of_event(event)
                await self._index_email(pipe, event)
                pipe.hset(keys.account(p, event.handle), mapping=account.to_hash())
                pipe.sadd(keys.handles(p), event.handle)
                if account.is_employee:
                    pipe.sadd(keys.members(p), event.handle)
                self._reach(pipe, event)
            case AccountTokenReset():
                key = keys.account(self._p(event.handle), event.handle)
                role = "admin" if event.v < 2 else event.role
                pipe.hset(
                    key,
                    mapping={"token_hash": event.token_hash, **({"role": role} if role else {})},
                )
                pipe.hincrby(key, "rev", 1)
            case AccountDeactivated() | AccountReactivated():
                p = self._p(event.handle)
                key = keys.account(p, event.handle)
                reopened = event.channels if isinstance(event, AccountReactivated) else None
                pipe.hset(key, "active", "0" if reopened is None else "1")
                pipe.hincrby(key, "rev", 1)
                for channel in keys.OFFAPP_CHANNELS:
                    if reopened is not None and channel in reopened:
                        pipe.sadd(keys.reach(p, channel), event.handle)
                    else:
                        pipe.srem(keys.reach(p, channel), event.handle)
            case NamedTokenCreated():
                token = NamedToken(
                    id=event.token_id,
                    name=event.name,
                    token_hash=event.token_hash,
                    created_at=event.at,
                    expires_at=event.expires_at,
                )
                key = keys.api_tokens(self._p(event.handle), event.handle)
                pipe.hset(key, event.token_id, encode_named_token(token))
            case NamedTokenRevoked():
                pipe.hdel(keys.api_tokens(self._p(event.handle), event.handle), event.token_id)
            case ContactPointsChanged():
                await self._index_email(pipe, event)
                self._contacts(pipe, event)
                self._reach(pipe, event)
                self._page_changed(pipe, event.handle, event)
            case PosterGranted():
                pipe.sadd(keys.posters(self._p(event.account), event.account), event.poster)
            case PosterRevoked():
                pipe.srem(keys.posters(self._p(event.account), event.account), event.poster)
            case MembersEnrolled():
                rules = keys.enrolment_rules(self._p(event.account))
                pipe.hset(rules, event.account, rule_of_event(event).encode())
            case (
                AccountFollowed()
                | FollowChannelsChanged()
                | FollowerEnrolled()
                | (AccountUnfollowed())
            ):
                await self._follow_change(pipe, event)
            case DirectoryUserChanged():
                self._directory_user(pipe, event)
            case DirectoryUserRemoved():
                pipe.hdel(keys.directory_users(self._p(event.handle)), event.handle)
            case DirectoryGroupChanged():
                p = self._p(event.account)
                group = DirectoryGroup(
                    display_name=event.display_name,
                    external_id=event.external_id,
                    modified=views.rfc3339(event.at),
                )
                pipe.hset(keys.directory_groups(p), event.account, encode_directory(group))
                members = keys.directory_members(p, event.account)
                if event.added:
                    pipe.sadd(members, *event.added)
                if event.removed:
                    pipe.srem(members, *event.removed)
            case DirectoryGroupRemoved():
                p = self._p(event.account)
                pipe.hdel(keys.directory_groups(p), event.account)
                pipe.delete(keys.directory_members(p, event.account))
            case SubscriptionRequested() | SubscriptionConfirmed() | SubscriptionEnded():
                self._subscription(pipe, event)
            case ComponentChanged() | IncidentOpened() | IncidentUpdated() | StatusPageChanged():
                self._status_page(pipe, event)
            case RollCallAudienceRecorded():
                # what lua/rollcall_audience.lua added as it appended this (replay: here)
                by_partition: dict[int, list[str]] = {}
                for recipient in event.recipients:
                    by_partition.setdefault(self._p(recipient), []).append(recipient)
                for q, found in by_partition.items():
                    pipe.sadd(keys.rollcall_audience(q, event.rollcall), *found)
            case RollCallAnswered() | RollCallHelpHandled():
                await self._rollcall_answer(pipe, event)
            case RollCallClosed():
                pipe.hset(
                    keys.rollcall_state(self._p(event.account), event.rollcall),
                    mapping={"state": "closed", "closed_at": views.rfc3339(event.at)},
                )
            case RollCallExtended():
                pipe.hset(
                    keys.rollcall_state(self._p(event.account), event.rollcall),
                    "deadline",
                    views.rfc3339(event.deadline),
                )
            case ContactPointOptedOut():
                pipe.hset(
                    keys.sms_opted_out(self._p(event.account)),
                    event.account,
                    views.rfc3339(event.at),
                )
            case ContactPointOptedIn():
                pipe.hdel(keys.sms_opted_out(self._p(event.account)), event.account)
            case _:
                pass  # posts and DMs keep no write-side state (idempotency keys expire)

    async def apply_global(self, pipe: Any, event: AnyEvent) -> None:
        """Replay: queue the writes outside every partition (tokens); the api makes these
        itself around its append (a token is claimed before it). A token reset reads the
        account, so what `pipe` holds is executed first."""
        match event:
            case AccountCreated(token_hash=token_hash) if token_hash is not None:
                pipe.set(keys.token(token_hash), event.handle)
            case NamedTokenCreated():
                pipe.set(
                    keys.token(event.token_hash), named_token_holder(event.handle, event.token_id)
                )
            case NamedTokenRevoked():
                pipe.delete(keys.token(event.token_hash))
            case AccountTokenReset():
                await pipe.execute()
                old = await self.redis.hget(
                    keys.account(self._p(event.handle), event.handle), "token_hash"
                )
                pipe.set(keys.token(event.token_hash), event.handle)
                if old is not None and text(old) != event.token_hash:
                    pipe.delete(keys.token(text(old)))
            case _:
                pass

    async def apply_batch(self, pipe: Any, batch: Sequence[AnyEvent]) -> None:
        """Replay: queue a batch in order, every write of each event."""
        for event in batch:
            await self.apply_global(pipe, event)
            await self.apply(pipe, event)

    async def enrol(self, client: Any, event: FollowerEnrolled, *, done: str | None = None) -> None:
        """Append `event` through lua/enrol.lua, which merges the follow record, takes the
        pair's seq and fills both into the event as it appends it; queued when `client` is a
        pipeline. `done`: a set (keys.enrolment_done) that makes a re-run enrol nobody twice."""
        p = self._p(event.follower)
        head, tail = events.enrolment_payload(event)
        names = [keys.follows(p, event.follower), keys.follow_seq(p, event.follower)]
        names.append(keys.events(eventlog.noting(p)))
        args: list[Any] = [
            event.account,
            ",".join(event.channels),
            "1" if event.mandatory else "0",
            head,
            tail,
            ",".join(keys.CHANNELS),
        ]
        if done is not None:
            names.append(done)
            args.append(event.follower)
        await self._enrol(keys=names, args=args, client=client)

    # --- the writes ---------------------------------------------------------------------------
    async def _follow_change(self, pipe: Any, event: FollowChange) -> None:
        p = self._p(event.follower)
        follows = keys.follows(p, event.follower)
        if event.v >= 2:
            record = follow_after(event)
            if record is None:
                pipe.hdel(follows, event.account)
            else:
                pipe.hset(follows, event.account, record.encode())
            pipe.hset(keys.follow_seq(p, event.follower), event.account, event.seq)
            return
        match event:  # v1: the record as the api of that time made it
            case AccountFollowed():
                record = Follow(event.account, tuple(event.channels), False)
                pipe.hset(follows, event.account, record.encode())
            case AccountUnfollowed():
                pipe.hdel(follows, event.account)
            case _:
                op = "enrol" if isinstance(event, FollowerEnrolled) else "channels"
                await self._follow_v1(
                    keys=[follows],
                    args=[
                        op,
                        event.account,
                        ",".join(event.channels),
                        "1" if isinstance(event, FollowerEnrolled) and event.mandatory else "0",
                        ",".join(keys.CHANNELS),
                    ],
                    client=pipe,
                )

    async def _rollcall_answer(
        self, pipe: Any, event: RollCallAnswered | RollCallHelpHandled
    ) -> None:
        """The person's latest answer and their partition's counts, in one script call
        (lua/rollcall_answer.lua): counts move with the answer they count, and an event
        applied again (a retried request's, or replay over live state) changes nothing."""
        p = self._p(event.recipient)
        names = [keys.rollcall_answers(p, event.rollcall), keys.rollcall_counts(p, event.rollcall)]
        args: list[Any]
        if isinstance(event, RollCallHelpHandled):
            args = ["handled", event.recipient, ROLLCALL_UNHANDLED_TAIL, ROLLCALL_HANDLED_TAIL]
        else:
            args = [
                "answer",
                event.recipient,
                event.id,
                encode_rollcall_answer(rollcall_answer_of_event(event)),
                event.option,
                event.kind,
                event.channel,
                "1" if event.late else "0",
                "1" if event.suspect else "0",
            ]
        await self._answer_script(keys=names, args=args, client=pipe)

    def _subscription(
        self,
        pipe: Any,
        event: SubscriptionRequested | SubscriptionConfirmed | SubscriptionEnded,
    ) -> None:
        """A subscription's record, its place in the account's list, in routing (the
        subscribers hash holds the active ones) and in the address index; all in the
        partition of its recipient name. Each event states what it sets, so applying one
        reads nothing."""
        recipient = subscriber_recipient(event.subscription)
        p = self._p(recipient)
        key = keys.subscription(p, event.subscription)
        match event:
            case SubscriptionRequested():
                identity = subscription_identity(
                    event.subscription, event.account, event.channel, event.address, event.at
                )
                for field, value in identity.items():
                    pipe.hsetnx(key, field, value)
                pipe.hdel(key, "req_secret")
                pipe.hset(
                    key,
                    mapping=request_hash(
                        event.id,
                        event.components,
                        event.confirm_hash,
                        event.expires_at,
                        event.webhook_secret,
                        event.at,
                    ),
                )
                pipe.zadd(keys.account_subscriptions(p, event.account), {event.subscription: 0})
                entry = subscription_index_entry(event.channel, event.address, event.subscription)
                pipe.zadd(keys.subscription_index(p), {entry: 0})
            case SubscriptionConfirmed():
                pipe.hdel(key, *REQUEST_FIELDS, "webhook_secret", "ended_how", "ended_at")
                pipe.hset(
                    key,
                    mapping=active_hash(
                        event.components, event.webhook_secret, event.generation, event.at
                    ),
                )
                pipe.hset(
                    keys.subscribers(p, event.account),
                    recipient,
                    subscriber_entry(event.channel, event.components),
                )
            case SubscriptionEnded():
                pipe.hdel(key, *REQUEST_FIELDS)
                pipe.hset(key, mapping=ended_hash(event.how, event.at))
                pipe.hdel(keys.subscribers(p, event.account), recipient)

    def _status_page(
        self,
        pipe: Any,
        event: ComponentChanged | IncidentOpened | IncidentUpdated | StatusPageChanged,
    ) -> None:
        """Incidents, their updates and lists, components and their history, the page's
        look; all in the account's partition, and each counts as a change of its page."""
        match event:
            case ComponentChanged():
                p = self._p(event.account)
                component = Component(
                    name=event.name,
                    status=event.status,
                    description=event.description,
                    updated_at=event.at,
                )
                pipe.hset(
                    keys.components(p, event.account), event.name, encode_component(component)
                )
                ms = int(event.at.timestamp() * 1000)
                pipe.zadd(keys.component_order(p, event.account), {event.name: ms}, nx=True)
                change = component_change(event.at, event.name, event.status)
                pipe.zadd(keys.component_history(p, event.account), {change: ms})
                self._page_changed(pipe, event.account, event)
            case IncidentOpened() | IncidentUpdated():
                self._incident(pipe, event)
                self._page_changed(pipe, event.account, event)
            case StatusPageChanged():
                key = keys.status_page(self._p(event.handle), event.handle)
                for field in ("logo_url", "accent_color"):
                    value = getattr(event, field)
                    if value is None:
                        pipe.hdel(key, field)
                    else:
                        pipe.hset(key, field, value)
                self._page_changed(pipe, event.handle, event)

    def _incident(self, pipe: Any, event: IncidentOpened | IncidentUpdated) -> None:
        p = self._p(event.account)
        key = keys.incident(p, event.incident)
        opened = isinstance(event, IncidentOpened)
        fields = incident_hash(
            account=event.account if opened else None,
            title=event.title if isinstance(event, IncidentOpened) else None,
            visibility=event.visibility if opened else None,
            created_at=event.at if opened else None,
            status=event.status,
            impact=event.impact,
            at=event.at,
            components=event.components,
        )
        pipe.hset(key, mapping=fields)
        if event.status == "resolved":
            pipe.hsetnx(key, "resolved_at", event.at.isoformat())
        else:
            pipe.hdel(key, "resolved_at")
        post = event.incident if isinstance(event, IncidentOpened) else event.post
        update = IncidentUpdate(
            post=post,
            author=event.actor,
            status=event.status,
            impact=event.impact,
            severity=event.severity,
            text=event.text,
            components=event.components,
            at=event.at,
        )
        pipe.hset(keys.incident_updates(p, event.incident), post, encode_incident_update(update))
        member = incident_member(event.incident)
        now = "resolved" if event.status == "resolved" else "open"
        for public in (False, True) if event.visibility == "public" else (False,):
            for state in keys.INCIDENT_LISTS:
                listed = keys.incidents(p, event.account, state, public)
                if state == now:
                    pipe.zadd(listed, {member: 0})
                else:
                    pipe.zrem(listed, member)

    def _page_changed(self, pipe: Any, handle: str, event: AnyEvent) -> None:
        """Count a change of `handle`'s status page: its pages are rendered again."""
        key = keys.status_page(self._p(handle), handle)
        pipe.hincrby(key, "changes", 1)
        pipe.hset(key, "changed_ms", int(event.at.timestamp() * 1000))

    def _directory_user(self, pipe: Any, event: DirectoryUserChanged) -> None:
        """The directory's record of the person and its lookup entries (keys.directory_index)."""
        p = self._p(event.handle)
        record = DirectoryUser(
            user_name=event.user_name,
            external_id=event.external_id,
            display_name=event.display_name,
            formatted=event.formatted,
            given_name=event.given_name,
            family_name=event.family_name,
            emails=event.emails,
            modified=views.rfc3339(event.at),
        )
        pipe.hset(keys.directory_users(p), event.handle, encode_directory(record))
        entries = [directory_index_entry("userName", event.user_name, event.handle)]
        if event.external_id is not None:
            entries.append(directory_index_entry("externalId", event.external_id, event.handle))
        entries += [directory_index_entry("email", e.value, event.handle) for e in event.emails]
        pipe.zadd(keys.directory_index(p), dict.fromkeys(entries, 0))

    def _reach(self, pipe: Any, event: AccountCreated | ContactPointsChanged) -> None:
        """Who is reachable on each off-app channel (keys.reach) and on which channels each
        person takes DMs (keys.dm_channels): routing reads these, so they change with the
        contact points, in the same step, and routing never works from a stale copy."""
        p = self._p(event.handle)
        reachable = not isinstance(event, ContactPointsChanged) or event.reachable
        for field, channel in CONTACT_CHANNELS:
            if reachable and getattr(event, field):
                pipe.sadd(keys.reach(p, channel), event.handle)
            else:
                pipe.srem(keys.reach(p, channel), event.handle)
        pipe.hset(keys.dm_channels(p), event.handle, ",".join(event.dm_channels))

    async def _index_email(self, pipe: Any, event: AccountCreated | ContactPointsChanged) -> None:
        """The account's entry in the email index (keys.emails), queued before the account
        hash changes: the script reads the address being replaced from it."""
        p = self._p(event.handle)
        entry = email_entry(event.email, event.handle) if event.email else ""
        await self._email_index(
            keys=[keys.account(p, event.handle), keys.emails(p)],
            args=[event.handle, entry],
            client=pipe,
        )

    def _contacts(self, pipe: Any, event: ContactPointsChanged) -> None:
        """The profile as the event states it, and rev + 1."""
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


async def enrolment_rules(redis: aioredis.Redis, partitions: int) -> dict[str, Rule]:
    """Every `all_members` rule, by followed account (rules kept before they moved into the
    partitions, in keys.ENROLMENT_RULES, count too unless a newer one replaced them)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.ENROLMENT_RULES)
        for p in range(partitions):
            pipe.hgetall(keys.enrolment_rules(p))
        replies: list[dict[bytes, bytes]] = await pipe.execute()
    return {text(k): rule_of(text(k), v) for reply in replies for k, v in reply.items()}
