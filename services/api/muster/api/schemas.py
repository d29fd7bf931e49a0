"""Request and response bodies of the HTTP API (docs/api.md), as msgspec Structs.

Requests forbid unknown fields (422 names the field). Responses are encoded with msgspec and
described in /openapi.json from these same types (openapi.py), so the contract and the code
cannot drift apart. Checks that depend on settings or state live in validation.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from muster.events import AnyEvent, EscalationRepeat, EscalationStep, RollCallOption
from muster.views import Message, Post

Handle = Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,30}$", description="`^[a-z0-9_]{1,30}$`")]
Kind = Literal["person", "team", "service"]
Role = Literal["admin", "member", "external", "auditor"]
Channel = Literal["app", "email", "sms", "webhook"]
Visibility = Literal["public", "internal"]
Severity = Literal["info", "warning", "critical"]
Id = Annotated[str, Meta(pattern=r"^[0-9]{1,19}$", description="time-ordered 64-bit id, decimal")]
DisplayName = Annotated[str, Meta(max_length=100)]
Email = Annotated[str, Meta(max_length=254)]
Phone = Annotated[str, Meta(max_length=32)]
Url = Annotated[str, Meta(max_length=2048)]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CreateAccount(Request):
    handle: Handle
    kind: Kind
    display_name: DisplayName | None = None
    role: Role | None = None
    email: Email | None = None
    phone: Phone | None = None
    webhook_url: Url | None = None


class UpdateMe(Request):
    """Omitted fields stay; `null` clears a contact point."""

    display_name: DisplayName | UnsetType = UNSET
    email: Email | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET
    webhook_url: Url | UnsetType | None = UNSET
    dm_channels: list[Channel] | UnsetType = UNSET


ComponentName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^,|\x00-\x1f\x7f]+$")]


class Subscribe(Request):
    """Exactly one of `email`, `phone`, `webhook_url`; `components` limits the subscription
    to updates naming one of them (omitted or empty: everything)."""

    email: Email | None = None
    phone: Phone | None = None
    webhook_url: Url | None = None
    components: Annotated[list[ComponentName], Meta(max_length=20)] | None = None


class SubscribeOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: Literal["confirmation_sent"]
    webhook_secret: str | None = None
    """A webhook subscription's signing secret (Standard Webhooks `whsec_`), shown once."""


class ConfirmSubscription(Request):
    """`{phone, code}` (the SMS code) or `{token}` (the token of an email's link)."""

    phone: Phone | None = None
    code: Annotated[str, Meta(max_length=16)] | None = None
    token: Annotated[str, Meta(max_length=128)] | None = None


class ConfirmedOut(msgspec.Struct, kw_only=True):
    status: Literal["confirmed"] = "confirmed"


class SubscriptionOut(msgspec.Struct, kw_only=True):
    id: str
    channel: Literal["email", "sms", "webhook"]
    address: str
    state: Literal["pending", "active", "ended", "expired"]
    components: list[str]
    requested_at: str
    confirmed_at: str | None
    ended_at: str | None
    ended_how: str | None


class FollowRequest(Request):
    channels: list[Channel] | None = None


class Enrolment(Request):
    followers: list[Handle] | Literal["all_members"]
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["app"])
    mandatory: bool = False


OptionKey = Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,16}$", description="`^[a-z0-9_]{1,16}$`")]
AwareTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a UTC offset")]
Note = Annotated[str, Meta(max_length=500)]


class RollCallOptionIn(Request):
    key: OptionKey
    label: Annotated[str, Meta(min_length=1, max_length=64)]
    kind: Literal["ok", "help", "other"]


PolicyName = Annotated[
    str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="`^[a-z0-9][a-z0-9_-]{0,63}$`")
]


class RollCallIn(Request):
    """A roll-call the post opens: 2-6 options with distinct keys, a deadline in the future
    (at most 7 days away). `policy` names an escalation policy: the roll-call keeps it as it
    is now (a snapshot)."""

    options: Annotated[list[RollCallOptionIn], Meta(min_length=2, max_length=6)]
    deadline: AwareTime
    policy: PolicyName | None = None


