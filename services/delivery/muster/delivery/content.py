"""What a delivery carries and to whom: the post or DM as the api serves it, and the recipient.

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
from muster.records import DeliveryRequest

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
        return self.post is not None and self.post.visibility == "internal"

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

    @property
    def is_employee(self) -> bool:
        return self.kind == "person" and self.role in {"member", "admin"}

    def contact(self, channel: str) -> str | None:
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
            else:
                pipe.get(keys.post(p, content_id))
        for handle in recipients:
            pipe.hmget(keys.account(keys.partition_of(handle, partitions), handle), ACCOUNT_FIELDS)
        replies: list[Any] = await pipe.execute()
    found: dict[str, Content] = {}
    for content_id, raw in zip(content_ids, replies[: len(content_ids)], strict=True):
        if raw is not None:
            found[content_id] = decode_content(contents[content_id], content_id, raw)
    people: dict[str, Recipient] = {}
    for handle, values in zip(recipients, replies[len(content_ids) :], strict=True):
        kind, role, email, phone, url, secret = (_text(v) for v in values)
        people[handle] = Recipient(handle, kind, role, email, phone, url, secret)
    return found, people


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
    """Where the recipient reads it in Muster (the API's resource for it)."""
    base = public_url.rstrip("/")
    if content.message is not None:
        return f"{base}/v1/dms/{content.message.from_}"
    return f"{base}/v1/posts/{content.id}"
