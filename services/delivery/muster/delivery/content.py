"""What a delivery carries and to whom: the post or DM as the api serves it, and the recipient.

A recipient named `sub-<id>` is a subscriber without an account (muster.subscriptions): its
address and state come from its subscription record, read at send time like an account's
contact point. A `confirm` delivery carries no post: it asks a new subscriber to confirm
(the subscription's pending request, and the secret the request carries).

Content is read from the timeline worker's store (keys.post / keys.message, by id), the
recipient's contact point from their write-side account hash (keys.account) at send time,
so a changed address is used from the next send on. One batch reads all of it in one
pipeline. A post's rendering (subject, bodies, SMS text, webhook body) is the same for all
its recipients and is kept in a small in-process cache: a post to 10,000 followers is
rendered once, not 10,000 times.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis

from muster import keys, views
from muster.records import (
    DeliveryRequest,
    Subscription,
    subscription_of,
    subscription_of_recipient,
)

ACCOUNT_FIELDS = ("kind", "role", "email", "phone", "webhook_url", "webhook_secret")


@dataclass(frozen=True, slots=True)
class Content:
    """A post (kind "post") or a DM (kind "dm"): its API JSON and decoded view."""

    kind: str
    id: str
    raw: bytes
    post: views.Post | None = None
    message: views.Message | None = None

    @property
    def internal(self) -> bool:
        return self.post is not None and self.post.visibility != "public"

    @property
    def private(self) -> bool:
        """Never to be logged: a DM, or an internal post (docs/architecture.md, guarantee 7)."""
        return self.kind == "dm" or self.internal


@dataclass(frozen=True, slots=True)
class Recipient:
    handle: str
    kind: str | None
    role: str | None
    email: str | None
    phone: str | None
    webhook_url: str | None
    webhook_secret: str | None
    subscription: Subscription | None = None
    """Set for a subscriber (`sub-<id>`): its record as it is now."""

    @property
    def is_employee(self) -> bool:
        return self.kind == "person" and self.role in {"member", "admin"}

    def contact(self, channel: str) -> str | None:
        sub = self.subscription
        if sub is not None:
            return sub.address if channel == sub.channel else None
        if channel == "email":
            return self.email
        if channel == "sms":
            return self.phone
        if channel == "webhook":
            return self.webhook_url if self.webhook_secret else None
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_content(kind: str, content_id: str, raw: bytes) -> Content:
    if kind == "dm":
        return Content("dm", content_id, raw, message=views.decode_message(raw))
    return Content("post", content_id, raw, post=views.decode_post(raw))


async def load(
    redis: aioredis.Redis, requests: Iterable[DeliveryRequest], partitions: int
) -> tuple[dict[str, Content], dict[str, Recipient]]:
    """Contents by message id and recipients by handle, for a batch, in one round trip."""
    contents: dict[str, str] = {}
    handles: set[str] = set()
    for request in requests:
        contents[request.message_id] = request.kind
        handles.add(request.recipient)
    content_ids = list(contents)
    recipients = sorted(handles)
    async with redis.pipeline(transaction=False) as pipe:
        for content_id in content_ids:
            p = keys.partition_of_id(content_id, partitions)
            if contents[content_id] == "dm":
                pipe.get(keys.message(p, content_id))
            else:  # a confirmation's id is its request's event: no post, None comes back
                pipe.get(keys.post(p, content_id))
        for handle in recipients:
            q = keys.partition_of(handle, partitions)
            subscription = subscription_of_recipient(handle)
            if subscription is not None:
                pipe.hgetall(keys.subscription(q, subscription))
            else:
                pipe.hmget(keys.account(q, handle), ACCOUNT_FIELDS)
        replies: list[Any] = await pipe.execute()
    found: dict[str, Content] = {}
    for content_id, raw in zip(content_ids, replies[: len(content_ids)], strict=True):
        if contents[content_id] == "confirm":
            found[content_id] = Content("confirm", content_id, b"")
        elif raw is not None:
            found[content_id] = decode_content(contents[content_id], content_id, raw)
    people: dict[str, Recipient] = {}
    for handle, values in zip(recipients, replies[len(content_ids) :], strict=True):
        if subscription_of_recipient(handle) is not None:
            people[handle] = subscriber(handle, values)
            continue
        kind, role, email, phone, url, secret = (_text(v) for v in values)
        people[handle] = Recipient(handle, kind, role, email, phone, url, secret)
    return found, people


def subscriber(handle: str, raw: Any) -> Recipient:
    """A `sub-<id>` recipient from its subscription's hash (kind None: there is none)."""
    sub = subscription_of(raw)
    if sub is None:
        return Recipient(handle, None, None, None, None, None, None)
    return Recipient(
        handle,
        "subscriber",
        None,
        sub.address if sub.channel == "email" else None,
        sub.address if sub.channel == "sms" else None,
        sub.address if sub.channel == "webhook" else None,
        sub.webhook_secret,
        subscription=sub,
    )


K = TypeVar("K")
V = TypeVar("V")


class Rendered(Generic[K, V]):
    """A bounded LRU of renderings: `get(key, make)` renders once per key while it is hot."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, make: Callable[[], V]) -> V:
        items = self._items
        if key in items:
            items.move_to_end(key)
            return items[key]
        value = items[key] = make()
        if len(items) > self.size:
            items.popitem(last=False)
        return value


def link(public_url: str, content: Content) -> str:
    """Where the recipient reads it in Muster (the API's resource for it); a subscriber is
    sent to the account's status page, which needs no sign-in."""
    base = public_url.rstrip("/")
    if content.message is not None:
        return f"{base}/v1/dms/{content.message.from_}"
    return f"{base}/v1/posts/{content.id}"


def status_link(public_url: str, content: Content) -> str:
    """A public post on its account's status page (what a subscriber can open)."""
    base = public_url.rstrip("/")
    assert content.post is not None
    return f"{base}/@{content.post.as_account}/posts/{content.id}"


def unsubscribe_link(public_url: str, subscription: str, token: str) -> str:
    """The page (GET) and RFC 8058 one-click target (POST) that ends a subscription."""
    return f"{public_url.rstrip('/')}/unsubscribe/{subscription}.{token}"


def confirm_link(public_url: str, subscription: str, token: str) -> str:
    """The page whose button confirms an email subscription (a GET changes nothing)."""
    return f"{public_url.rstrip('/')}/subscriptions/confirm/{subscription}.{token}"


def answer_link(public_url: str, link: str) -> str:
    """The roll-call answer page a link id opens (GET shows it; only its buttons answer)."""
    return f"{public_url.rstrip('/')}/r/{link}"


def respond_url(public_url: str, link: str) -> str:
    """Where a webhook recipient POSTs its answer to the roll-call it was sent."""
    return f"{public_url.rstrip('/')}/v1/rollcalls/callback/{link}"


@dataclass(frozen=True, slots=True)
class Answering:
    """How one recipient answers the roll-call a message carries: the link of its channel
    (a URL: the answer page, or for a webhook its callback) and, for an SMS, the first of
    its reply codes (one per option, in order)."""

    url: str
    first_code: int = 0