OffAppChannel = Literal["email", "sms", "webhook"]
MAX_ESCALATION_S = 7 * 24 * 3600


class EscalationStepIn(Request):
    """`after_s` seconds after the roll-call opened (any positive value, at most 7 days),
    tell `to` on `channels` (a list of off-app channels, `chosen` or `all`)."""

    after_s: Annotated[float, Meta(gt=0, le=MAX_ESCALATION_S)]
    to: Literal["recipient", "manager", "fallback"]
    channels: (
        Annotated[list[OffAppChannel], Meta(min_length=1, max_length=3)] | Literal["chosen", "all"]
    )
    fallback: Handle | None = None


class EscalationRepeatIn(Request):
    times: Annotated[int, Meta(ge=1, le=9)]
    every_s: Annotated[float, Meta(gt=0, le=MAX_ESCALATION_S)]


class EscalationPolicyIn(Request):
    """PUT /v1/escalation-policies/{name}: 1-10 steps in the order they fire."""

    steps: Annotated[list[EscalationStepIn], Meta(min_length=1, max_length=10)]
    repeat: EscalationRepeatIn | None = None
    max_sends_per_recipient: Annotated[int, Meta(ge=1, le=100)] | None = None


class EscalationPolicyOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    version: int
    steps: list[EscalationStep]
    repeat: EscalationRepeat | None = None
    max_sends_per_recipient: int | None = None
    updated_at: str
    updated_by: str


class CreatePost(Request):
    text: str
    as_: Handle | None = msgspec.field(default=None, name="as")
    visibility: Visibility | None = None
    severity: Severity = "info"
    in_reply_to: Id | None = None
    rollcall: RollCallIn | None = None


class AnswerRollCall(Request):
    option: OptionKey
    note: Note | None = None


class RollCallCallback(Request):
    """A webhook recipient's answer (POST /v1/rollcalls/callback/{link}), signed."""

    option: OptionKey


class ExtendRollCall(Request):
    deadline: AwareTime


class HandleHelp(Request):
    note: Note | None = None


class RollCallAnswerOut(msgspec.Struct, kw_only=True):
    """A person's latest answer to a roll-call."""

    rollcall: str
    handle: str
    option: str
    kind: str
    channel: str
    note: str
    answered_at: str
    by: str
    """Who gave it: the person, or whoever answered for them (channel `proxy`)."""
    late: bool
    suspect: bool
    help_handled: bool


class RollCallCounts(msgspec.Struct, kw_only=True):
    targeted: int
    notified: int
    unreachable: int
    answered: int
    accounted_for: int
    suspect: int
    late: int
    by_option: dict[str, int]
    by_channel: dict[str, int]
    sms_opted_out: int = 0
    """People asked whose phone texted STOP: SMS no longer reach them (their other
    channels do); shown whether or not they answered."""


class RollCallOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """GET /v1/rollcalls/{id}: the report (counts for those who run it; a person asked sees
    their own `answer` instead)."""

    id: str
    account: str
    author: str
    state: Literal["open", "closed", "cancelled"]
    deadline: str
    grace_until: str
    options: list[RollCallOption]
    counts: RollCallCounts | None = None
    help_open: int | None = None
    asked: bool | None = None
    """True when the caller is among the people asked (then `answer` is theirs, if given)."""
    answer: RollCallAnswerOut | None = None


class RollCallRecipientOut(msgspec.Struct, kw_only=True):
    handle: str
    state: Literal["notified", "answered"]
    option: str | None
    kind: str | None
    channel: str | None
    answered_at: str | None
    by: str | None
    note: str | None
    suspect: bool
    late: bool
    help_open: bool
    escalation_level: int
    manager: str | None
    sms_opted_out: bool = False


class RollCallGroupOut(msgspec.Struct, kw_only=True):
    """GET /v1/rollcalls/{id}/groups: the people asked in one team or under one manager
    (`group` null: in no team, or with no manager)."""

    group: str | None
    asked: int
    answered: int
    accounted_for: int
    unanswered: int
    help_open: int
    by_option: dict[str, int]


