"""Delivery worker: sends the requests the timeline worker routed — email, SMS, webhooks.

It reads keys.deliveries(p, c) for each off-app channel, plus its re-drive stream, on the
shared consumer loop, and for each batch:

1. reads every request's status (keys.delivery_status). A request is done once the status
   says `sent` or `logged`, or records more sends than the request had seen (`attempt`): handling an
   entry again — after a crash, a reclaim, a batch retried one by one — sends nothing;
2. reads the content (post or DM) and the recipient's current contact point;
3. sends the rest concurrently: a global limit (MUSTER_DELIVERY_CONCURRENCY) and one per
   destination (SMTP sessions, each webhook host, the SMS provider), over kept connections.
   A send that cannot start within the wait budget (its destination is busy) is deferred —
   put back in a second, untried — so a batch always ends long before MUSTER_CLAIM_IDLE_MS
   and is never reclaimed, and sent twice, because one receiver is slow;
4. records every outcome in one pipeline: `sent`; `logged` when the channel has nowhere to
   send (no SMTP server: the development mailbox; the SMS `log` provider), with a note
   saying where it went; `pending` plus the request in the delayed set for a transient
   failure (retries.py); `failed` for a permanent one or an exhausted schedule;
5. returns an outcome per entry: the failed ones `Failed` (the loop dead-letters them), the
   rest done (the loop acknowledges them). A failure never makes the batch run again, so a
   neighbour that was sent, or deferred to the delayed set, is never sent a second time.

So a (message, recipient, channel) is never dropped, and is sent twice only if the process
dies between the provider's acceptance and step 4 — with the same Message-ID / webhook-id
(guarantee 2 of docs/architecture.md; failpoints.py marks those steps for the crash tests).
A re-driven dead letter whose status is `failed` is re-issued as a fresh request (a new
retry schedule), atomically with its status going back to `pending`.

Subscribers without an account (recipients `sub-<id>`, muster.subscriptions) go the same
way, checked again at send time: only while the subscription is active, only public posts.
Each email and webhook to one carries a fresh unsubscribe link: a random token whose SHA-256
is written (keys.unsubscribe_token, with the subscription's generation) before the send. A
`confirm` request is the double opt-in message of a subscription request (its secret is in
the request); a webhook's is the handshake, and its 2xx appends SubscriptionConfirmed before
the delivery is recorded, so a crash in between sends the handshake again, never loses it.
A subscriber's webhook answering 410 ends the subscription (SubscriptionEnded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import structlog
from aiohttp.abc import AbstractResolver

from muster import failpoints, keys, rounds, scripts
from muster import subscriptions as subs
from muster.answerlinks import Links
from muster.consumer import Failed, Handler, Message, Outcomes
from muster.delivery import content as contents
from muster.delivery.email import EmailSender, Mailbox, SubscriberParts
from muster.delivery.retries import Scheduler, next_delay_s, now_ms, retry_payload
from muster.delivery.sms import (
    SmsProvider,
    confirmation_sms_text,
    provider_for,
    rollcall_sms_text,
    sms_text,
    subscriber_sms_text,
)
from muster.delivery.status import Recorder, clip
from muster.delivery.webhook import (
    WebhookGone,
    WebhookSender,
    confirmation_body,
    rollcall_body,
    subscriber_body,
)
from muster.errors import PermanentDeliveryError, TransientDeliveryError
from muster.events import SubscriptionConfirmed, SubscriptionEnded, utcnow
from muster.ids import IdGenerator
from muster.keys import GROUP_DELIVERY
from muster.records import (
    DONE_STATES,
    DeliveryRequest,
    Status,
    Subscription,
    decode_request,
    encode_request,
    status_field,
    status_of,
)
from muster.settings import Settings
from muster.writeside import WriteSide

GROUP = GROUP_DELIVERY
log = structlog.get_logger("muster.delivery")

_KINDS = {"post", "dm", "confirm", "escalation"}


def streams_for(partition: int) -> list[str]:
    return [keys.deliveries(partition, channel) for channel in keys.OFFAPP_CHANNELS] + [
        keys.retry(partition, GROUP)
    ]


@dataclass(slots=True)
class _Job:
    request: DeliveryRequest
    q: int
    status: Status | None
    entry: str  # the stream entry it came from, for its outcome
    disabled: bool = False  # webhook answered 410 earlier
    unsubscribe: str = ""  # a subscriber's post: the link this message carries
    answering: contents.Answering | None = None  # a roll-call's: how this recipient answers


@dataclass(frozen=True, slots=True)
class _Outcome:
    state: str  # "sent" | "logged" | "retry" | "failed" | "deferred" (not tried: destination busy)
    error: str = ""  # or, when logged, where it went instead
    gone: bool = False


_SENT = _Outcome("sent")
_DEFERRED = _Outcome("deferred")
DEFER_S = 1.0


class Delivery:
    """The handler (`await delivery(messages)`), with the retry scheduler beside the loops."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.partitions = settings.partitions
        self.schedule = settings.delivery_retry_schedule
        self.webhooks = WebhookSender(settings, resolver=resolver)
        self.email: EmailSender | Mailbox = (
            EmailSender(settings) if settings.smtp_url and settings.mail_from else Mailbox(settings)
        )
        self.sms: SmsProvider = provider_for(settings)
        self.scheduler = Scheduler(redis, partitions=settings.partitions)
        self._redrive_streams = {keys.retry(p, GROUP) for p in range(settings.partitions)}
        self._global = asyncio.Semaphore(settings.delivery_concurrency)
        self._limits: dict[str, asyncio.Semaphore] = {}
        # How long a send may wait for its destination's slot: past it, it is deferred, so
        # a batch (waits + one send's timeout) ends well before MUSTER_CLAIM_IDLE_MS and is
        # never reclaimed, and sent twice, just because one receiver is slow.
        self.wait_budget_s = max(
            1.0, settings.claim_idle_ms / 1000 - settings.webhook_timeout_s - 2.0
        )
        self._sms_texts: contents.Rendered[str, str] = contents.Rendered()
        self._reissue = scripts.register(redis, "delivery_reissue")
        self.writeside = WriteSide(redis, partitions=settings.partitions)
        self.links = Links(redis, settings.partitions)
        self._ids: IdGenerator | None = None

    # --- Service -------------------------------------------------------------------------------
    async def run_beside(self, stop: asyncio.Event) -> None:
        await self.scheduler.run(stop)

    async def aclose(self) -> None:
        await self.webhooks.aclose()
        await self.sms.aclose()
        await self.email.aclose()

    # --- one batch ----------------------------------------------------------------------------
    async def __call__(self, messages: Sequence[Message[DeliveryRequest]]) -> Outcomes:
        outcomes: dict[str, Failed] = {}
        latest: dict[str, _Job] = {}  # by request id: copies of one request are sent once
        redriven: list[_Job] = []
        for message in messages:
            request = message.event
            if request.channel not in keys.OFFAPP_CHANNELS or request.kind not in _KINDS:
                outcomes[message.entry_id] = Failed(f"not a delivery request: {request.id}")
                continue
            q = keys.partition_of(request.recipient, self.partitions)
            job = _Job(request, q, None, message.entry_id)
            if message.stream in self._redrive_streams:
                redriven.append(job)
                continue
            seen = latest.get(request.id)
            if seen is None or request.attempt >= seen.request.attempt:
                latest[request.id] = job
        jobs = list(latest.values())
        await self._read_statuses(jobs + redriven)

        permanent: dict[str, str] = {}  # entry → error
        to_send: list[_Job] = []
        for job in redriven:
            if job.status is None or job.status.state == "failed":
                await self._reissue_one(job)
            else:
                jobs.append(job)
        for job in jobs:
            status = job.status
            if status is not None and (
                status.state in DONE_STATES or status.attempts > job.request.attempt
            ):
                if status.state == "failed":  # recorded, not yet dead-lettered: do it now
                    permanent[job.entry] = f"{job.request.id}: {status.error}"
                continue
            to_send.append(job)

        if to_send:
            recorder = Recorder()
            await self._deliver(to_send, recorder, permanent)
            await recorder.flush(self.redis, self.partitions)
            failpoints.hit("delivery.after_record", self.settings)
        outcomes.update((entry, Failed(error)) for entry, error in permanent.items())
        return outcomes

    async def _read_statuses(self, jobs: list[_Job]) -> None:
        """Every job's status, and for webhooks whether theirs is disabled: one HMGET per
        message and one SMISMEMBER per partition (a post's batch shares one message), not a
        command per job — per-command work was a good part of the worker's CPU."""
        if not jobs:
            return
        by_status: dict[str, list[_Job]] = {}
        hooks: dict[int, list[_Job]] = {}
        for job in jobs:
            by_status.setdefault(keys.delivery_status(job.q, job.request.message_id), []).append(
                job
            )
            if job.request.channel == "webhook":
                hooks.setdefault(job.q, []).append(job)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, group in by_status.items():
                pipe.hmget(
                    key, [status_field(j.request.recipient, j.request.channel) for j in group]
                )
            for q, group in hooks.items():
                pipe.smismember(keys.webhooks_disabled(q), [j.request.recipient for j in group])
            replies: list[Any] = await pipe.execute()
        for group, statuses in zip(by_status.values(), replies, strict=False):
            for job, raw in zip(group, statuses, strict=True):
                job.status = status_of(raw)
        for group, disabled in zip(hooks.values(), replies[len(by_status) :], strict=True):
            for job, flag in zip(group, disabled, strict=True):
                job.disabled = bool(flag)

    async def _reissue_one(self, job: _Job) -> None:
        r, status = job.request, job.status
        made = status.attempts if status is not None else 0
        fresh = encode_request(
            DeliveryRequest(
                id=r.id,
                actor=r.actor,
                at=r.at,
                message_id=r.message_id,
                kind=r.kind,
                recipient=r.recipient,
                channel=r.channel,
                attempt=made,
                schedule_from=made,
            )
        )
        pending = Status("pending", made, status.error if status is not None else "")
        done = await self._reissue(
            keys=[keys.delivery_status(job.q, r.message_id), keys.deliveries(job.q, r.channel)],
            args=[
                status_field(r.recipient, r.channel),
                status.encode() if status is not None else "",
                pending.encode(),
                fresh,
                keys.DELIVERY_STATUS_TTL_S,
            ],
        )
        if int(done):
            log.info("re-driven delivery re-issued", delivery=r.id, attempts=made)

    # --- sending ------------------------------------------------------------------------------
    async def _deliver(
        self, jobs: list[_Job], recorder: Recorder, permanent: dict[str, str]
    ) -> None:
        found, people = await contents.load(self.redis, (j.request for j in jobs), self.partitions)
        deadline = asyncio.get_running_loop().time() + self.wait_budget_s
        sends: list[tuple[_Job, Awaitable[_Outcome]]] = []
        minted: list[tuple[_Job, contents.Recipient]] = []
        asked: list[tuple[_Job, contents.Content, contents.Recipient]] = []
        ready: list[tuple[_Job, contents.Content, contents.Recipient]] = []
        for job in jobs:
            r = job.request
            content = found.get(r.message_id)
            person = people.get(r.recipient)
            refusal = self._refusal(job, content, person)
            if refusal is not None:  # nothing was tried: no attempt counted, no dead letter
                recorder.status(
                    job.q,
                    r.message_id,
                    r.recipient,
                    r.channel,
                    Status("failed", r.attempt, refusal),
                )
                recorder.count(r.channel, "failed")
                continue
            if content is None or person is None:
                sends.append((job, _missing()))
                continue
            if person.subscription is not None and r.kind == "post" and r.channel != "sms":
                minted.append((job, person))
            elif person.subscription is None and _asks(r, content):
                asked.append((job, content, person))
            ready.append((job, content, person))
        await self._mint_unsubscribe(minted)
        await self._mint_answering(asked)
        for job, content, person in ready:
            sends.append((job, self._send(job, content, person, deadline)))
        outcomes = await asyncio.gather(*(send for _, send in sends))
        await self._after_subscriber_sends(sends, outcomes, people)
        sent_ms = now_ms()
        for (job, _), outcome in zip(sends, outcomes, strict=True):
            self._record(job, outcome, recorder, permanent)
            r = job.request
            content, person = found.get(r.message_id), people.get(r.recipient)
            if (
                r.channel == "sms"
                and outcome.state in ("sent", "logged")
                and content is not None
                and content.post is not None
                and person is not None
                and person.subscription is None
                and person.phone
            ):  # a text back from that phone replies to this post (muster.smsthreads)
                recorder.sent_post_by_sms(person.phone, r.recipient, content.post.id, int(sent_ms))

    def _refusal(
        self, job: _Job, content: contents.Content | None, person: contents.Recipient | None
    ) -> str | None:
        """Why this request cannot be sent at all (so is not tried), or None."""
        r = job.request
        if person is not None and person.subscription is not None:
            return self._subscriber_refusal(r, content, person.subscription)
        if person is None or person.kind is None:
            return f"no account {r.recipient}"
        if r.kind == "confirm":
            return "a confirmation is for a subscriber"
        if content is not None and content.internal and not person.is_employee:
            return "an internal post is not for this recipient"
        if person.contact(r.channel) is None:
            return f"no contact point for {r.channel}"
        if job.disabled:
            return "webhook disabled after it answered 410 Gone; set a new webhook_url"
        return None

    @staticmethod
    def _subscriber_refusal(
        r: DeliveryRequest, content: contents.Content | None, sub: Subscription
    ) -> str | None:
        """A subscriber gets public posts while active, and its request's confirmation
        while that request waits (not an older one's, not after it expired)."""
        if r.channel != sub.channel:
            return f"the subscription is by {sub.channel}, not {r.channel}"
        if r.kind == "confirm":
            request = sub.pending_request(utcnow())
            if request is None or request.event != r.message_id or not r.secret:
                return "the subscription request was confirmed, replaced or expired"
            return None
        if r.kind != "post":
            return "a subscriber gets posts only"
        if content is not None and content.internal:
            return "an internal post is not for this recipient"
        if sub.state != "active":
            return f"the subscription is {sub.state}, not active"
        return None

    async def _mint_unsubscribe(self, jobs: list[tuple[_Job, contents.Recipient]]) -> None:
        """A fresh unsubscribe token for each subscriber email and webhook about to be sent,
        its hash written first (so the link works when the message arrives)."""
        if not jobs:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job, person in jobs:
                sub = person.subscription
                assert sub is not None
                token = subs.new_token()
                pipe.set(
                    keys.unsubscribe_token(job.q, subs.token_hash(token)),
                    f"{sub.id}|{sub.generation}",
                    ex=keys.UNSUBSCRIBE_TOKEN_TTL_S,
                )
                job.unsubscribe = contents.unsubscribe_link(self.settings.public_url, sub.id, token)
            await pipe.execute()

    async def _mint_answering(
        self, jobs: list[tuple[_Job, contents.Content, contents.Recipient]]
    ) -> None:
        """How each recipient of a roll-call answers from the message about to be sent
        (muster.answerlinks): a link of its own (email, SMS: the answer page; webhook: its
        callback), recorded first so it works when the message arrives, and for an SMS reply
        codes of its own on that phone; all in one pipeline. A resend gets the same link
        and the same codes."""
        if not jobs:
            return
        public = self.settings.public_url
        now = utcnow()
        codes: list[tuple[_Job, str, int]] = []  # (job, link, its codes' result index)
        async with self.redis.pipeline(transaction=False) as pipe:
            queued = 0
            for job, content, person in jobs:
                r = job.request
                assert content.post is not None
                assert content.post.rollcall is not None
                question = content.post.rollcall
                grace_until = datetime.fromisoformat(question.deadline.replace("Z", "+00:00"))
                grace_until += timedelta(seconds=question.grace_s)
                left_s = max(0, int((grace_until - now).total_seconds()))
                link = await self.links.mint(
                    pipe, content.post.id, r.recipient, r.channel,
                    ttl_s=left_s + keys.ROLLCALL_LINK_SLACK_S,
                )  # fmt: skip
                queued += 1
                if r.channel == "webhook":
                    job.answering = contents.Answering(contents.respond_url(public, link))
                elif r.channel == "sms" and person.phone:
                    await self.links.allocate_codes(
                        person.phone,
                        content.post.id,
                        r.recipient,
                        len(question.options),
                        expires_ms=int(grace_until.timestamp() * 1000),
                        pipe=pipe,
                    )
                    codes.append((job, link, queued))
                    queued += 1
                else:
                    job.answering = contents.Answering(contents.answer_link(public, link))
            replies: list[Any] = await pipe.execute()
        for job, link, index in codes:
            job.answering = contents.Answering(
                contents.answer_link(public, link), int(replies[index])
            )

    async def _generator(self) -> IdGenerator:
        if self._ids is None:
            self._ids = IdGenerator(int(await self.redis.incr(keys.NODE_COUNTER)))
        return self._ids

    async def _after_subscriber_sends(
        self, sends: list[tuple[_Job, Any]], outcomes: Sequence[_Outcome], people: Any
    ) -> None:
        """A webhook handshake answered 2xx confirms its subscription; a subscriber's webhook
        answering 410 ends it. Appended before the outcomes are recorded."""
        for (job, _), outcome in zip(sends, outcomes, strict=True):
            r = job.request
            person = people.get(r.recipient)
            sub = person.subscription if person is not None else None
            if sub is None or r.channel != "webhook":
                continue
            if r.kind == "confirm" and outcome.state == "sent":
                await self._confirm_handshake(sub.id, r.message_id)
            elif outcome.gone:
                await self._end_gone(sub.id)

    async def _confirm_handshake(self, subscription: str, request_id: str) -> None:
        ids = await self._generator()

        def decide(sub: Subscription | None) -> SubscriptionConfirmed | None:
            now = utcnow()
            request = sub.pending_request(now) if sub is not None else None
            if sub is None or request is None or request.event != request_id:
                return None  # confirmed meanwhile (a resend), replaced or expired
            return SubscriptionConfirmed(
                id=ids.next(),
                actor="system",
                at=now,
                subscription=sub.id,
                account=sub.account,
                channel=sub.channel,
                how="webhook_handshake",
                request=request.event,
                components=request.components,
                webhook_secret=request.webhook_secret,
                generation=sub.generation + (sub.state != "active"),
            )

        await subs.change(self.redis, self.writeside, self.partitions, subscription, decide)

    async def _end_gone(self, subscription: str) -> None:
        ids = await self._generator()

        def decide(sub: Subscription | None) -> SubscriptionEnded | None:
            if sub is None or sub.state != "active":
                return None
            return SubscriptionEnded(
                id=ids.next(),
                actor="system",
                at=utcnow(),
                subscription=sub.id,
                account=sub.account,
                channel=sub.channel,
                how="webhook_gone",
            )

        await subs.change(self.redis, self.writeside, self.partitions, subscription, decide)

    def _limit(self, name: str, size: int) -> asyncio.Semaphore:
        limit = self._limits.get(name)
        if limit is None:
            limit = self._limits[name] = asyncio.Semaphore(size)
        return limit

    def _destination(self, channel: str, person: contents.Recipient) -> asyncio.Semaphore:
        """Per-destination limit, taken before the global one so a slow destination waits
        on its own slots and never holds the global ones others need."""
        if channel == "email":
            return self._limit("smtp", self.settings.smtp_connections)
        if channel == "sms":
            return self._limit("sms", self.settings.http_host_connections)
        try:
            host = urlsplit(person.webhook_url or "").netloc.lower()
        except ValueError:
            host = ""
        return self._limit(f"webhook:{host}", self.settings.http_host_connections)

    async def _slots(self, destination: asyncio.Semaphore, deadline: float) -> bool:
        """Take the destination's slot, then a global one, before `deadline`; False if not."""
        if not destination.locked() and not self._global.locked():
            # Both free: taken at once, no timer to arm (most sends, and a timer each was
            # a few per cent of the worker's CPU).
            await destination.acquire()
            await self._global.acquire()
            return True
        try:
            async with asyncio.timeout_at(deadline):
                await destination.acquire()
                try:
                    await self._global.acquire()
                except BaseException:
                    destination.release()
                    raise
        except TimeoutError:
            return False
        return True

    async def _send(
        self, job: _Job, content: contents.Content, person: contents.Recipient, deadline: float
    ) -> _Outcome:
        r = job.request
        send = self._sender(job, content, person)
        destination = self._destination(r.channel, person)
        if not await self._slots(destination, deadline):
            return _DEFERRED
        try:
            failpoints.hit("delivery.before_send", self.settings)
            try:
                note = await send()
            except WebhookGone as exc:
                return _Outcome("failed", str(exc), gone=True)
            except PermanentDeliveryError as exc:
                return _Outcome("failed", str(exc))
            except TransientDeliveryError as exc:
                return _Outcome("retry", str(exc))
            except Exception as exc:  # a library's surprise: retried, and logged in full
                log.exception("unexpected delivery error", delivery=r.id, channel=r.channel)
                return _Outcome("retry", f"{type(exc).__name__}: {exc}")
        finally:
            self._global.release()
            destination.release()
        failpoints.hit("delivery.after_send", self.settings)
        return _SENT if note is None else _Outcome("logged", note)

    def _sender(
        self, job: _Job, content: contents.Content, person: contents.Recipient
    ) -> Callable[[], Awaitable[str | None]]:
        r = job.request
        if person.subscription is not None:
            return self._subscriber_sender(job, content, person, person.subscription)
        answering = job.answering
        if answering is not None:  # a roll-call: rendered for this recipient
            if r.channel == "webhook":
                pair = rollcall_body(content, answering.url)
                return lambda: self.webhooks.send(r.id, content, person, pair)
            if r.channel == "email":
                return lambda: self.email.send(r.id, content, person, answer_url=answering.url)
            text = rollcall_sms_text(content, answering)
            # private: it carries the recipient's answer link, which no log may hold
            return lambda: self.sms.send(r.id, person.phone or "", text, private=True)
        if r.channel == "webhook":
            return lambda: self.webhooks.send(r.id, content, person)
        if r.channel == "email":
            return lambda: self.email.send(r.id, content, person)
        text = self._sms_texts.get(content.id, lambda: sms_text(content, self.settings.public_url))
        return lambda: self.sms.send(r.id, person.phone or "", text, private=content.private)

    def _subscriber_sender(
        self,
        job: _Job,
        content: contents.Content,
        person: contents.Recipient,
        sub: Subscription,
    ) -> Callable[[], Awaitable[str | None]]:
        """A subscriber's message: a post with its own unsubscribe link (SMS: how to stop),
        or the confirmation of its request, with the secret the request carries."""
        r, public = job.request, self.settings.public_url
        if r.kind == "confirm":
            secret = r.secret or ""
            request = sub.request
            assert request is not None
            if r.channel == "email":
                link = contents.confirm_link(public, sub.id, secret)
                parts = SubscriberParts(sub.account, link, request.requested_at.isoformat())
                return lambda: self.email.send(r.id, content, person, parts)
            if r.channel == "sms":
                text = confirmation_sms_text(sub.account, secret)
                return lambda: self.sms.send(r.id, person.phone or "", text, private=True)
            body = confirmation_body(sub.id, sub.account, request.components)
            pair = (body, body.decode())
            return lambda: self.webhooks.send(r.id, content, person, pair, request.webhook_secret)
        if r.channel == "email":
            parts = SubscriberParts(sub.account, job.unsubscribe)
            return lambda: self.email.send(r.id, content, person, parts)
        if r.channel == "sms":
            text = self._sms_texts.get(
                f"sub:{content.id}", lambda: subscriber_sms_text(content, public)
            )
            return lambda: self.sms.send(r.id, person.phone or "", text, private=False)
        pair = subscriber_body(content, job.unsubscribe)
        return lambda: self.webhooks.send(r.id, content, person, pair)

    def _record(
        self, job: _Job, outcome: _Outcome, recorder: Recorder, permanent: dict[str, str]
    ) -> None:
        r = job.request
        made = r.attempt + 1
        error = clip(outcome.error)
        if outcome.state == "sent":
            recorder.status(job.q, r.message_id, r.recipient, r.channel, Status("sent", made))
            recorder.count(r.channel, "sent")
            return
        if outcome.state == "logged":
            recorder.status(
                job.q, r.message_id, r.recipient, r.channel, Status("logged", made, error)
            )
            recorder.count(r.channel, "logged")
            return
        if outcome.state == "deferred":  # not tried: the same request, again in a moment
            recorder.retry(job.q, r.channel, encode_request(r), now_ms() + DEFER_S * 1000)
            recorder.count(r.channel, "deferred")
            return
        if outcome.state == "retry":
            delay = next_delay_s(r, self.schedule)
            if delay is not None:
                recorder.status(
                    job.q, r.message_id, r.recipient, r.channel, Status("pending", made, error)
                )
                recorder.retry(job.q, r.channel, retry_payload(r), now_ms() + delay * 1000)
                recorder.count(r.channel, "retried")
                log.warning(
                    "delivery will be retried",
                    delivery=r.id,
                    attempts=made,
                    in_s=round(delay, 1),
                    error=error,
                )
                return
            error = clip(f"gave up after {made - r.schedule_from} attempts: {error}")
        recorder.status(job.q, r.message_id, r.recipient, r.channel, Status("failed", made, error))
        recorder.count(r.channel, "failed")
        if outcome.gone and not r.recipient.startswith("sub-"):  # a subscriber's ends instead
            recorder.disable_webhook(job.q, r.recipient)
        permanent[job.entry] = f"{r.id}: {error}"
        log.warning("delivery failed", delivery=r.id, attempts=made, error=error)


def _asks(r: DeliveryRequest, content: contents.Content) -> bool:
    """A roll-call's post, or an escalation's reminder to the person asked (not a notice to
    their manager, who was not asked): each recipient's message says how to answer it."""
    if content.post is None or content.post.rollcall is None:
        return False
    if r.kind == "escalation":
        return rounds.parse_message_id(r.message_id)[2] is None
    return r.kind == "post"


async def _missing() -> _Outcome:
    """The post or DM is not in the store (yet: a projection being rebuilt): try later."""
    return _Outcome("retry", "content not found in the post store")


decode = decode_request
"""What the delivery streams hold (the consumer loop decodes each entry with it)."""


async def make_handler(redis: aioredis.Redis, settings: Settings) -> Handler:
    return Delivery(redis, settings)
