"""Dead letters: list them and re-drive them (`muster dlq list|redrive`).

The consumer loop writes a partition's dead letters to keys.dead_letters(p). Re-driving
appends the original payload to keys.retry(p, group), which only the group that gave up
reads, so other groups never see the event twice; handlers are idempotent anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from muster import keys


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    dead_id: str  # id in the dead-letter stream
    stream: str  # where it came from
    group: str
    entry: str  # its id there
    error: str
    attempts: int
    payload: bytes | None

    @property
    def ref(self) -> str:
        """`PARTITION:ID`: what names one dead letter (an id can repeat across partitions)."""
        return f"{self.partition}:{self.dead_id}"


def _decode(partition: int, dead_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    def text(name: str) -> str:
        return fields.get(name.encode(), b"").decode()

    return DeadLetter(
        partition=partition,
        dead_id=dead_id.decode(),
        stream=text("stream"),
        group=text("group"),
        entry=text("entry"),
        error=text("error"),
        attempts=int(text("attempts") or 0),
        payload=fields.get(b"e"),
    )


def _entries(client: redis.Redis, stream: str, limit: int | None) -> list[Any]:
    return list(client.xrange(stream, count=limit) or [])


def list_dead_letters(
    client: redis.Redis, partitions: int, *, limit: int = 100
) -> list[DeadLetter]:
    found: list[DeadLetter] = []
    for partition in range(partitions):
        for dead_id, fields in _entries(client, keys.dead_letters(partition), limit):
            found.append(_decode(partition, dead_id, fields))
    return found[:limit]


def redrive(client: redis.Redis, partitions: int, refs: set[str] | None = None) -> int:
    """Send dead letters (all, or those named by `ref`) back to the group that gave up; how many."""
    moved = 0
    for partition in range(partitions):
        stream = keys.dead_letters(partition)
        for dead_id, fields in _entries(client, stream, None):
            letter = _decode(partition, dead_id, fields)
            if refs is not None and letter.ref not in refs:
                continue
            if letter.payload is None:
                continue  # nothing to re-drive; it stays listed for a person to read
            with client.pipeline(transaction=True) as pipe:
                pipe.xadd(keys.retry(partition, letter.group), {"e": letter.payload})
                pipe.xdel(stream, letter.dead_id)
                pipe.execute()
            moved += 1
    return moved
