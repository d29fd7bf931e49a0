"""Time-ordered 64-bit ids (snowflake style), written as decimal strings.

    id = unix_ms << 16 | node << 6 | sequence

`node` (10 bits) is handed out by Redis once per process (keys.NODE_COUNTER), so two live
processes collide only if 1,024 others started in between; `sequence` (6 bits) counts ids
within one millisecond, and a process that asks for more than 64 in one millisecond waits
for the next one. Ids sort by time, so timelines and pagination need no extra lookups.
"""

from __future__ import annotations

import threading
import time

NODE_BITS = 10
SEQUENCE_BITS = 6
_MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1


class IdGenerator:
    def __init__(self, node: int) -> None:
        self._node = node % (1 << NODE_BITS)
        self.node = node
        self._lock = threading.Lock()
        self._last_ms = 0
        self._sequence = 0

    def next_int(self) -> int:
        with self._lock:
            now = time.time_ns() // 1_000_000
            if now < self._last_ms:  # the clock stepped back: keep counting from where we were
                now = self._last_ms
            if now == self._last_ms:
                if self._sequence == _MAX_SEQUENCE:
                    while now <= self._last_ms:
                        time.sleep(0.0001)
                        now = time.time_ns() // 1_000_000
                    self._sequence = 0
                else:
                    self._sequence += 1
            else:
                self._sequence = 0
            self._last_ms = now
            return (now << 16) | (self._node << SEQUENCE_BITS) | self._sequence

    def next(self) -> str:
        return str(self.next_int())


def id_time_ms(snowflake: str | int) -> int:
    """Milliseconds since the epoch at which `snowflake` was made."""
    return int(snowflake) >> 16


def lowest_id_at(ms: int) -> int:
    """The smallest id made at or after `ms`, for time-range queries."""
    return ms << 16


def is_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and 0 < len(value) <= 19
