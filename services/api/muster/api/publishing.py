"""Posts and DMs: the ingest hot path. One script call checks and appends (lua/append_checked.lua);
with nothing to check (no Idempotency-Key, posting as oneself) a plain XADD does the same.

An Idempotency-Key belongs to its caller (docs/api.md): the record lives in the caller's
partition (keys.idempotency). When that is also the partition the event goes to — always
with one partition, and for every DM — the record is checked and written by the same
script that appends, atomically. Otherwise it cannot share the script's slot, so:

1. the key is claimed in the caller's partition (an "in progress" marker holding the body's
   fingerprint, kept for the key's whole window): a key already answered replays that
   answer, a key claimed with another body is 409 — whatever account either body posts as,
   and even when the claiming request died (its append may have happened);
2. the script appends, checked against a *receipt* of the same key in the event's partition
   and writing it atomically with the event: a retry of a request that died after its
   append, or one racing it, gets the first answer and appends nothing;
3. the answer is recorded in the caller's partition; a refused append releases the claim.
"""

from __future__ import annotations

import functools
import hashlib
import time
from typing import Any

import msgspec

from muster import eventlog, events, keys, scripts, views
from muster.api import bodies, lookups
from muster.api.reads import can_see
from muster.api.schemas import CreateDm, CreatePost
from muster.api.state import ApiState
from muster.errors import Conflict, Forbidden, Invalid, NotFound
from muster.events import utcnow
from muster.ids import id_time_ms
from muster.records import Account

_PENDING = b"~"


def _fingerprint(route: str, request: msgspec.Struct) -> str:
    return hashlib.sha256(route.encode() + b"\n" + bodies.encode(request)).hexdigest()


def _reused() -> Conflict:
    return Conflict(
        "this Idempotency-Key was used with a different body", code="idempotency_key_reused"
    )


class _Append:
    """One checked append: the event, its answer, and who may make it."""

    def __init__(
        self,
        state: ApiState,
        event: events.Event,
        response: bytes,
        *,
        caller: str,
        poster_of: str | None,
        route: str,
        request: msgspec.Struct,
    ) -> None:
        self.state = state
        self.event = event
        self.response = response
        self.caller = caller
        self.poster_of = poster_of
        self.route = route
        self.request = request
        partitions = state.settings.partitions
        self.partition = eventlog.partition_for(event, partitions)
        self.caller_partition = keys.partition_of(caller, partitions)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Of the request body: only requests with an Idempotency-Key need one."""
        return _fingerprint(self.route, self.request)

    async def run(self, idempotency_key: str | None) -> bytes:
        if idempotency_key is None:
            return await self._script(None)
        record = keys.idempotency(self.caller_partition, self.caller, idempotency_key)
        if self.caller_partition == self.partition:
            return await self._script(record)
        receipt = keys.idempotency(self.partition, self.caller, idempotency_key)
        return await self._claimed(record, receipt)

    async def _script(self, record: str | None) -> bytes:
        p = eventlog.noting(self.partition)
        if record is None and self.poster_of is None:
            # Nothing for the script to check (no key, no poster): all it would do is this XADD,
            # which is cheaper to send (benchmarks/ingest.py).
            await self.state.redis.xadd(
                keys.events(p), {events.STREAM_FIELD: events.encode(self.event)}
            )
            self.state.metrics.ingested.labels(events.event_type(self.event)).inc()
            return self.response
        script_keys = [keys.events(p), keys.posters(p, self.poster_of or self.caller)]
        if record is not None:
            script_keys.append(record)
        scripts.check_one_slot("append_checked", script_keys)
        reply = await self.state.redis.eval(
            _APPEND_CHECKED,
            len(script_keys),
            *script_keys,
            events.encode(self.event),
            "1" if self.poster_of is not None else "0",
            self.caller,
            self.fingerprint if record is not None else "",
            self.response,
            keys.IDEMPOTENCY_TTL_S,
        )
        outcome = reply[0].decode()
        if outcome == "ok":
            self.state.metrics.ingested.labels(events.event_type(self.event)).inc()
            return self.response
        if outcome == "replay":
            payload: bytes = reply[1]
            return payload
        if outcome == "conflict":
            self.state.metrics.refused.labels("idempotency_conflict").inc()
            raise _reused()
        raise Forbidden(f"you may not post as {self.poster_of}", code="not_a_poster", field="as")

    async def _claimed(self, record: str, receipt: str) -> bytes:
        claim = Claim(self.state, record, self.fingerprint)
        previous = await claim.begin()
        if previous is not None:
            return previous
        try:
            response = await self._script(receipt)
        except BaseException:
            await claim.release()
            raise
        await claim.done(response)
        return response


class Claim:
    """Steps 1 and 3 of the module docstring, for any write that keeps a receipt of its own
    (posts through the append script; incidents in their MULTI, muster.api.incidents)."""

    def __init__(self, state: ApiState, record: str, fingerprint: str) -> None:
        self.state = state
        self.record = record
        self.fingerprint = fingerprint
        self.mine = False

    @classmethod
    def of(
        cls, state: ApiState, caller: str, key: str, route: str, request: msgspec.Struct
    ) -> Claim:
        partition = keys.partition_of(caller, state.settings.partitions)
        record = keys.idempotency(partition, caller, key)
        return cls(state, record, _fingerprint(route, request))

    async def begin(self) -> bytes | None:
        """The first answer when this key was answered (409 for another body), else None:
        go on, and let the write's receipt make it happen once."""
        redis = self.state.redis
        claim = _PENDING + self.fingerprint.encode()
        self.mine = bool(await redis.set(self.record, claim, nx=True, ex=keys.IDEMPOTENCY_TTL_S))
        if self.mine:
            return None
        previous: Any = await redis.get(self.record)  # bytes: our clients never decode
        if previous is not None and not previous.startswith(_PENDING):
            fingerprint, _, response = previous.partition(b"\n")
            if fingerprint.decode() != self.fingerprint:
                self._conflict()
            answer: bytes = response
            return answer
        if previous is not None and previous[1:].decode() != self.fingerprint:
            self._conflict()
        # In progress with this very body (a retry racing the first request, or after it
        # died): the receipt makes the write happen once.
        return None

    async def done(self, response: bytes) -> None:
        await self.state.redis.set(
            self.record, self.fingerprint.encode() + b"\n" + response, ex=keys.IDEMPOTENCY_TTL_S
        )

    async def release(self) -> None:
        """After a refused write: drop the claim (only ours: another request may hold it)."""
        if self.mine:
            claim = _PENDING + self.fingerprint.encode()
            await self.state.redis.eval(_RELEASE, 1, self.record, claim)

    def _conflict(self) -> None:
        self.state.metrics.refused.labels("idempotency_conflict").inc()
        raise _reused()


