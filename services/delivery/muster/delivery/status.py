"""Recording delivery statuses: one field per (message, recipient, channel), every attempt.

keys.delivery_status(q, message_id) holds "recipient:channel" → records.Status for
recipients living in partition q; routing creates each field ("pending|0|") with the
request, the delivery worker moves it on here, and GET /v1/posts/{id}/deliveries reads it.
keys.DELIVERY_TOTALS counts outcomes per channel for /metrics ("channel:sent", ...).

A batch's writes go to Redis in one pipeline (`Recorder`), after its sends and before its ack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from muster import keys, smsthreads
from muster.records import Status, status_field

MAX_ERROR_CHARS = 500


def clip(error: str) -> str:
    """One line, bounded: it is shown to people and kept for 90 days."""
    return " ".join(error.split())[:MAX_ERROR_CHARS]


@dataclass
class Recorder:
    """Collects a batch's status writes, retries and counters; `flush` sends them at once."""

    statuses: dict[str, dict[str, str]] = field(default_factory=dict)
    retries: dict[str, dict[bytes, float]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    disabled: dict[str, set[str]] = field(default_factory=dict)
    texted: list[tuple[str, str, str, int]] = field(default_factory=list)

    def status(self, q: int, message_id: str, recipient: str, channel: str, status: Status) -> None:
        key = keys.delivery_status(q, message_id)
        self.statuses.setdefault(key, {})[status_field(recipient, channel)] = status.encode()

    def count(self, channel: str, outcome: str) -> None:
        label = f"{channel}:{outcome}"
        self.totals[label] = self.totals.get(label, 0) + 1

    def retry(self, q: int, channel: str, payload: bytes, due_ms: float) -> None:
        self.retries.setdefault(keys.delivery_retries(q, channel), {})[payload] = due_ms

    def disable_webhook(self, q: int, recipient: str) -> None:
        self.disabled.setdefault(keys.webhooks_disabled(q), set()).add(recipient)

    def sent_post_by_sms(self, phone: str, recipient: str, post: str, sent_ms: int) -> None:
        """`post` went to `recipient`'s phone: a text back replies to it (muster.smsthreads)."""
        self.texted.append((phone, recipient, post, sent_ms))

    def __bool__(self) -> bool:
        return bool(self.statuses or self.retries or self.totals or self.disabled or self.texted)

    async def flush(self, redis: Any, partitions: int) -> None:
        """One round trip. Retries are added before the ack that drops their entry, so a
        crash in between leaves the entry to be handled again, which sees the status and
        does not send (or schedule) twice."""
        if not self:
            return
        async with redis.pipeline(transaction=False) as pipe:
            for key, fields in self.statuses.items():
                pipe.hset(key, mapping=fields)
                pipe.expire(key, keys.DELIVERY_STATUS_TTL_S)
            for key, members in self.retries.items():
                pipe.zadd(key, members)
            for key, handles in self.disabled.items():
                pipe.sadd(key, *handles)
            for label, n in self.totals.items():
                pipe.hincrby(keys.DELIVERY_TOTALS, label, n)
            for phone, recipient, post, sent_ms in self.texted:  # in send order: the last wins
                smsthreads.queue_sent(pipe, phone, recipient, post, sent_ms, partitions)
            await pipe.execute()
