"""Subscriptions for people without an account: ask, confirm, end, list (the api's side).

Open to the internet, so every path is bounded before it writes:
- rate limits per client network and per target address (fixed one-hour windows), and a
  cap on confirmation messages per address per day: 429 with Retry-After, nothing written;
- the answer to a request is the same whether or not the address is subscribed already
  (no enumeration): a new request is made and confirmed like the first;
- secrets (confirmation tokens and codes, unsubscribe tokens) are random, only their
  SHA-256 is stored, and they expire (24 h; unsubscribe links keys.UNSUBSCRIBE_TOKEN_TTL_S)
  or stop working once used; wrong SMS codes are counted per phone.

A request appends SubscriptionRequested with its write-side state (writeside.py) and, in
the same MULTI of the subscription's partition, the confirmation's delivery request (kind
`confirm`, carrying the token or code) for the delivery worker: the api never sends.
Confirmations and endings go through muster.subscriptions.change.

Consent records where it came from as `network`: HMAC-SHA256 of the client's network
(IPv4 /24, IPv6 /48) under a random key kept in Redis (keys.NETWORK_KEY), never the address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from muster import eventlog, keys
from muster import subscriptions as subs
from muster.api import accounts, validation
from muster.api.schemas import Subscribe
from muster.api.state import ApiState
from muster.connection import text
from muster.errors import Invalid, NotFound, TooManyRequests
from muster.events import SubscriptionConfirmed, SubscriptionEnded, SubscriptionRequested, utcnow
from muster.records import (
    DeliveryRequest,
    Subscription,
    encode_request,
    status_field,
    subscriber_recipient,
    subscription_address,
    subscription_index_id,
    subscription_index_range,
)

HOUR_S = 3600
DAY_S = 24 * 3600
WRONG_CODES_PER_HOUR = 5
"""Wrong SMS codes one phone may send an hour (a code is 6 digits: 10^6 tries are needed)."""


@dataclass(frozen=True, slots=True)
class Asked:
    """What POST .../subscriptions answers: the webhook's secret, when by webhook."""

    webhook_secret: str | None


