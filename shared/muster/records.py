"""Every value Muster keeps in Redis that is not an event or a post/DM view, each with its
one codec, here: an account's hash (keys.account), a follow record (keys.follows), an
`all_members` rule (keys.enrolment_rules), a delivery request (keys.deliveries streams), a
delivery status (keys.delivery_status), a live-stream entry (keys.LIVE), a roll-call change
(keys.ROLLCALL_LIVE), an email index entry (keys.emails), a company sign-in under way
(keys.oidc_flow) and the directory's users, groups and index entries (keys.directory_*),
incidents, their updates and components (keys.incident*, keys.component*). Events have
theirs in events.py, posts and DMs as readers see them in views.py.

Lua that writes one of these (lua/enrol.lua: a follow record; lua/route_one.lua: a request
and a first status; lua/email_index.lua: the email entry it drops) writes the same bytes; tests decode what it writes with these codecs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from muster.errors import EventDecodeError
from muster.events import ComponentStatus, DirectoryEmail, EscalationPolicy


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
    active: bool = True
    manager: str | None = None
    """Who escalation steps `to: manager` tell about this person (ManagerChanged)."""

    @property
    def is_admin(self) -> bool:
        return self.kind == "person" and self.role == "admin"

    @property
    def is_employee(self) -> bool:
        """Members and admins: the people who may see internal posts."""
        return self.kind == "person" and self.role in {"member", "admin", "auditor"}

    @property
    def is_auditor(self) -> bool:
        """The one role that reads DMs' text in the audit log (each read is itself audited)."""
        return self.kind == "person" and self.role == "auditor"

    def to_hash(self) -> dict[str, str]:
        """Field → value for HSET; None values are left out (and HDELed by the writer)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                out[f.name] = "1" if value else "0"
            elif value is not None:
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
        active=values.get("active", "1") == "1",
        manager=values.get("manager"),
    )


class NamedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A named token of a person (keys.api_tokens: token id → this, msgpack): what they
    called it, its hash, when it was made and when it expires (None: when revoked)."""

    id: str
    name: str
    token_hash: str
    created_at: datetime
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


_named_token_encoder = msgspec.msgpack.Encoder()
_named_token_decoder = msgspec.msgpack.Decoder(NamedToken)


def encode_named_token(token: NamedToken) -> bytes:
    return _named_token_encoder.encode(token)


def named_token_of(raw: bytes | str) -> NamedToken:
    """From HGET/HGETALL (bytes: our clients never decode replies)."""
    assert isinstance(raw, bytes)
    return _named_token_decoder.decode(raw)


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


