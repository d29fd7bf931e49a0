"""Refused roll-call answers that came by a channel, recorded as RollCallAnswerRejected.

An answer refused in the app is a 4xx to the person who sent it and nothing more. An answer
refused when it came by SMS, an answer link, a webhook callback or email is different: the
person is not looking at an error, and whoever runs the roll-call may later need to know that
"I texted 1" arrived after the close. So those refusals are events (in the audit archive and
in replay, where they change nothing).

Bounded, because the log is for good and senders are not all friendly: only requests that
proved where they came from get here (a Twilio signature, a page token of the link, a
webhook signature, a reply from the person's own address), and at most
REJECTIONS_PER_SUBJECT_PER_HOUR per phone, link or person and
REJECTIONS_PER_CHANNEL_PER_HOUR per channel are recorded; past that the sender still gets
its answer, and nothing is appended. This module never raises an API error of its own.
"""

from __future__ import annotations

import hashlib
import time

from muster import eventlog, keys
from muster.api.state import ApiState
from muster.events import RollCallAnswerRejected, utcnow

REJECTIONS_PER_SUBJECT_PER_HOUR = 10
"""Recorded per phone, link or person an hour: a person retrying a closed roll-call a few
times shows; a phone texting junk in a loop does not fill the log."""
REJECTIONS_PER_CHANNEL_PER_HOUR = 1000
"""Recorded per channel an hour, whatever the number of phones or links sending."""


def subject_hash(*parts: str) -> str:
    """What a rejection is counted (and, for a link, referred to) by: never the phone number
    or link itself."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


async def _within_limits(st: ApiState, channel: str, subject: str) -> bool:
    window = int(time.time() // 3600)
    mine = keys.rate("rejected", f"{channel}:{subject}", window)
    everyone = keys.rate("rejected", channel, window)
    async with st.redis.pipeline(transaction=False) as pipe:
        pipe.incr(mine)
        pipe.expire(mine, 3600)
        pipe.incr(everyone)
        pipe.expire(everyone, 3600)
        counts = await pipe.execute()
    return (
        int(counts[0]) <= REJECTIONS_PER_SUBJECT_PER_HOUR
        and int(counts[2]) <= REJECTIONS_PER_CHANNEL_PER_HOUR
    )


async def record(
    st: ApiState,
    *,
    channel: str,
    reason: str,
    subject: str,
    rollcall: str | None = None,
    recipient: str | None = None,
    source_ref: str = "",
    actor: str | None = None,
) -> bool:
    """Append one RollCallAnswerRejected unless `subject` (a hash: subject_hash) or the
    channel is past its limit; True if appended. Write-side state is untouched: a refusal
    changes nothing but the log."""
    if not await _within_limits(st, channel, subject):
        return False
    event = RollCallAnswerRejected(
        id=st.ids.next(),
        actor=actor or recipient or f"{channel}-in",
        at=utcnow(),
        channel=channel,
        reason=reason,
        rollcall=rollcall,
        recipient=recipient,
        source_ref=source_ref[:256],
    )
    async with st.redis.pipeline(transaction=True) as pipe:
        eventlog.append(pipe, event, st.settings.partitions)
        await pipe.execute()
    st.metrics.ingested.labels("RollCallAnswerRejected").inc()
    return True
