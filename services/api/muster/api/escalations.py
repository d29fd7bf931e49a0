"""Escalation: named, versioned policies; managers; a roll-call's policy snapshot; reminds.

- A policy is an event (EscalationPolicySet, EscalationPolicyDeleted) in the partition its
  name falls in (events.policy_partition_handle), with its state (keys.escalation_policies,
  keys.escalation_policy_versions) in the same MULTI under WATCH on the versions: each PUT
  is one more version than the last of that name, a deleted name's included.
- A roll-call opened with `policy: name` keeps the policy as it is then, whole, in its post
  (events.RollCall.escalation): changing or deleting the policy later changes nothing there.
- A manager is a ManagerChanged of the person's partition (the account hash's `manager`).
- A remind is a RollCallReminded of the roll-call's account's partition, appended with its
  round's timer (keys.rollcall_timers, due at once) in one MULTI, at most one per
  REMIND_INTERVAL_S. The timer is queued beside the event, never by WriteSide.apply, so
  replay applies the remind and fires nothing.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from muster import eventlog, events, keys, rounds, views
from muster.api import lookups
from muster.api.rollcalls import Loaded
from muster.api.schemas import (
    DeliveryCounts,
    EscalationDeliveriesOut,
    EscalationDelivery,
    EscalationPolicyIn,
    EscalationPolicyOut,
)
from muster.api.state import ApiState
from muster.api.writes import transact
from muster.connection import text, texts
from muster.errors import Conflict, Invalid, NotFound, TooManyRequests
from muster.events import (
    EscalationPolicy,
    EscalationRepeat,
    EscalationStep,
    utcnow,
)
from muster.records import (
    Account,
    EscalationDue,
    StoredPolicy,
    account_of,
    status_of,
    stored_policy_of,
)

REMIND_INTERVAL_S = 300
"""A roll-call is reminded at most once in this long (429 `remind_too_soon` otherwise):
a remind goes to everyone not yet accounted for, so a double click must not send twice."""


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


# --- policies -------------------------------------------------------------------------------
def _partition(st: ApiState, name: str) -> int:
    return keys.partition_of(events.policy_partition_handle(name), st.settings.partitions)


def policy_out(stored: StoredPolicy) -> EscalationPolicyOut:
    policy = stored.policy
    return EscalationPolicyOut(
        name=policy.name,
        version=policy.version,
        steps=list(policy.steps),
        repeat=policy.repeat,
        max_sends_per_recipient=policy.max_sends_per_recipient,
        updated_at=views.rfc3339(stored.updated_at),
        updated_by=stored.updated_by,
    )


async def get(st: ApiState, name: str) -> StoredPolicy | None:
    raw: Any = await st.redis.hget(keys.escalation_policies(_partition(st, name)), name)
    return None if raw is None else stored_policy_of(raw)


async def require(st: ApiState, name: str, *, field: str | None = None) -> StoredPolicy:
    found = await get(st, name)
    if found is None:
        raise NotFound(f"no escalation policy {name!r}", code="no_such_policy", field=field)
    return found


async def every(st: ApiState) -> list[StoredPolicy]:
    """Every policy, by name: one HGETALL per partition, pipelined."""
    async with st.redis.pipeline(transaction=False) as pipe:
        for p in range(st.settings.partitions):
            pipe.hgetall(keys.escalation_policies(p))
        replies: list[Any] = await pipe.execute()
    found = [stored_policy_of(v) for reply in replies for v in reply.values()]
    return sorted(found, key=lambda s: s.policy.name)


async def _checked_steps(st: ApiState, req: EscalationPolicyIn) -> tuple[EscalationStep, ...]:
    steps = []
    previous = 0.0
    for i, step in enumerate(req.steps):
        field = f"steps[{i}]"
        if step.after_s < previous:
            raise Invalid(
                "steps fire in order: each after_s must be at least the one before",
                code="steps_out_of_order",
                field=f"{field}.after_s",
            )
        previous = step.after_s
        if step.to == "fallback":
            if step.fallback is None:
                raise Invalid(
                    "a step to `fallback` names the account in `fallback`",
                    code="fallback_missing",
                    field=f"{field}.fallback",
                )
            await _existing_person_or_team(st, step.fallback, field=f"{field}.fallback")
        elif step.fallback is not None:
            raise Invalid(
                "`fallback` is only for a step to `fallback`",
                code="fallback_unexpected",
                field=f"{field}.fallback",
            )
        channels = step.channels if isinstance(step.channels, str) else tuple(step.channels)
        if isinstance(channels, tuple) and len(set(channels)) != len(channels):
            raise Invalid(
                "a channel is named twice", code="invalid_channels", field=f"{field}.channels"
            )
        steps.append(
            EscalationStep(
                after_s=step.after_s, to=step.to, channels=channels, fallback=step.fallback
            )
        )
    return tuple(steps)


async def _existing_person_or_team(st: ApiState, handle: str, *, field: str) -> None:
    p = keys.partition_of(handle, st.settings.partitions)
    found = account_of(await st.redis.hgetall(keys.account(p, handle)))
    if found is None or not found.active:
        raise Invalid(f"no active account {handle!r}", code="unknown_fallback", field=field)


async def put(st: ApiState, actor: Account, name: str, req: EscalationPolicyIn) -> StoredPolicy:
    """Create or replace `name`: a new version, one more than the last."""
    steps = await _checked_steps(st, req)
    repeat = (
        None
        if req.repeat is None
        else EscalationRepeat(times=req.repeat.times, every_s=req.repeat.every_s)
    )
    p = _partition(st, name)
    versions = keys.escalation_policy_versions(p)

    async def body(pipe: Any) -> StoredPolicy:
        last = await pipe.hget(versions, name)
        policy = EscalationPolicy(
            name=name,
            version=int(last or 0) + 1,
            steps=steps,
            repeat=repeat,
            max_sends_per_recipient=req.max_sends_per_recipient,
        )
        event = events.EscalationPolicySet(
            id=st.ids.next(), actor=actor.handle, at=utcnow(), policy=policy
        )
        pipe.multi()
        await st.writeside.apply(pipe, event)
        eventlog.append(pipe, event, st.settings.partitions)
        return StoredPolicy(policy=policy, updated_at=event.at, updated_by=actor.handle)

    stored = await transact(st.redis, [versions], body)
    st.metrics.ingested.labels("EscalationPolicySet").inc()
    return stored


async def delete(st: ApiState, actor: Account, name: str) -> None:
    p = _partition(st, name)
    versions = keys.escalation_policy_versions(p)

    async def body(pipe: Any) -> None:
        raw = await pipe.hget(keys.escalation_policies(p), name)
        if raw is None:
            raise NotFound(f"no escalation policy {name!r}", code="no_such_policy")
        event = events.EscalationPolicyDeleted(
            id=st.ids.next(),
            actor=actor.handle,
            at=utcnow(),
            name=name,
            version=stored_policy_of(raw).policy.version,
        )
        pipe.multi()
        await st.writeside.apply(pipe, event)
        eventlog.append(pipe, event, st.settings.partitions)

    await transact(st.redis, [versions, keys.escalation_policies(p)], body)
    st.metrics.ingested.labels("EscalationPolicyDeleted").inc()


async def snapshot(st: ApiState, name: str | None) -> EscalationPolicy | None:
    """The policy a roll-call opens with, as it is now (422 when there is none)."""
    if name is None:
        return None
    found = await get(st, name)
    if found is None:
        raise Invalid(
            f"no escalation policy {name!r}", code="no_such_policy", field="rollcall.policy"
        )
    return found.policy


# --- managers -------------------------------------------------------------------------------
async def set_manager(st: ApiState, actor: Account, handle: str, manager: str | None) -> Account:
    """Set (or clear) `handle`'s manager: a person, not themselves, with an account."""
    if manager == handle:
        raise Invalid("nobody is their own manager", code="manager_self", field="manager")
    if manager is not None:
        q = keys.partition_of(manager, st.settings.partitions)
        found = account_of(await st.redis.hgetall(keys.account(q, manager)))
        if found is None:
            raise Invalid(f"no account {manager!r}", code="unknown_manager", field="manager")
        if found.kind != "person":
            raise Invalid(f"{manager} is not a person", code="manager_not_person", field="manager")
    key = keys.account(keys.partition_of(handle, st.settings.partitions), handle)
    changed = False

    async def body(pipe: Any) -> Account:
        nonlocal changed
        current = account_of(await pipe.hgetall(key))
        if current is None:
            raise NotFound(f"no account {handle!r}", code="no_such_account")
        if current.kind != "person":
            raise Invalid("only people have a manager", code="manager_not_person", field="manager")
        if current.manager == manager:
            return current
        event = events.ManagerChanged(
            id=st.ids.next(), actor=actor.handle, at=utcnow(), handle=handle, manager=manager
        )
        pipe.multi()
        await st.writeside.apply(pipe, event)
        eventlog.append(pipe, event, st.settings.partitions)
        changed = True
        return current

    await transact(st.redis, [key], body)
    if changed:
        st.metrics.ingested.labels("ManagerChanged").inc()
    return await lookups.existing(st, handle)


