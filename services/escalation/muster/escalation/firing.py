"""Firing one escalation round: who is told, as events, and their deliveries.

A round (muster.rounds: one step of one loop of a roll-call's policy snapshot, or a
remind) walks the roll-call's audience partition by partition, a page at a time. For each
page of partition q, under WATCH on the round's fired hash, the answers and the escalation
counts (all in q's slot), it picks the people

- not accounted for (no answer, or only a suspect one that is not a proxy answer; an answer
  racing the page makes it read again, up to ANSWER_WATCH_TRIES times),
- not told in this round yet (keys.rollcall_fired),
- under the policy's max_sends_per_recipient (steps already fired for them; reminds do not
  count), and with someone to tell (`to: manager`: a manager set; `fallback`: the step's),

then, in one MULTI, applies and appends one RollCallEscalated naming them (WriteSide.apply:
the fired hash, levels and counts) and routes the deliveries to those told about themselves
(same slot: lua/escalation_route.lua). Deliveries to a manager or a fallback live in the
target's partition, so they are routed right after, with HSETNX statuses; a round fired
again after a crash routes again what its fired hash says was told to someone else, which
appends nothing twice. So each (roll-call, round, person) is told at most once, a resend
carries the same message id (muster.rounds.message_id), and nothing here runs in
replay: replay applies the events, it never fires a round.

A round does nothing once the roll-call is closed or past its deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import WatchError

from muster import eventlog, failpoints, keys, rounds, scripts, views
from muster.connection import text
from muster.events import (
    RollCallEscalated,
    RollCallEscalation,
    utcnow,
)
from muster.ids import IdGenerator
from muster.projections.routing import event_time, request_pieces
from muster.records import EscalationDue, accounted_for, follow_of, policy_of, rollcall_answer_of
from muster.settings import Settings
from muster.writeside import WriteSide

log = structlog.get_logger("muster.escalation")

PAGE = 500
"""People of one partition considered per transaction (and named per event, at most)."""
ANSWER_WATCH_TRIES = 3
"""How many times a page is tried with the answers watched (see _fire_page)."""
ALL = ("email", "sms", "webhook")


@dataclass(frozen=True, slots=True)
class Spec:
    """What a round does: whom it tells (`to`), on which channels, and the step it is."""

    tag: str
    step: int  # -1: a remind
    loop: int
    to: str
    channels: tuple[str, ...] | str
    fallback: str | None
    cap: int | None


@dataclass(frozen=True, slots=True)
class Open:
    """A roll-call a round fires for: its post, and the partition of its account."""

    post: views.Post
    p: int


class Firer:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.partitions = settings.partitions
        self.writeside = WriteSide(redis, partitions=settings.partitions)
        self._route = scripts.register(redis, "escalation_route")
        self._ids: IdGenerator | None = None

    async def _generator(self) -> IdGenerator:
        if self._ids is None:
            self._ids = IdGenerator(int(await self.redis.incr(keys.NODE_COUNTER)))
        return self._ids

    # --- the round --------------------------------------------------------------------------
    async def fire(self, due: EscalationDue) -> int:
        """Fire `due` (again: it tells nobody twice); how many people it told now."""
        found = await self._open(due.rollcall)
        if found is None:
            return 0
        spec = await self._spec(found, due)
        if spec is None:
            return 0
        told = 0
        for q in range(self.partitions):
            cursor: Any = 0
            audience = keys.rollcall_audience(q, due.rollcall)
            while True:
                cursor, page = await self.redis.sscan(audience, cursor, count=PAGE)
                if page:
                    told += await self._fire_page(found, spec, q, sorted(text(h) for h in page))
                if int(cursor) == 0:
                    break
        if told:
            log.info("escalation round fired", rollcall=due.rollcall, round=due.round, told=told)
        return told

    async def _open(self, rollcall: str) -> Open | None:
        """The roll-call if it is still open and before its deadline, else None."""
        raw = await self.redis.get(
            keys.post(keys.partition_of_id(rollcall, self.partitions), rollcall)
        )
        if raw is None:
            return None
        post = views.decode_post(raw)
        if post.rollcall is None:
            return None
        p = keys.partition_of(post.as_account, self.partitions)
        state: Any = await self.redis.hgetall(keys.rollcall_state(p, rollcall))
        changes = {text(k): text(v) for k, v in state.items()}
        deadline = _parse(changes.get("deadline", post.rollcall.deadline))
        if changes.get("state") == "closed" or utcnow() > deadline:
            return None
        return Open(post, p)

    async def _spec(self, found: Open, due: EscalationDue) -> Spec | None:
        if due.round.startswith(rounds.REMIND_PREFIX):
            return Spec(due.round, -1, 0, "recipient", "chosen", None, None)
        raw = await self.redis.get(keys.rollcall_policy(found.p, due.rollcall))
        if raw is None:
            return None
        policy = policy_of(raw)
        named = rounds.round_of(policy, due.round)
        if named is None:
            return None
        step, round_ = named
        return Spec(
            due.round,
            round_.step,
            round_.loop,
            step.to,
            step.channels,
            step.fallback,
            policy.max_sends_per_recipient,
        )

    # --- one page ---------------------------------------------------------------------------
    async def _fire_page(self, found: Open, spec: Spec, q: int, page: Sequence[str]) -> int:
        rollcall = found.post.id
        watched = [
            keys.rollcall_fired(q, rollcall, spec.tag),
            keys.rollcall_answers(q, rollcall),
            keys.rollcall_escalation(q, rollcall),
        ]
        managers = await self._managers(q, page) if spec.to == "manager" else {}
        attempt = 0
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                attempt += 1
                try:
                    # The answers only for the first few tries: in a crowd answering at once
                    # they change every millisecond, and the page must still fire. Past them
                    # an answer landing during the page may still get this step (never a
                    # later one); the fired hash and the counts, which only rounds write,
                    # are always watched: nobody is told twice.
                    if attempt <= ANSWER_WATCH_TRIES:
                        await pipe.watch(*watched)
                    else:
                        await pipe.watch(watched[0], watched[2])
                    notices, again = await self._pick(pipe, watched, spec, page, managers)
                    at = views.rfc3339(utcnow())
                    if notices:  # else leaving the block resets the pipeline: UNWATCH
                        at = await self._append(pipe, found, spec, q, notices)
                    break
                except WatchError:
                    continue
        if notices:  # appended, routed to themselves; not yet to managers and fallbacks
            failpoints.hit("escalation.mid_round", self.settings)
            await self.redis.hincrby(keys.ESCALATION_TOTALS, spec.to, len(notices))
        others = [n for n in notices if n.target != n.subject]
        await self._route_others(found, spec, others + again, at)
        return len(notices)

    async def _pick(
        self,
        pipe: Any,
        watched: list[str],
        spec: Spec,
        page: Sequence[str],
        managers: dict[str, str],
    ) -> tuple[list[RollCallEscalation], list[RollCallEscalation]]:
        """Who this page tells now, and who it told before about someone else (their
        delivery is routed again: it may not have been before a crash)."""
        fired_key, answers_key, esc_key = watched
        fired = await pipe.hmget(fired_key, list(page))
        answers = await pipe.hmget(answers_key, list(page))
        sends = await pipe.hmget(esc_key, [f"n:{h}" for h in page])
        notices: list[RollCallEscalation] = []
        again: list[RollCallEscalation] = []
        for handle, told, answer, sent in zip(page, fired, answers, sends, strict=True):
            if told is not None:
                if text(told) != handle:
                    again.append(RollCallEscalation(subject=handle, target=text(told)))
                continue
            if accounted_for(rollcall_answer_of(answer) if answer else None):
                continue
            if spec.cap is not None and spec.step >= 0 and int(sent or 0) >= spec.cap:
                continue
            target = self._target(spec, handle, managers)
            if target is not None:
                notices.append(RollCallEscalation(subject=handle, target=target))
        return notices, again

    async def _append(
        self, pipe: Any, found: Open, spec: Spec, q: int, notices: list[RollCallEscalation]
    ) -> str:
        """The event, its write-side state and the deliveries to those told about
        themselves, in one MULTI (all in q's slot); the event's time, as requests carry it."""
        event = await self._event(found, spec, notices)
        own = [n for n in notices if n.target == n.subject]
        wanted = await self._wanted(found, spec, [n.target for n in own])
        at = event_time(event)
        pipe.multi()
        await self.writeside.apply(pipe, event)
        eventlog.append(pipe, event, self.partitions)
        if own:
            await self._queue_route(pipe, found.post.id, spec, at, own, wanted, q)
        await pipe.execute()
        return at

    def _target(self, spec: Spec, handle: str, managers: dict[str, str]) -> str | None:
        if spec.to == "recipient":
            return handle
        if spec.to == "manager":
            return managers.get(handle)
        return spec.fallback

    async def _managers(self, q: int, page: Sequence[str]) -> dict[str, str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for handle in page:
                pipe.hget(keys.account(q, handle), "manager")
            replies: list[Any] = await pipe.execute()
        return {h: text(m) for h, m in zip(page, replies, strict=True) if m}

    async def _event(
        self, found: Open, spec: Spec, notices: list[RollCallEscalation]
    ) -> RollCallEscalated:
        ids = await self._generator()
        return RollCallEscalated(
            id=ids.next(),
            actor="system",
            at=utcnow(),
            rollcall=found.post.id,
            account=found.post.as_account,
            round=spec.tag,
            step=spec.step,
            loop=spec.loop,
            to=spec.to,
            channels=spec.channels,
            notices=tuple(notices),
        )

    # --- deliveries --------------------------------------------------------------------------
    async def _wanted(self, found: Open, spec: Spec, targets: Sequence[str]) -> dict[str, str]:
        """Target → the channels (csv) the round wants for them, before their reach is
        checked: a list as given; `all` every off-app channel; `chosen` what the person
        chose for following the account (for a critical post: all, as routing does), and
        for a manager or fallback the channels they take direct messages on."""
        if not targets:
            return {}
        if isinstance(spec.channels, tuple):
            return dict.fromkeys(targets, ",".join(spec.channels))
        if spec.channels == "all" or found.post.severity == "critical":
            return dict.fromkeys(targets, ",".join(ALL))
        account = found.post.as_account
        async with self.redis.pipeline(transaction=False) as pipe:
            for target in targets:
                tq = keys.partition_of(target, self.partitions)
                if spec.to == "recipient":
                    pipe.hget(keys.follows(tq, target), account)
                else:
                    pipe.hget(keys.dm_channels(tq), target)
            replies: list[Any] = await pipe.execute()
        wanted = {}
        for target, raw in zip(targets, replies, strict=True):
            if raw is None:
                wanted[target] = ""
            elif spec.to == "recipient":
                wanted[target] = ",".join(follow_of(account, raw).channels)
            else:
                wanted[target] = text(raw)
        return wanted

    async def _queue_route(
        self,
        client: Any,
        rollcall: str,
        spec: Spec,
        at: str,
        notices: Sequence[RollCallEscalation],
        wanted: dict[str, str],
        tq: int,
    ) -> None:
        """One script call for `notices`, whose targets all live in partition tq."""
        statuses: list[str] = []
        args: list[Any] = [keys.DELIVERY_STATUS_TTL_S]
        for notice in notices:
            message = rounds.message_id(rollcall, spec.tag, notice.subject, notice.target)
            head, mid = request_pieces(message, "escalation", "system", at)
            mark = "1" if notice.subject == notice.target else "0"
            statuses.append(keys.delivery_status(tq, message))
            args += [notice.target, wanted.get(notice.target, ""), head, mid, message, mark]
        names = [
            *(keys.reach(tq, c) for c in ALL),
            *(keys.deliveries(tq, c) for c in ALL),
            keys.rollcall_unreachable(tq, rollcall),
            keys.rollcall_messages(tq, rollcall),
            *statuses,
        ]
        await self._route(keys=names, args=args, client=client)

    async def _route_others(
        self, found: Open, spec: Spec, notices: Sequence[RollCallEscalation], at: str
    ) -> None:
        """Deliveries to managers and fallbacks, in their targets' partitions, one script
        call per partition (HSETNX statuses: routing one again appends nothing). A notice
        from an earlier firing of the round is routed with this firing's time in its
        request: the id is the same."""
        if not notices:
            return
        targets = list(dict.fromkeys(n.target for n in notices))
        wanted = await self._wanted(found, spec, targets)
        by_partition: dict[int, list[RollCallEscalation]] = {}
        for notice in notices:
            tq = keys.partition_of(notice.target, self.partitions)
            by_partition.setdefault(tq, []).append(notice)
        async with self.redis.pipeline(transaction=False) as pipe:
            for tq, group in by_partition.items():
                await self._queue_route(pipe, found.post.id, spec, at, group, wanted, tq)
            await pipe.execute()


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))
