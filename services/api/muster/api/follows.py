"""A follower's own follow records (keys.follows): followed handle → "channels|mandatory".

The record is a short string rather than JSON so the enrolment script can merge it in Lua.
"""

from __future__ import annotations

from dataclasses import dataclass

from muster.keys import CHANNELS


@dataclass(frozen=True, slots=True)
class Follow:
    account: str
    channels: tuple[str, ...]
    mandatory: bool

    def encode(self) -> str:
        return f"{','.join(self.channels)}|{int(self.mandatory)}"


def decode(account: str, raw: bytes | str) -> Follow:
    text = raw.decode() if isinstance(raw, bytes) else raw
    channels, _, mandatory = text.partition("|")
    return Follow(account, tuple(c for c in channels.split(",") if c), mandatory == "1")


def union(a: tuple[str, ...] | list[str], b: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Both channel lists, in CHANNELS order."""
    chosen = set(a) | set(b)
    return tuple(c for c in CHANNELS if c in chosen)