# --- directory sync (SCIM) ----------------------------------------------------------------------
class DirectoryUser(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A person the directory manages (keys.directory_users): the SCIM attributes it sent,
    as DirectoryUserChanged stated them, and when (`modified`, RFC 3339)."""

    user_name: str
    external_id: str | None = None
    display_name: str | None = None
    formatted: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    emails: tuple[DirectoryEmail, ...] = ()
    modified: str = ""


class DirectoryGroup(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A directory group mapped to a team (keys.directory_groups); its members are the set
    keys.directory_members."""

    display_name: str | None = None
    external_id: str | None = None
    modified: str = ""


_directory_encoder = msgspec.json.Encoder()
_directory_user_decoder = msgspec.json.Decoder(DirectoryUser)
_directory_group_decoder = msgspec.json.Decoder(DirectoryGroup)


def encode_directory(record: DirectoryUser | DirectoryGroup) -> bytes:
    return _directory_encoder.encode(record)


def directory_user_of(raw: bytes | str) -> DirectoryUser:
    return _directory_user_decoder.decode(raw)


def directory_group_of(raw: bytes | str) -> DirectoryGroup:
    return _directory_group_decoder.decode(raw)


DirectoryIndexKind = Literal["userName", "externalId", "email"]
_INDEX_SEP = "\x00"


def directory_index_entry(kind: DirectoryIndexKind, value: str, handle: str) -> str:
    """A keys.directory_index member: `kind NUL value NUL handle`, values compared as SCIM
    does for that attribute (userName and emails case-insensitively, externalId exactly)."""
    return f"{kind}{_INDEX_SEP}{directory_index_value(kind, value)}{_INDEX_SEP}{handle}"


def directory_index_range(kind: DirectoryIndexKind, value: str) -> tuple[str, str]:
    """The ZRANGEBYLEX bounds of every entry for (kind, value), whoever's handle."""
    prefix = f"{kind}{_INDEX_SEP}{directory_index_value(kind, value)}{_INDEX_SEP}"
    return f"[{prefix}", f"({prefix[:-1]}\x01"


def directory_index_handle(entry: bytes | str) -> str:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return text.rpartition(_INDEX_SEP)[2]


def directory_index_value(kind: DirectoryIndexKind, value: str) -> str:
    return value if kind == "externalId" else value.casefold()


# --- delivery: requests and statuses ----------------------------------------------------------
class DeliveryRequest(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="DeliveryRequested"
):
    """One off-app delivery: `message_id` (a post or DM) to `recipient` over `channel`, an
    entry of keys.deliveries(q, channel), written by routing (lua/route_one.lua), read by
    the delivery workers. Not an event: it is never in the event log. `id` is
    `{message_id}.{recipient}.{channel}` — stable for that triple, so it is the delivery's
    idempotency key and its Message-ID / webhook-id. `attempt` is how many sends were made
    before this request was issued (a request is done once the status records more);
    `schedule_from` is that count when the current retry schedule began (a re-drive starts
    a new schedule). Tagged as it always was, so requests already queued still decode."""

    id: str
    actor: str
    at: datetime
    v: int = 1
    message_id: str
    kind: str  # "post" | "dm"
    recipient: str
    channel: str
    attempt: int = 0
    schedule_from: int = 0
    secret: str | None = None
    """Kind `confirm` only: the confirmation token (email link) or code (SMS) the message
    carries. Only its hash is kept anywhere else; it lives in the delivery stream entry."""


_request_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(DeliveryRequest)


def encode_request(request: DeliveryRequest) -> bytes:
    return _request_encoder.encode(request)


def decode_request(payload: bytes | str) -> DeliveryRequest:
    """A delivery stream entry's payload; EventDecodeError (dead-lettered) if it is none."""
    try:
        return _request_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"not a delivery request: {exc}") from exc


State = Literal["pending", "sent", "logged", "failed"]
STATES: tuple[State, ...] = ("pending", "sent", "logged", "failed")
DONE_STATES: frozenset[State] = frozenset({"sent", "logged"})
"""A delivery in one of these is never tried again."""


@dataclass(frozen=True, slots=True)
class Status:
    """One delivery's status (keys.delivery_status field "recipient:channel"), stored as
    "state|attempts|last error": `pending` (requested, or waiting for a retry), `sent` (the
    provider accepted it), `logged` (NOT sent: no provider is configured, so it went to the
    development mailbox or the log; the error slot says where), `failed` (permanently, or
    retries exhausted); `attempts` counts sends actually tried. Routing writes the first one, "pending|0|", in Lua."""

    state: State
    attempts: int
    error: str = ""

    def encode(self) -> str:
        return f"{self.state}|{self.attempts}|{self.error}"