# --- where a request comes from -----------------------------------------------------------------
async def network_of(st: ApiState, client: str | None) -> str:
    """The keyed hash of the client's network (IPv4 /24, IPv6 /48); "" when unknown."""
    if not client:
        return ""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    net = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    await st.redis.set(keys.NETWORK_KEY, secrets.token_hex(32), nx=True)
    key = await st.redis.get(keys.NETWORK_KEY)
    assert key is not None
    raw = key if isinstance(key, bytes) else key.encode()
    return hmac.new(raw, str(net).encode(), hashlib.sha256).hexdigest()[:32]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _Limit:
    scope: str
    subject: str
    limit: int
    window_s: int
    code: str
    what: str

    def key(self, now: float) -> str:
        return keys.rate(self.scope, _digest(self.subject), int(now // self.window_s))

    def retry_after(self, now: float) -> int:
        return max(1, int(self.window_s - now % self.window_s))


async def _check(st: ApiState, limits: list[_Limit]) -> None:
    """429 if any limit is reached; reads only, so a refused request counts nothing."""
    now = time.time()
    values = await st.redis.mget([limit.key(now) for limit in limits])
    for limit, value in zip(limits, values, strict=True):
        if value is not None and int(value) >= limit.limit:
            raise TooManyRequests(
                f"too many {limit.what}; try again later",
                retry_after=limit.retry_after(now),
                code=limit.code,
            )


async def _count(st: ApiState, limits: list[_Limit]) -> None:
    now = time.time()
    async with st.redis.pipeline(transaction=False) as pipe:
        for limit in limits:
            key = limit.key(now)
            pipe.incr(key)
            pipe.expire(key, limit.window_s + 60)
        await pipe.execute()


# --- asking ---------------------------------------------------------------------------------
def _address(st: ApiState, req: Subscribe) -> tuple[str, str]:
    given = [
        (c, v)
        for c, v in (("email", req.email), ("sms", req.phone), ("webhook", req.webhook_url))
        if v is not None
    ]
    if len(given) != 1:
        raise Invalid("give exactly one of email, phone, webhook_url", code="one_address_needed")
    channel, address = given[0]
    bound = {"email": 254, "sms": 32, "webhook": 2048}[channel]
    if len(address) > bound:
        field = {"email": "email", "sms": "phone", "webhook": "webhook_url"}[channel]
        raise Invalid(f"{field} is over {bound} characters", code="invalid_field", field=field)
    if channel == "email":
        validation.email(address)
    elif channel == "sms":
        validation.phone(address)
    else:
        validation.webhook_url(address, allow_private=st.settings.webhook_allow_private)
    return channel, address


def _components(req: Subscribe) -> tuple[str, ...]:
    names = [name.strip() for name in req.components or ()]
    if any(not name for name in names):
        raise Invalid(
            "a component name must not be blank", code="invalid_field", field="components"
        )
    return tuple(dict.fromkeys(names))


async def request(
    st: ApiState, handle: str, req: Subscribe, client: str | None, *, via: str
) -> Asked:
    """Ask for `handle`'s public updates; the confirmation goes out by the same channel."""
    account = await accounts.load(st.redis, handle, st.settings.partitions)
    if account is None or not account.active:
        raise NotFound(f"no account {handle!r}", code="no_such_account")
    channel, address = _address(st, req)
    components = _components(req)
    s = st.settings
    network = await network_of(st, client)
    target = f"{channel}\n{subscription_address(channel, address)}"
    limits = [
        _Limit(
            "net",
            network or "unknown",
            s.subscribe_rate,
            HOUR_S,
            "too_many_requests",
            "subscription requests from your network",
        ),
        _Limit(
            "addr",
            target,
            s.subscribe_address_rate,
            HOUR_S,
            "too_many_requests",
            "subscription requests for this address",
        ),
        _Limit(
            "confirm",
            target,
            s.subscribe_daily_confirmations,
            DAY_S,
            "confirmation_limit",
            "confirmation messages to this address today",
        ),
    ]
    await _check(st, limits)

    sid = subs.subscription_id(handle, channel, address)
    q = subs.partition(sid, s.partitions)
    secret = subs.new_code() if channel == "sms" else subs.new_token()
    webhook_secret = accounts.new_webhook_secret() if channel == "webhook" else None
    now = utcnow()
    asked = SubscriptionRequested(
        id=st.ids.next(),
        actor="anonymous",
        at=now,
        subscription=sid,
        account=handle,
        channel=channel,
        address=address,
        components=components,
        network=network,
        confirm_hash=subs.secret_hash(sid, secret),
        expires_at=now + timedelta(seconds=keys.SUBSCRIPTION_REQUEST_TTL_S),
        webhook_secret=webhook_secret,
        via=via,
    )
    recipient = subscriber_recipient(sid)
    confirmation = DeliveryRequest(
        id=f"{asked.id}.{recipient}.{channel}",
        actor=handle,
        at=now,
        message_id=asked.id,
        kind="confirm",
        recipient=recipient,
        channel=channel,
        secret=secret,
    )
    status = keys.delivery_status(q, asked.id)
    async with st.redis.pipeline(transaction=True) as pipe:
        await st.writeside.apply(pipe, asked)
        eventlog.append(pipe, asked, s.partitions)
        pipe.hsetnx(status, status_field(recipient, channel), "pending|0|")
        pipe.expire(status, keys.DELIVERY_STATUS_TTL_S)
        pipe.xadd(keys.deliveries(q, channel), {"e": encode_request(confirmation)})
        await pipe.execute()
    await _count(st, limits)
    st.metrics.ingested.labels("SubscriptionRequested").inc()
    return Asked(webhook_secret)


# --- confirming -----------------------------------------------------------------------------
def _confirmed(
    st: ApiState,
    sub: Subscription,
    how: str,
    network: str,
    request_id: str | None,
    components: tuple[str, ...],
    webhook_secret: str | None,
) -> SubscriptionConfirmed:
    return SubscriptionConfirmed(
        id=st.ids.next(),
        actor="anonymous",
        at=utcnow(),
        subscription=sub.id,
        account=sub.account,
        channel=sub.channel,
        how=how,
        request=request_id,
        network=network,
        components=components,
        webhook_secret=webhook_secret,
        generation=sub.generation + (sub.state != "active"),
    )


INVALID_LINK = "this link is not valid: it was used already, has expired, or was never sent"


async def confirm_link(st: ApiState, sid: str, token: str, network: str) -> Subscription:
    """The button of an email's confirmation page: the subscription is active from now on."""

    def decide(sub: Subscription | None) -> SubscriptionConfirmed:
        request = sub.pending_request(utcnow()) if sub is not None else None
        if (
            sub is None
            or request is None
            or sub.channel != "email"
            or not subs.secret_matches(sid, token, request.confirm_hash)
        ):
            raise NotFound(INVALID_LINK, code="invalid_token")
        return _confirmed(st, sub, "email_link", network, request.event, request.components, None)

    await subs.change(st.redis, st.writeside, st.settings.partitions, sid, decide)
    st.metrics.ingested.labels("SubscriptionConfirmed").inc()
    sub = await subs.load(st.redis, sid, st.settings.partitions)
    assert sub is not None
    return sub


async def subscription_ids(st: ApiState, channel: str, address: str) -> list[str]:
    """Every subscription of an address, whatever the account (one lookup per partition)."""
    low, high = subscription_index_range(channel, address)
    async with st.redis.pipeline(transaction=False) as pipe:
        for p in range(st.settings.partitions):
            pipe.zrangebylex(keys.subscription_index(p), low, high)
        pages: list[Any] = await pipe.execute()
    return sorted({subscription_index_id(e) for page in pages for e in page})


async def confirm_code(st: ApiState, phone: str, code: str, network: str) -> None:
    """POST /v1/subscriptions/confirm {phone, code}: the SMS request it names is active."""
    validation.phone(phone)
    wrong = _Limit(
        "code",
        phone,
        WRONG_CODES_PER_HOUR,
        HOUR_S,
        "too_many_requests",
        "wrong codes for this phone",
    )
    await _check(st, [wrong])
    now = utcnow()
    for sid in await subscription_ids(st, "sms", phone):
        sub = await subs.load(st.redis, sid, st.settings.partitions)
        request = sub.pending_request(now) if sub is not None else None
        if sub is None or request is None:
            continue
        if not subs.secret_matches(sid, code.strip(), request.confirm_hash):
            continue

        def decide(
            current: Subscription | None, event_id: str = request.event
        ) -> SubscriptionConfirmed | None:
            pending = current.pending_request(utcnow()) if current is not None else None
            if current is None or pending is None or pending.event != event_id:
                return None
            return _confirmed(
                st, current, "sms_code", network, pending.event, pending.components, None
            )

        if await subs.change(st.redis, st.writeside, st.settings.partitions, sid, decide):
            st.metrics.ingested.labels("SubscriptionConfirmed").inc()
            return
    await _count(st, [wrong])
    raise Invalid(
        "wrong or expired code; ask for a new one by subscribing again",
        code="wrong_code",
        field="code",
    )


# --- ending ---------------------------------------------------------------------------------
async def unsubscribe(st: ApiState, sid: str, token: str, how: str, network: str) -> Subscription:
    """An unsubscribe link's POST (the page's button, or a mail program's one-click)."""
    q = subs.partition(sid, st.settings.partitions)
    held = await st.redis.get(keys.unsubscribe_token(q, subs.token_hash(token)))
    owner, _, generation = text(held).partition("|") if held is not None else ("", "", "")
    if owner != sid:
        raise NotFound(INVALID_LINK, code="invalid_token")

    def decide(sub: Subscription | None) -> SubscriptionEnded:
        if sub is None or sub.state != "active" or str(sub.generation) != generation:
            raise NotFound(INVALID_LINK, code="invalid_token")
        return _ended(st, sub, how, network, "anonymous")

    await subs.change(st.redis, st.writeside, st.settings.partitions, sid, decide)
    st.metrics.ingested.labels("SubscriptionEnded").inc()
    sub = await subs.load(st.redis, sid, st.settings.partitions)
    assert sub is not None
    return sub


def _ended(
    st: ApiState, sub: Subscription, how: str, network: str, actor: str
) -> SubscriptionEnded:
    return SubscriptionEnded(
        id=st.ids.next(),
        actor=actor,
        at=utcnow(),
        subscription=sub.id,
        account=sub.account,
        channel=sub.channel,
        how=how,
        network=network,
    )


async def remove(st: ApiState, actor: str, handle: str, sid: str) -> None:
    """A poster or admin removes a subscriber of `handle` (404 if it has none by that id)."""

    def decide(sub: Subscription | None) -> SubscriptionEnded | None:
        if sub is None or sub.account != handle:
            raise NotFound(f"@{handle} has no subscription {sid}", code="no_such_subscription")
        if sub.state == "ended" and sub.request is None:
            return None  # already ended: nothing to do
        return _ended(st, sub, "removed", "", actor)

    if await subs.change(st.redis, st.writeside, st.settings.partitions, sid, decide):
        st.metrics.ingested.labels("SubscriptionEnded").inc()


async def stop_sms(st: ApiState, phone: str) -> int:
    """STOP texted back: every SMS subscription of the phone ends (and its requests with
    it); how many changed."""
    changed = 0
    for sid in await subscription_ids(st, "sms", phone):

        def decide(sub: Subscription | None) -> SubscriptionEnded | None:
            if sub is None or (sub.state != "active" and sub.request is None):
                return None
            return _ended(st, sub, "sms_stop", "", "anonymous")

        if await subs.change(st.redis, st.writeside, st.settings.partitions, sid, decide):
            changed += 1
    return changed


async def start_sms(st: ApiState, phone: str) -> int:
    """START texted back: the SMS subscriptions a STOP ended are active again."""
    changed = 0
    for sid in await subscription_ids(st, "sms", phone):

        def decide(sub: Subscription | None) -> SubscriptionConfirmed | None:
            if sub is None or sub.state != "ended" or sub.ended_how != "sms_stop":
                return None
            if sub.confirmed_at is None:
                return None  # ended before it was ever confirmed: nothing to resume
            return _confirmed(st, sub, "sms_start", "", None, sub.components, None)

        if await subs.change(st.redis, st.writeside, st.settings.partitions, sid, decide):
            changed += 1
    return changed


# --- listing --------------------------------------------------------------------------------
async def of_account(st: ApiState, handle: str) -> list[Subscription]:
    """Every subscription to `handle`, whatever its state, oldest request first."""
    async with st.redis.pipeline(transaction=False) as pipe:
        for p in range(st.settings.partitions):
            pipe.zrange(keys.account_subscriptions(p, handle), 0, -1)
        pages: list[Any] = await pipe.execute()
    ids = [i.decode() for page in pages for i in page]
    found = []
    for sid in ids:
        sub = await subs.load(st.redis, sid, st.settings.partitions)
        if sub is not None:
            found.append(sub)
    return sorted(found, key=lambda sub: (sub.requested_at, sub.id))