class CreateDm(Request):
    to: Handle
    text: str
    in_reply_to: Id | None = None


class AccountCreatedOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    handle: str
    kind: Kind
    role: Role | None
    display_name: str
    token: str | None = None
    webhook_secret: str | None = None


class AccountOut(msgspec.Struct, kw_only=True):
    id: str
    handle: str
    kind: Kind
    display_name: str
    followers_count: int
    active: bool = True


class UpdateAccount(Request):
    """PATCH /v1/accounts/{handle}: omitted fields stay. `active` is for admins only; the
    status page's look (`display_name`, `logo_url`, `accent_color`; null: the default) for
    admins and the account's posters."""

    active: bool | UnsetType = UNSET
    manager: Handle | UnsetType | None = UNSET
    """Admins: who escalation steps `to: manager` tell about this person (null: nobody)."""
    display_name: DisplayName | UnsetType = UNSET
    logo_url: Url | UnsetType | None = UNSET
    accent_color: Annotated[str, Meta(max_length=7)] | UnsetType | None = UNSET


class AccountPageOut(msgspec.Struct, kw_only=True):
    """An account with its status page's look (PATCH /v1/accounts/{handle})."""

    id: str
    handle: str
    kind: Kind
    display_name: str
    followers_count: int
    active: bool = True
    logo_url: str | None = None
    accent_color: str | None = None
    manager: str | None = None
    """A person's manager (escalation steps `to: manager` tell them), if any."""


class TokenOut(msgspec.Struct, kw_only=True):
    """POST /v1/accounts/{handle}/token: the new token, shown once."""

    token: str


TokenName = Annotated[str, Meta(min_length=1, max_length=100)]


class CreateNamedToken(Request):
    name: TokenName
    expires_in_days: Annotated[int, Meta(ge=1, le=3650)] | None = None


class NamedTokenOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A named token; `token` (the secret) only in the answer that made it."""

    id: str
    name: str
    created_at: str
    expires_at: str | None
    expired: bool = False
    token: str | None = None


class MeOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    handle: str
    kind: Kind
    role: Role | None
    display_name: str
    email: str | None
    phone: str | None
    webhook_url: str | None
    dm_channels: list[Channel]
    followers_count: int
    active: bool
    webhook_secret: str | None = None


class FollowOut(msgspec.Struct, kw_only=True):
    account: str
    channels: list[Channel]
    mandatory: bool


class EnrolmentOut(msgspec.Struct, kw_only=True):
    """`id`: the enrolment's event; `followers`: how many people it enrols (for `all_members`,
    the members as of now). The per-person follows are made by a worker right after."""

    id: str
    account: str
    followers: int
    channels: list[Channel]
    mandatory: bool


PostOut = Post
"""A post as every route returns it (the timeline worker stores this same encoding)."""
DmOut = Message
"""A direct message as every route returns it."""


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class ErrorOut(msgspec.Struct, kw_only=True):
    error: ErrorBody


class Status(msgspec.Struct, kw_only=True):
    status: str
    detail: dict[str, str] = msgspec.field(default_factory=dict)


class ThreadOut(msgspec.Struct, kw_only=True):
    ancestors: list[Post]
    post: Post
    replies: list[Post]


class ConversationOut(msgspec.Struct, kw_only=True):
    with_: str = msgspec.field(name="with")
    last: DmOut


DeliveryState = Literal["pending", "sent", "logged", "failed"]
"""`logged`: NOT sent — no SMTP server or SMS provider is configured, so the message went to
the development mailbox or the log instead (`note` says where)."""


class DeliveryCounts(msgspec.Struct, kw_only=True):
    pending: int = 0
    sent: int = 0
    logged: int = 0
    failed: int = 0


class RecipientDelivery(msgspec.Struct, kw_only=True, omit_defaults=True):
    handle: str
    channel: Channel
    status: DeliveryState
    attempts: int
    last_error: str | None = None
    note: str | None = None


class EscalationDelivery(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One escalation message (GET /v1/rollcalls/{id}/deliveries): its delivery `id`
    (`<message id>.<handle>.<channel>`), the `round` it belongs to, who it is `about` (the
    person asked; the recipient themselves unless a manager or fallback was told), to whom."""

    id: str
    round: str
    about: str
    handle: str
    channel: Channel
    status: DeliveryState
    attempts: int
    last_error: str | None = None
    note: str | None = None