def status_of(raw: bytes | str | None) -> Status | None:
    """A stored status; None when there is none (or it is unreadable: treated as absent)."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    state, _, rest = text.partition("|")
    attempts, _, error = rest.partition("|")
    if state not in STATES or not attempts.isdigit():
        return None
    return Status(state, int(attempts), error)


def status_field(recipient: str, channel: str) -> str:
    return f"{recipient}:{channel}"


# --- subscriptions (people without an account) -------------------------------------------------
SUBSCRIBER_PREFIX = "sub-"
"""A subscriber as a delivery recipient: `sub-<id>`. `-` is in no handle, so it never names
an account, and it needs no escaping in JSON, a Message-ID local part or a webhook-id."""


def subscriber_recipient(subscription_id: str) -> str:
    return f"{SUBSCRIBER_PREFIX}{subscription_id}"


def subscription_of_recipient(recipient: str) -> str | None:
    """The subscription id of a recipient `sub-<id>`; None for an account's handle."""
    if recipient.startswith(SUBSCRIBER_PREFIX):
        return recipient[len(SUBSCRIBER_PREFIX) :]
    return None


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """A request waiting for its confirmation: the latest SubscriptionRequested's fields."""

    event: str
    components: tuple[str, ...]
    confirm_hash: str
    expires_at: datetime
    webhook_secret: str | None
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class Subscription:
    """keys.subscription, a hash: one (account, channel, address) and where it stands.

    `state`: `pending` (asked, never confirmed), `active`, `ended`. `components` and
    `webhook_secret` are those in force while active; `request` is the latest unconfirmed
    ask (a new one replaces it; its confirmation makes its components and secret those in
    force). `generation` counts the confirmations that made it active, so an unsubscribe
    link from before an ending cannot end the subscription that followed."""

    id: str
    account: str
    channel: str
    address: str
    state: str
    requested_at: datetime
    components: tuple[str, ...] = ()
    webhook_secret: str | None = None
    generation: int = 0
    confirmed_at: datetime | None = None
    ended_at: datetime | None = None
    ended_how: str | None = None
    request: SubscriptionRequest | None = None

    def pending_request(self, now: datetime) -> SubscriptionRequest | None:
        """The request a confirmation may still confirm (None: none, or it expired)."""
        if self.request is None or self.request.expires_at <= now:
            return None
        return self.request

    def shown_state(self, now: datetime) -> str:
        """What the posters' list says: active, pending, ended, or expired (asked, never
        confirmed in time)."""
        if self.state == "active":
            return "active"
        if self.pending_request(now) is not None:
            return "pending"
        return "ended" if self.state == "ended" else "expired"


REQUEST_FIELDS = ("req_event", "req_components", "req_hash", "req_expires", "req_secret", "req_at")
"""The hash fields of a subscription's pending request (dropped when it is confirmed or
the subscription ends)."""


def _csv(values: tuple[str, ...]) -> str:
    return "\n".join(values)  # component names hold no newline (api validation)


def _uncsv(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split("\n") if v)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def subscription_identity(
    subscription_id: str, account: str, channel: str, address: str, at: datetime
) -> dict[str, str]:
    """The fields a first request writes (HSETNX each: a later request keeps them)."""
    return {
        "id": subscription_id,
        "account": account,
        "channel": channel,
        "address": address,
        "state": "pending",
        "generation": "0",
        "requested_at": at.isoformat(),
    }


def request_hash(
    event: str,
    components: tuple[str, ...],
    confirm_hash: str,
    expires_at: datetime,
    webhook_secret: str | None,
    at: datetime,
) -> dict[str, str]:
    """The pending request's fields (REQUEST_FIELDS); `req_secret` absent without one."""
    values = {
        "req_event": event,
        "req_components": _csv(components),
        "req_hash": confirm_hash,
        "req_expires": expires_at.isoformat(),
        "req_at": at.isoformat(),
    }
    if webhook_secret is not None:
        values["req_secret"] = webhook_secret
    return values


def active_hash(
    components: tuple[str, ...], webhook_secret: str | None, generation: int, at: datetime
) -> dict[str, str]:
    values = {
        "state": "active",
        "components": _csv(components),
        "generation": str(generation),
        "confirmed_at": at.isoformat(),
    }
    if webhook_secret is not None:
        values["webhook_secret"] = webhook_secret
    return values


def ended_hash(how: str, at: datetime) -> dict[str, str]:
    return {"state": "ended", "ended_how": how, "ended_at": at.isoformat()}


