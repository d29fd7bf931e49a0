"""The write side's stored records, each with its one codec: an account's hash
(keys.account) and a follow record (keys.follows).

The api reads these to authorise and validate writes; they change only by applying an event
(writeside.py), so the api's append and replay write the very same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Account:
    handle: str
    id: str
    kind: str
    role: str | None = None
    display_name: str = ""
    email: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    token_hash: str | None = None
    dm_channels: str = "app,email"  # csv, CHANNELS order
    created_at: str = ""
    rev: int = 0

    @property
    def is_admin(self) -> bool:
        return self.kind == "person" and self.role == "admin"

    @property
    def is_employee(self) -> bool:
        """Members and admins: the people who may see internal posts."""
        return self.kind == "person" and self.role in {"member", "admin"}

    def to_hash(self) -> dict[str, str]:
        """Field → value for HSET; None values are left out (and HDELed by the writer)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = str(value)
        return out


def account_of(raw: dict[Any, Any]) -> Account | None:
    """An account's hash as HGETALL returns it (bytes) → Account; None when empty."""
    if not raw:
        return None
    values = {k.decode(): v.decode() for k, v in raw.items()}
    return Account(
        handle=values["handle"],
        id=values["id"],
        kind=values["kind"],
        role=values.get("role"),
        display_name=values.get("display_name", ""),
        email=values.get("email"),
        phone=values.get("phone"),
        webhook_url=values.get("webhook_url"),
        webhook_secret=values.get("webhook_secret"),
        token_hash=values.get("token_hash"),
        dm_channels=values.get("dm_channels", "app,email"),
        created_at=values.get("created_at", ""),
        rev=int(values.get("rev", "0")),
    )


@dataclass(frozen=True, slots=True)
class Follow:
    """A follower's follow of `account`: stored as "channels csv|mandatory (1/0)", a short
    string the enrolment script (lua/enrol.lua) reads and writes too."""

    account: str
    channels: tuple[str, ...]
    mandatory: bool

    def encode(self) -> str:
        return f"{','.join(self.channels)}|{int(self.mandatory)}"


def follow_of(account: str, raw: bytes | str) -> Follow:
    text = raw.decode() if isinstance(raw, bytes) else raw
    channels, _, mandatory = text.partition("|")
    return Follow(account, tuple(c for c in channels.split(",") if c), mandatory == "1")


@dataclass(frozen=True, slots=True)
class Rule:
    """An `all_members` enrolment rule (keys.enrolment_rules: followed handle → "channels
    csv|mandatory|enrolment id"): every member, now and future, follows `account`.
    `enrolment` is the MembersEnrolled id, so the member's enrolment, whichever path makes it
    (the expansion, or the member's creation), is made once (keys.enrolment_done)."""

    account: str
    channels: tuple[str, ...]
    mandatory: bool
    enrolment: str | None

    def encode(self) -> str:
        return f"{','.join(self.channels)}|{int(self.mandatory)}|{self.enrolment or ''}"


def rule_of(account: str, raw: bytes | str) -> Rule:
    """Rules stored before they named their enrolment ("channels|mandatory") read as None."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    channels, _, rest = text.partition("|")
    mandatory, _, enrolment = rest.partition("|")
    return Rule(
        account, tuple(c for c in channels.split(",") if c), mandatory == "1", enrolment or None
    )
