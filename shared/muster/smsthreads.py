"""Which post a text back from a phone replies to: the post that phone was last sent by SMS.

An SMS carries no reply address the way an email does (a text back comes from the phone to
Muster's number, nothing else), so the delivery worker remembers, per phone, the last post it
sent there and to whom (keys.sms_thread, written in the batch's status pipeline once the
provider took the message; records.SmsThread). The last one sent is the newest the person
received: a text back is read against what their phone shows last. It is not write-side
state and not an event: a capability of the message, like the answer links and SMS codes;
losing it (a rebuild, its TTL) only sends a later text back the help text.
No I/O but the reads and queued writes here.
"""

from __future__ import annotations

import hashlib
from typing import Any

from muster import keys
from muster.records import SmsThread, encode_sms_thread, sms_thread_of


def thread_key(phone: str, partitions: int) -> str:
    digest = hashlib.sha256(phone.encode()).hexdigest()
    return keys.sms_thread(keys.partition_of(digest, partitions), digest)


def queue_sent(
    pipe: Any, phone: str, recipient: str, post: str, sent_ms: int, partitions: int
) -> None:
    """Queue on `pipe` that `post` was just sent to `recipient` on `phone`."""
    record = SmsThread(recipient=recipient, post=post, sent_ms=sent_ms)
    pipe.set(thread_key(phone, partitions), encode_sms_thread(record), ex=keys.SMS_THREAD_TTL_S)


async def last_sent(redis: Any, phone: str, partitions: int) -> SmsThread | None:
    raw: Any = await redis.get(thread_key(phone, partitions))
    return None if raw is None else sms_thread_of(raw)
