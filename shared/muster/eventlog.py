"""Appending to the event log: which partition an event goes to, and the XADD that puts it there.

Only the api (and operator tools re-appending history) write the log; workers read it
through the consumer loop. An account's events always land in its partition, in order.
"""

from __future__ import annotations

from typing import Any

from muster import events, keys
from muster.events import Event


def partition_for(event: Event, partitions: int) -> int:
    return keys.partition_of(events.partition_handle(event), partitions)


def stream_for(event: Event, partitions: int) -> str:
    return keys.events(partition_for(event, partitions))


def append(pipe: Any, event: Event, partitions: int) -> None:
    """Queue the XADD of `event` on a pipeline or MULTI (so it commits with the state it checked)."""
    pipe.xadd(stream_for(event, partitions), {events.STREAM_FIELD: events.encode(event)})
