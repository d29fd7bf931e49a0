"""Appending to the event log: which partition an event goes to, and the XADD that puts it there.

Only the api (and operator tools re-appending history) write the log; workers read it
through the consumer loop. An account's events always land in its partition, in order.

`appended`, when a caller sets it (the api's replica wait, per request), collects the
partitions this task appended to: in a cluster each partition's stream lives on its own
master, and WAIT must be asked of the masters that took the events.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from muster import events, keys
from muster.events import Event


def partition_for(event: Event, partitions: int) -> int:
    return keys.partition_of(events.partition_handle(event), partitions)


def stream_for(event: Event, partitions: int) -> str:
    return keys.events(partition_for(event, partitions))


appended: ContextVar[set[int] | None] = ContextVar("muster_appended", default=None)
"""Partitions appended to in this context, when someone collects them (None: nobody does)."""


def noting(partition: int) -> int:
    """Note an append to `partition` (every XADD to the log goes through here); returns it."""
    collected = appended.get()
    if collected is not None:
        collected.add(partition)
    return partition


def append(pipe: Any, event: Event, partitions: int) -> None:
    """Queue the XADD of `event` on a pipeline or MULTI (so it commits with the state it checked)."""
    stream = keys.events(noting(partition_for(event, partitions)))
    pipe.xadd(stream, {events.STREAM_FIELD: events.encode(event)})