def subscription_of(raw: Mapping[Any, Any]) -> Subscription | None:
    """A subscription's hash as HGETALL returns it (bytes) → Subscription; None if empty."""
    if not raw:
        return None
    v = {
        (k.decode() if isinstance(k, bytes) else k): (x.decode() if isinstance(x, bytes) else x)
        for k, x in raw.items()
    }
    request = None
    if v.get("req_event"):
        request = SubscriptionRequest(
            event=v["req_event"],
            components=_uncsv(v.get("req_components", "")),
            confirm_hash=v.get("req_hash", ""),
            expires_at=datetime.fromisoformat(v["req_expires"]),
            webhook_secret=v.get("req_secret"),
            requested_at=datetime.fromisoformat(v["req_at"]),
        )
    return Subscription(
        id=v["id"],
        account=v["account"],
        channel=v["channel"],
        address=v["address"],
        state=v.get("state", "pending"),
        requested_at=datetime.fromisoformat(v["requested_at"]),
        components=_uncsv(v.get("components", "")),
        webhook_secret=v.get("webhook_secret"),
        generation=int(v.get("generation", "0")),
        confirmed_at=_time(v.get("confirmed_at")),
        ended_at=_time(v.get("ended_at")),
        ended_how=v.get("ended_how"),
        request=request,
    )


def subscriber_entry(channel: str, components: tuple[str, ...]) -> str:
    """A keys.subscribers value: `channel|,a,b,` (components wrapped in commas, so
    lua/route_subscribers.lua finds `,name,` with a plain search), `channel|` for all."""
    wrapped = f",{','.join(components)}," if components else ""
    return f"{channel}|{wrapped}"


def components_arg(components: tuple[str, ...]) -> str:
    """A post's components as lua/route_subscribers.lua takes them: `,a,b,` or ``."""
    return f",{','.join(components)}," if components else ""


_SUB_INDEX_SEP = "\x00"


def subscription_index_entry(channel: str, address: str, subscription_id: str) -> str:
    """A keys.subscription_index member: `channel NUL address NUL id` (address as
    subscription_address makes it)."""
    key = subscription_address(channel, address)
    return f"{channel}{_SUB_INDEX_SEP}{key}{_SUB_INDEX_SEP}{subscription_id}"


def subscription_index_range(channel: str, address: str) -> tuple[str, str]:
    prefix = f"{channel}{_SUB_INDEX_SEP}{subscription_address(channel, address)}{_SUB_INDEX_SEP}"
    return f"[{prefix}", f"({prefix[:-1]}\x01"


def subscription_index_id(entry: bytes | str) -> str:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return text.rpartition(_SUB_INDEX_SEP)[2]


def subscription_address(channel: str, address: str) -> str:
    """An address as subscriptions compare it: email with ASCII letters lowered (as the
    account email index does), phone and webhook URL exactly."""
    return email_key(address) if channel == "email" else address


# --- the live stream ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LiveEntry:
    """One keys.LIVE entry, as stream fields: a post after its fan-out, a DM, a follow or an
    unfollow. `data` is the post's or DM's JSON (views.py); `account` the account posted as,
    or followed."""

    kind: str  # "post" | "dm" | "follow" | "unfollow"
    id: str = ""
    account: str = ""
    author: str = ""
    visibility: str = ""
    follower: str = ""
    sender: str = ""
    recipient: str = ""
    data: bytes = b""

    def fields(self) -> dict[str, str | bytes]:
        if self.kind == "post":
            return {
                "kind": "post",
                "id": self.id,
                "account": self.account,
                "author": self.author,
                "visibility": self.visibility,
                "data": self.data,
            }
        if self.kind == "dm":
            return {
                "kind": "dm",
                "id": self.id,
                "from": self.sender,
                "to": self.recipient,
                "data": self.data,
            }
        return {"kind": self.kind, "follower": self.follower, "account": self.account}


def live_entry_of(fields: Mapping[bytes, bytes]) -> LiveEntry:
    def get(name: bytes) -> str:
        value = fields.get(name)
        return value.decode() if value is not None else ""

    return LiveEntry(
        kind=get(b"kind"),
        id=get(b"id"),
        account=get(b"account"),
        author=get(b"author"),
        visibility=get(b"visibility"),
        follower=get(b"follower"),
        sender=get(b"from"),
        recipient=get(b"to"),
        data=fields.get(b"data", b""),
    )