_APPEND_CHECKED = scripts.source("append_checked")
_RELEASE = scripts.source("idempotency_release")


# --- the rules of a post or DM, wherever it comes from (the app, a reply by email) ---
IN_FLIGHT_MS = 60_000
"""A parent newer than this may still be on its way to the projections: accepted unseen."""


def _unseen_parent(parent_id: str, field: str) -> None:
    age = time.time() * 1000 - id_time_ms(parent_id)
    if not -5_000 < age < IN_FLIGHT_MS:
        raise NotFound(
            f"no such {field.replace('_', ' ')} target {parent_id}",
            code="no_such_parent",
            field=field,
        )


async def check_reply(st: ApiState, caller: Account, parent_id: str) -> None:
    """A reply's parent must be a post the caller can see (404 otherwise, never a hint)."""
    parent = await st.reader.post(parent_id)
    if parent is None:
        _unseen_parent(parent_id, "in_reply_to")
    elif not can_see(parent, caller):
        raise NotFound(f"no post {parent_id}", code="no_such_parent", field="in_reply_to")


async def check_dm_reply(st: ApiState, caller: Account, to: str, parent_id: str) -> None:
    """A DM replies to a message of the same two people."""
    found = await st.reader.messages([parent_id])
    if not found:
        _unseen_parent(parent_id, "in_reply_to")
    elif {found[0].from_, found[0].to} != {caller.handle, to}:
        raise NotFound(f"no message {parent_id}", code="no_such_parent", field="in_reply_to")


def check_sender(caller: Account) -> None:
    """Only people and services post and send DMs."""
    if caller.kind not in {"person", "service"}:
        raise Forbidden("only people and services post", code="cannot_post")


def visibility_for(caller: Account, asked: str | None) -> str:
    """A post's visibility: as asked, else internal (public for an external person, who may
    post publicly only)."""
    external = caller.kind == "person" and caller.role == "external"
    visibility = asked or ("public" if external else "internal")
    if external and visibility == "internal":
        raise Forbidden(
            "external accounts post publicly only", code="external_internal", field="visibility"
        )
    return visibility


async def check_dm_recipient(st: ApiState, caller: Account, to: str) -> None:
    """A DM goes to another person, one whose account is active."""
    if to == caller.handle:
        raise Invalid("you cannot message yourself", code="cannot_message_self", field="to")
    if await lookups.kind_of(st, to, field="to", active=True) != "person":
        raise Invalid(f"{to} is not a person; DMs go to people", code="wrong_kind", field="to")


async def publish_post(
    state: ApiState,
    caller: Account,
    req: CreatePost,
    *,
    as_account: str,
    visibility: str,
    idempotency_key: str | None,
    rollcall: events.RollCall | None = None,
) -> bytes:
    event = events.PostPublished(
        id=state.ids.next(),
        actor=caller.handle,
        at=utcnow(),
        author=caller.handle,
        as_account=as_account,
        text=req.text,
        visibility=visibility,
        severity=req.severity,
        in_reply_to=req.in_reply_to,
        rollcall=rollcall,
    )
    append = _Append(
        state,
        event,
        views.encode(views.post_of(event)),
        caller=caller.handle,
        poster_of=as_account if as_account != caller.handle else None,
        route="POST /v1/posts",
        request=req,
    )
    return await append.run(idempotency_key)


async def send_dm(
    state: ApiState, caller: Account, req: CreateDm, *, idempotency_key: str | None
) -> bytes:
    event = events.DirectMessageSent(
        id=state.ids.next(),
        actor=caller.handle,
        at=utcnow(),
        recipient=req.to,
        text=req.text,
        in_reply_to=req.in_reply_to,
    )
    append = _Append(
        state,
        event,
        views.encode(views.message_of(event)),
        caller=caller.handle,
        poster_of=None,
        route="POST /v1/dms",
        request=req,
    )
    return await append.run(idempotency_key)
