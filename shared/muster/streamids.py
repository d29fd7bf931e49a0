"""Redis stream entry ids ("<ms>-<seq>") as comparable values: for trimming bounds and restore."""

from __future__ import annotations

from typing import TypeAlias

StreamId: TypeAlias = tuple[int, int]

ZERO: StreamId = (0, 0)
MAX: StreamId = ((1 << 64) - 1, (1 << 64) - 1)


def parse(raw: str | bytes) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


def after(value: StreamId) -> StreamId:
    """The smallest id greater than `value`."""
    ms, seq = value
    if seq == MAX[1]:
        return ms + 1, 0
    return ms, seq + 1