# --- company sign-in ------------------------------------------------------------------------
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def email_key(address: str) -> str:
    """An email address as the index compares it: ASCII letters lowered, nothing else (the
    same as Redis Lua's string.lower, which lua/email_index.lua applies to the old address)."""
    return address.translate(_ASCII_LOWER)


def email_entry(address: str, handle: str) -> str:
    """A member of keys.emails: `<email_key>\\n<handle>` (an address never holds a newline)."""
    return f"{email_key(address)}\n{handle}"


def email_range(address: str) -> tuple[str, str]:
    """ZRANGEBYLEX bounds that hold exactly the entries of `address`: `\\n` < `\\x0b`."""
    key = email_key(address)
    return f"[{key}\n", f"({key}\x0b"


def handle_of_entry(entry: bytes | str) -> str:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return text.rpartition("\n")[2]


class OidcFlow(msgspec.Struct, frozen=True, kw_only=True):
    """A company sign-in under way (keys.oidc_flow): what the callback checks the provider's
    answer against. `nonce` must come back in the ID token; `verifier` is the PKCE code
    verifier the token request proves the code with; `next` is the page to land on."""

    nonce: str
    verifier: str
    next: str = "/app"


_FLOW_DECODER = msgspec.json.Decoder(OidcFlow)


def encode_flow(flow: OidcFlow) -> bytes:
    return msgspec.json.encode(flow)


def decode_flow(raw: bytes | str) -> OidcFlow:
    return _FLOW_DECODER.decode(raw)


# --- incidents, components and the status page (keys.incident*, keys.component*) -------------
class IncidentUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One update of an incident (keys.incident_updates), carried by the post `post`."""

    post: str
    author: str
    status: str
    impact: str
    severity: str = "info"
    text: str
    """The update as written; the post says it after the incident's title and status."""
    components: tuple[ComponentStatus, ...] = ()
    at: datetime


_update_encoder = msgspec.json.Encoder()
_update_decoder = msgspec.json.Decoder(IncidentUpdate)


def encode_incident_update(update: IncidentUpdate) -> bytes:
    return _update_encoder.encode(update)


def incident_update_of(raw: bytes | str) -> IncidentUpdate:
    return _update_decoder.decode(raw)


INCIDENT_COMPONENT = "c:"
"""Prefix of an incident hash's fields that hold the state its updates set a component to."""


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    account: str
    title: str
    status: str
    impact: str
    visibility: str
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    components: dict[str, str]
    """Component → the state this incident's updates last set it to."""

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"


def incident_hash(
    *,
    account: str | None = None,
    title: str | None = None,
    visibility: str | None = None,
    created_at: datetime | None = None,
    status: str,
    impact: str,
    at: datetime,
    components: tuple[ComponentStatus, ...],
) -> dict[str, str]:
    """The fields an IncidentOpened (every argument) or IncidentUpdated (status, impact,
    time, components) sets; `resolved_at` is set or dropped beside them (writeside.py)."""
    values = {"status": status, "impact": impact, "updated_at": at.isoformat()}
    opened = {
        "account": account,
        "title": title,
        "visibility": visibility,
        "created_at": created_at.isoformat() if created_at else None,
    }
    values |= {k: v for k, v in opened.items() if v is not None}
    values |= {INCIDENT_COMPONENT + c.name: c.status for c in components}
    return values


def incident_of(incident_id: str, raw: Mapping[Any, Any]) -> Incident | None:
    if not raw:
        return None
    h = {_str(k): _str(v) for k, v in raw.items()}
    return Incident(
        id=incident_id,
        account=h["account"],
        title=h["title"],
        status=h["status"],
        impact=h["impact"],
        visibility=h["visibility"],
        created_at=datetime.fromisoformat(h["created_at"]),
        updated_at=datetime.fromisoformat(h["updated_at"]),
        resolved_at=_time(h.get("resolved_at")),
        components={
            k.removeprefix(INCIDENT_COMPONENT): v
            for k, v in h.items()
            if k.startswith(INCIDENT_COMPONENT)
        },
    )