# --- reminds --------------------------------------------------------------------------------
async def remind(st: ApiState, actor: Account, rc: Loaded) -> events.RollCallReminded:
    """Send the roll-call again to everyone not yet accounted for (the escalation worker
    fires it at once): 409 once closed or past its deadline, 429 within REMIND_INTERVAL_S
    of the last remind."""
    p = keys.partition_of(rc.post.as_account, st.settings.partitions)
    state_key = keys.rollcall_state(p, rc.id)

    async def body(pipe: Any) -> events.RollCallReminded:
        raw: Any = await pipe.hgetall(state_key)
        changes = {text(k): text(v) for k, v in raw.items()}
        now = utcnow()
        deadline = _parse(changes.get("deadline", views.rfc3339(rc.deadline)))
        if changes.get("state") == "closed" or now > deadline:
            raise Conflict(
                f"roll-call {rc.id} is past its deadline or closed: nobody is reminded",
                code="rollcall_closed",
            )
        last = changes.get("reminded_at")
        if last is not None:
            wait = _parse(last) + timedelta(seconds=REMIND_INTERVAL_S) - now
            if wait > timedelta(0):
                raise TooManyRequests(
                    f"roll-call {rc.id} was reminded less than {REMIND_INTERVAL_S} s ago",
                    code="remind_too_soon",
                    retry_after=max(1, int(wait.total_seconds()) + 1),
                )
        event = events.RollCallReminded(
            id=st.ids.next(), actor=actor.handle, at=now, rollcall=rc.id, account=rc.post.as_account
        )
        pipe.multi()
        await st.writeside.apply(pipe, event)
        eventlog.append(pipe, event, st.settings.partitions)
        due = EscalationDue(rc.id, rounds.remind_tag(event.id)).member()
        pipe.zadd(keys.rollcall_timers(p), {due: int(time.time() * 1000)}, nx=True)
        return event

    event = await transact(st.redis, [state_key], body)
    st.metrics.ingested.labels("RollCallReminded").inc()
    return event