class EscalationDeliveriesOut(msgspec.Struct, kw_only=True):
    """Totals count every escalation delivery; `deliveries` is one page (`?limit`, `?after`)."""

    totals: dict[str, DeliveryCounts]
    deliveries: list[EscalationDelivery]


class DeliveriesOut(msgspec.Struct, kw_only=True):
    """Totals count every recipient; `recipients` is one page of them (`?limit`, `?after`)."""

    totals: dict[str, DeliveryCounts]
    recipients: list[RecipientDelivery]


class AccountSummary(msgspec.Struct, kw_only=True):
    """One row of the admin's account list (GET /v1/accounts)."""

    id: str
    handle: str
    kind: Kind
    role: Role | None
    display_name: str
    active: bool = True
    manager: str | None = None
    """A person's manager (escalation steps `to: manager`), null when none."""


class DirectoryEntry(msgspec.Struct, kw_only=True):
    """One account found in the people's directory (GET /v1/directory): public fields only."""

    id: str
    handle: str
    kind: Kind
    display_name: str
    active: bool = True


class PostersOut(msgspec.Struct, kw_only=True):
    """GET /v1/accounts/{team}/posters: who may post as `account`."""

    account: str
    posters: list[str]


AuditEvent = AnyEvent
"""An event as GET /v1/audit returns it: the stored event, secrets read "[redacted]"."""


# --- incidents and components -------------------------------------------------------------
IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved"]
Impact = Literal["none", "minor", "major", "critical"]
ComponentState = Literal[
    "operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"
]
Title = Annotated[str, Meta(max_length=200)]
ComponentStates = Annotated[dict[ComponentName, ComponentState], Meta(max_length=20)]


class CreateIncident(Request):
    """`as`: the team or service the incident is of (default: the calling service)."""

    title: Title
    status: IncidentStatus
    impact: Impact
    text: str
    as_: Handle | None = msgspec.field(default=None, name="as")
    visibility: Visibility = "public"
    severity: Severity | None = None
    components: ComponentStates | None = None


class UpdateIncident(Request):
    """`impact` omitted: it stays; `severity` omitted: from the impact."""

    status: IncidentStatus
    text: str
    impact: Impact | None = None
    severity: Severity | None = None
    components: ComponentStates | None = None


class PutComponent(Request):
    status: ComponentState
    description: Annotated[str, Meta(max_length=500)] | None = None


class ComponentOut(msgspec.Struct, kw_only=True):
    name: str
    status: ComponentState
    description: str
    updated_at: str


class IncidentUpdateOut(msgspec.Struct, kw_only=True):
    """An update: the post that carries it (its `text` says the incident's title and the
    status before `message`, the update as written), with the incident's fields it set."""

    id: str
    author: str
    as_account: str
    text: str
    visibility: Visibility
    severity: Severity
    in_reply_to: str | None
    created_at: str
    incident: str
    status: IncidentStatus
    impact: Impact
    message: str
    components: dict[str, ComponentState]


class IncidentOut(msgspec.Struct, kw_only=True):
    id: str
    account: str
    title: str
    status: IncidentStatus
    impact: Impact
    visibility: Visibility
    created_at: str
    updated_at: str
    resolved_at: str | None
    components: dict[str, ComponentState]
    """The state each component was last set to by this incident's updates."""
    updates: list[IncidentUpdateOut]
    """Oldest first; the first one opened it."""


class InboundEmailOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What an inbound email became: `reply` (a post in the thread), `dm`, `answer` (to the
    roll-call `id`), `refused` (with `reason`, recorded as an InboundEmailRefused) or
    `duplicate` (that Message-ID was handled before)."""

    outcome: str
    reason: str | None = None
    id: str | None = None