_INCIDENT_BASE = 10**19 - 1


def incident_member(incident_id: str) -> str:
    """An incident id as kept in keys.incidents: 10^19-1-id, 19 digits, so text order is
    newest first (incident_of_member undoes it)."""
    return f"{_INCIDENT_BASE - int(incident_id):019d}"


def incident_of_member(member: bytes | str) -> str:
    return str(_INCIDENT_BASE - int(member))


class Component(msgspec.Struct, frozen=True, kw_only=True):
    """A component of an account's status page (keys.components), as it is now."""

    name: str
    status: str
    description: str = ""
    updated_at: datetime


_component_encoder = msgspec.json.Encoder()
_component_decoder = msgspec.json.Decoder(Component)


def encode_component(component: Component) -> bytes:
    return _component_encoder.encode(component)


def component_of(raw: bytes | str) -> Component:
    return _component_decoder.decode(raw)


def component_change(at: datetime, name: str, status: str) -> str:
    """A member of keys.component_history: `ms|name|status` (names hold no `|`)."""
    return f"{int(at.timestamp() * 1000)}|{name}|{status}"


def component_change_of(member: bytes | str) -> tuple[datetime, str, str]:
    ms, name, status = _str(member).split("|")
    return datetime.fromtimestamp(int(ms) / 1000, UTC), name, status


STATUS_PAGE_LOOK = ("logo_url", "accent_color")
"""The fields of keys.status_page a StatusPageChanged sets (the rest count changes)."""


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- roll-calls -----------------------------------------------------------------------------
class RollCallAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A person's latest answer to a roll-call (keys.rollcall_answers: recipient → this,
    JSON). lua/rollcall_answer.lua reads it with cjson and, to mark help handled, rewrites
    its last field in place: `handled` must stay last (tests/test_records.py checks)."""

    option: str
    kind: str
    channel: str
    at: datetime
    actor: str
    note: str = ""
    late: bool = False
    suspect: bool = False
    event: str
    """The RollCallAnswered it comes from: an older or the same event applied again is skipped."""
    handled: bool = False


_rollcall_answer_encoder = msgspec.json.Encoder()
_rollcall_answer_decoder = msgspec.json.Decoder(RollCallAnswer)
ROLLCALL_UNHANDLED_TAIL = b'"handled":false}'
ROLLCALL_HANDLED_TAIL = b'"handled":true}'
"""What lua/rollcall_answer.lua swaps at the end of a record to mark its help handled."""


def encode_rollcall_answer(answer: RollCallAnswer) -> bytes:
    return _rollcall_answer_encoder.encode(answer)


def rollcall_answer_of(raw: bytes | str) -> RollCallAnswer:
    return _rollcall_answer_decoder.decode(raw)


def accounted_for(answer: RollCallAnswer | None) -> bool:
    """Whether an answer stops escalation: given, and either not suspect or by proxy."""
    return answer is not None and (not answer.suspect or answer.channel == "proxy")


# --- escalation ---------------------------------------------------------------------------------
class StoredPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """An escalation policy as kept (keys.escalation_policies: name → this, JSON): the
    version in force, who set it and when."""

    policy: EscalationPolicy
    updated_at: datetime
    updated_by: str


_stored_policy_encoder = msgspec.json.Encoder()
_stored_policy_decoder = msgspec.json.Decoder(StoredPolicy)
_policy_decoder = msgspec.json.Decoder(EscalationPolicy)


def encode_stored_policy(stored: StoredPolicy) -> bytes:
    return _stored_policy_encoder.encode(stored)


def stored_policy_of(raw: bytes | str) -> StoredPolicy:
    return _stored_policy_decoder.decode(raw)


def encode_policy(policy: EscalationPolicy) -> bytes:
    """A roll-call's policy snapshot (keys.rollcall_policy)."""
    return _stored_policy_encoder.encode(policy)


def policy_of(raw: bytes | str) -> EscalationPolicy:
    return _policy_decoder.decode(raw)