# --- what escalation sent ---------------------------------------------------------------------
async def deliveries(
    st: ApiState, rc: Loaded, status: str | None, limit: int, after: str | None
) -> EscalationDeliveriesOut:
    """Every escalation delivery of the roll-call and where it stands: the message ids each
    partition was sent (keys.rollcall_messages), then their statuses; two round trips."""
    parts = range(st.settings.partitions)
    async with st.redis.pipeline(transaction=False) as pipe:
        for q in parts:
            pipe.smembers(keys.rollcall_messages(q, rc.id))
        listed: list[Any] = await pipe.execute()
    wanted = [(q, m) for q, members in zip(parts, listed, strict=True) for m in texts(members)]
    async with st.redis.pipeline(transaction=False) as pipe:
        for q, message in wanted:
            pipe.hgetall(keys.delivery_status(q, message))
        shares: list[Any] = await pipe.execute()
    totals = {channel: DeliveryCounts() for channel in keys.OFFAPP_CHANNELS}
    rows = []
    for (_, message), share in zip(wanted, shares, strict=True):
        _, round_, subject = rounds.parse_message_id(message)
        for field, value in share.items():
            handle, _, channel = text(field).rpartition(":")
            found = status_of(value)
            if found is None or channel not in keys.OFFAPP_CHANNELS:
                continue
            counts = totals[channel]
            setattr(counts, found.state, getattr(counts, found.state) + 1)
            if status is not None and found.state != status:
                continue
            logged = found.state == "logged"
            rows.append(
                EscalationDelivery(
                    id=f"{message}.{handle}.{channel}",
                    round=round_,
                    about=subject or handle,
                    handle=handle,
                    channel=channel,  # type: ignore[arg-type]
                    status=found.state,
                    attempts=found.attempts,
                    last_error=None if logged else found.error or None,
                    note=found.error or None if logged else None,
                )
            )
    rows.sort(key=lambda r: r.id)
    if after is not None:
        rows = [r for r in rows if r.id > after]
    return EscalationDeliveriesOut(totals=totals, deliveries=rows[:limit])
