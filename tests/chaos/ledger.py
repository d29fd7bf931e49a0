"""The people of a chaos run (`Cast`) and the ledger of what the API acknowledged (`Ledger`).

The ledger keeps every acknowledged write (a 2xx) with when it was first sent and when it was
answered, every final refusal, and answers that make no sense. Texts start with a marker
(`marker`): `pub-000042-abcde` (public post), `int-…` (internal post), `dm-…` (DM), which the
checks look for at the receivers, in public reads and in the logs.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass, field

OFFAPP = ("email", "sms", "webhook")
TEAMS = ("ops", "infra")
SERVICE = "svc"


# --- the cast -----------------------------------------------------------------------------------
@dataclass
class Account:
    handle: str
    kind: str  # person | team | service
    role: str | None = None  # member | admin | external (people only)
    token: str | None = None
    email: str | None = None
    phone: str | None = None
    webhook: bool = False
    dm_channels: tuple[str, ...] = ("app", "email")
    poster_of: tuple[str, ...] = ()

    @property
    def person(self) -> bool:
        return self.kind == "person"

    @property
    def employee(self) -> bool:
        return self.role in ("member", "admin")

    def reachable(self, channel: str) -> bool:
        if channel == "email":
            return self.email is not None
        if channel == "sms":
            return self.phone is not None
        return self.webhook


@dataclass
class Cast:
    accounts: dict[str, Account] = field(default_factory=dict)

    def __getitem__(self, handle: str) -> Account:
        return self.accounts[handle]

    @property
    def people(self) -> list[Account]:
        return [a for a in self.accounts.values() if a.person]

    @property
    def employees(self) -> list[Account]:
        return [a for a in self.people if a.employee]

    def by_address(self) -> dict[tuple[str, str], str]:
        """(channel, address at the receiver) → handle."""
        found: dict[tuple[str, str], str] = {}
        for a in self.people:
            if a.email:
                found[("email", a.email)] = a.handle
            if a.phone:
                found[("sms", a.phone)] = a.handle
            if a.webhook:
                found[("webhook", a.handle)] = a.handle
        return found


# --- the ledger ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PostRecord:
    id: str
    caller: str
    as_account: str
    text: str
    marker: str
    visibility: str
    severity: str
    in_reply_to: str | None
    sent: float
    acked: float
    key: str

    @property
    def author(self) -> str:
        return self.caller


@dataclass(frozen=True, slots=True)
class DmRecord:
    id: str
    sender: str
    recipient: str
    text: str
    marker: str
    sent: float
    acked: float
    key: str


@dataclass(frozen=True, slots=True)
class Change:
    """One acknowledged (or finally refused) change of a follow pair."""

    kind: str  # follow | unfollow | enrol
    channels: tuple[str, ...]  # follow: as answered; enrol: the enrolment's
    mandatory: bool
    sent: float
    answered: float
    status: int
    setup: bool  # made before the faults began


@dataclass
class Ledger:
    posts: dict[str, PostRecord] = field(default_factory=dict)
    dms: dict[str, DmRecord] = field(default_factory=dict)
    changes: dict[tuple[str, str], list[Change]] = field(default_factory=dict)
    attempted: Counter[str] = field(default_factory=Counter)
    acknowledged: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # "op status code"
    unexpected: list[str] = field(default_factory=list)  # answers that make no sense
    numbers: int = 0

    def next_number(self) -> int:
        self.numbers += 1
        return self.numbers

    def change(self, follower: str, account: str, change: Change) -> None:
        self.changes.setdefault((follower, account), []).append(change)


def marker(tag: str, number: int, rng: random.Random) -> str:
    return f"{tag}-{number:06d}-{''.join(rng.choices(string.ascii_lowercase, k=5))}"