@dataclass(frozen=True, slots=True)
class EscalationDue:
    """One escalation round whose time has come: a member of keys.rollcall_timers, then an
    entry of keys.rollcall_due, written `<rollcall>|<round>` (lua/escalation_due.lua moves
    the member as it is)."""

    rollcall: str
    round: str

    def member(self) -> str:
        return f"{self.rollcall}|{self.round}"


def decode_due(payload: bytes | str) -> EscalationDue:
    """A due-stream entry; EventDecodeError (dead-lettered) if it is none."""
    rollcall, sep, round_ = _str(payload).partition("|")
    if not sep or not rollcall.isdigit() or not round_:
        raise EventDecodeError(f"not an escalation round: {_str(payload)[:80]!r}")
    return EscalationDue(rollcall, round_)


# --- answers from outside the app (muster.answerlinks) ------------------------------------------
class RollCallLink(msgspec.Struct, frozen=True, kw_only=True):
    """What an answer link stands for (keys.rollcall_link): answering `rollcall` as
    `recipient`, through the message of `channel` (email, sms) that carried it, sent at
    `sent_ms` (the latest send: a resend moves it)."""

    rollcall: str
    recipient: str
    channel: str
    sent_ms: int


_rollcall_link_encoder = msgspec.json.Encoder()
_rollcall_link_decoder = msgspec.json.Decoder(RollCallLink)


def encode_rollcall_link(link: RollCallLink) -> bytes:
    return _rollcall_link_encoder.encode(link)


def rollcall_link_of(raw: bytes | str) -> RollCallLink:
    return _rollcall_link_decoder.decode(raw)


class SmsThread(msgspec.Struct, frozen=True, kw_only=True):
    """The post a phone was last sent by SMS (keys.sms_thread): `post`, sent to `recipient`
    (the account whose phone it was then) at `sent_ms`."""

    recipient: str
    post: str
    sent_ms: int


_sms_thread_encoder = msgspec.json.Encoder()
_sms_thread_decoder = msgspec.json.Decoder(SmsThread)


def encode_sms_thread(thread: SmsThread) -> bytes:
    return _sms_thread_encoder.encode(thread)


def sms_thread_of(raw: bytes | str) -> SmsThread:
    return _sms_thread_decoder.decode(raw)


@dataclass(frozen=True, slots=True)
class SmsCodeBlock:
    """The reply codes one phone was sent for one (roll-call, recipient) (keys.
    rollcall_sms_codes): `first` for the first option, then one each in option order, until
    `expires_ms`. Stored as `first|count|expires_ms`; lua/rollcall_sms_codes.lua writes the
    same form (tests/answers/test_links_unit.py checks)."""

    first: int
    count: int
    expires_ms: int

    def encode(self) -> str:
        return f"{self.first}|{self.count}|{self.expires_ms}"

    def option_index(self, code: int) -> int | None:
        """The 0-based option `code` names in this block, or None."""
        return code - self.first if self.first <= code < self.first + self.count else None


def sms_code_block_of(raw: bytes | str) -> SmsCodeBlock:
    first, count, expires = _str(raw).split("|")
    return SmsCodeBlock(int(first), int(count), int(expires))


class RollCallNews(msgspec.Struct, frozen=True, kw_only=True):
    """One keys.ROLLCALL_LIVE entry (field `data`, JSON): roll-call `rollcall` changed.
    `kind`: `changed` (answers, help handled: the counts moved), `help` (a new help answer,
    with who, which option and their note), `extended` or `closed`."""

    rollcall: str
    kind: Literal["changed", "help", "extended", "closed"]
    recipient: str = ""
    option: str = ""
    note: str = ""
    at: str = ""

    def fields(self) -> dict[str, str | bytes]:
        return {"data": _rollcall_news_encoder.encode(self)}


_rollcall_news_encoder = msgspec.json.Encoder()
_rollcall_news_decoder = msgspec.json.Decoder(RollCallNews)


def rollcall_news_of(fields: Mapping[bytes, bytes]) -> RollCallNews:
    return _rollcall_news_decoder.decode(fields[b"data"])
