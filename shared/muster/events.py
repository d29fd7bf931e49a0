"""The event log's vocabulary: one frozen, tagged msgspec Struct per thing that happened.

Rules that keep history readable forever (tests/fixtures/events holds a stored payload of
every version and the suite decodes them all):
- names are past tense, tags are explicit and never change;
- a new field always has a default; a field is never removed or retyped;
- every event carries `id` (snowflake, decimal string), `actor` (handle), `at` (UTC) and `v`.
Payloads are JSON so an operator can read a stream with redis-cli. This module never does I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeAlias

import msgspec

from muster.errors import EventDecodeError


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    actor: str
    at: datetime
    v: int = 1


class AccountCreated(Event, frozen=True, tag="AccountCreated"):
    handle: str
    account_id: str
    kind: str
    role: str | None = None
    display_name: str = ""
    email: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    token_hash: str | None = None
    dm_channels: tuple[str, ...] = ("app", "email")


class AccountTokenReset(Event, frozen=True, kw_only=True, tag="AccountTokenReset"):
    """An account's token changed; the old one stops working. v1: only ever the bootstrap
    admin's (MUSTER_ADMIN_TOKEN set to a new value), which also made the account an admin.
    v2: any person's or service's, by an admin (POST /v1/accounts/{handle}/token) or the
    bootstrap; `role` is the role it also sets, if any (the bootstrap's "admin")."""

    v: int = 2
    handle: str
    token_hash: str
    role: str | None = None


class AccountDeactivated(Event, frozen=True, tag="AccountDeactivated"):
    """An admin (or the directory) deactivated the account: its tokens stop working, it
    receives nothing, its history stays and its handle stays taken."""

    handle: str


class AccountReactivated(Event, frozen=True, tag="AccountReactivated"):
    """The account works again; `channels` are the off-app channels its contact points
    reopen (what it had when it was deactivated, or set since)."""

    handle: str
    channels: tuple[str, ...] = ()


class NamedTokenCreated(Event, frozen=True, tag="NamedTokenCreated"):
    """A person made a named token for scripts (POST /v1/me/tokens), or signing in through
    the company identity provider made one for the web session; it works beside the
    account's own token until revoked or `expires_at`."""

    handle: str
    token_id: str
    name: str
    token_hash: str
    expires_at: datetime | None = None


class NamedTokenRevoked(Event, frozen=True, tag="NamedTokenRevoked"):
    handle: str
    token_id: str
    token_hash: str


class AuditRead(Event, frozen=True, tag="AuditRead"):
    """An auditor read the audit log with DMs' text (GET /v1/audit or its export): who
    (`actor`), when (`at`), and with which filter."""

    route: str
    since: datetime | None = None
    until: datetime | None = None
    account: str | None = None
    event_type: str | None = None
    after: str | None = None


class ContactPointsChanged(Event, frozen=True, tag="ContactPointsChanged"):
    """The account's profile and contact points after the change (full state, not a diff)."""

    handle: str
    display_name: str = ""
    email: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    dm_channels: tuple[str, ...] = ("app", "email")
    reachable: bool = True
    """False while the account is deactivated: its contact points open no channel."""


class PosterGranted(Event, frozen=True, tag="PosterGranted"):
    account: str
    poster: str


class PosterRevoked(Event, frozen=True, tag="PosterRevoked"):
    account: str
    poster: str


# --- follow changes -----------------------------------------------------------------------
# Each change of one (follower, account) pair carries `seq`: the pair's change number, taken
# by the write side in the same atomic step that appends the event (v2). Projections apply a
# change only if its seq is higher than the last one they applied, so the order is the log's,
# never an API process's clock. From v2 on a change states the follow as it is afterwards
# (channels, mandatory), so applying it needs no earlier state. v1 changes (seq 0) predate
# this and are applied in log order, as they were.


class AccountFollowed(Event, frozen=True, kw_only=True, tag="AccountFollowed"):
    """`external`: the follower is an external person (they receive public posts only)."""

    v: int = 2
    follower: str
    account: str
    channels: tuple[str, ...] = ("app",)
    mandatory: bool = False
    external: bool = False
    seq: int = 0


class FollowChannelsChanged(Event, frozen=True, kw_only=True, tag="FollowChannelsChanged"):
    """v2: the follow after the change — `channels`, and the `mandatory` and `external` it
    kept. v1 carried the channels only (the rest stayed as they were)."""

    v: int = 2
    follower: str
    account: str
    channels: tuple[str, ...] = ("app",)
    mandatory: bool = False
    external: bool = False
    seq: int = 0


class AccountUnfollowed(Event, frozen=True, kw_only=True, tag="AccountUnfollowed"):
    v: int = 2
    follower: str
    account: str
    seq: int = 0


class FollowerEnrolled(Event, frozen=True, kw_only=True, tag="FollowerEnrolled"):
    """An admin made `follower` follow `account`; `mandatory` means no opt-out. `channels`
    are the enrolment's; v2 adds `follow_channels`, the follow's channels afterwards (what
    the person had chosen, plus the enrolment's), merged by the write side. `enrolment` is
    the id of the MembersEnrolled or FollowersEnrolled it expands, if any."""

    v: int = 2
    follower: str
    account: str
    channels: tuple[str, ...] = ("app",)
    mandatory: bool = False
    external: bool = False
    follow_channels: tuple[str, ...] | None = None
    seq: int = 0
    enrolment: str | None = None


class MembersEnrolled(Event, frozen=True, kw_only=True, tag="MembersEnrolled"):
    """Every member, now and future, follows `account`: the rule (keys.enrolment_rules) is
    written with it. v2: the timeline worker expands it into one FollowerEnrolled per member;
    a v1 one was expanded by the api that appended it (its follows are in the log after it)."""

    v: int = 2
    account: str
    channels: tuple[str, ...] = ("app",)
    mandatory: bool = False


class FollowersEnrolled(Event, frozen=True, tag="FollowersEnrolled"):
    """An admin made the people in `followers` follow `account` (`externals`: those of them
    who are external). The timeline worker expands it into one FollowerEnrolled each."""

    account: str
    followers: tuple[str, ...]
    externals: tuple[str, ...] = ()
    channels: tuple[str, ...] = ("app",)
    mandatory: bool = False


# --- directory sync (SCIM) ---------------------------------------------------------------
# The directory (an identity provider speaking SCIM 2.0 to /scim/v2) keeps the attributes it
# sent; Muster derives an account's display name and email from them (muster.api.scim).


class DirectoryEmail(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One of a directory user's email addresses, as the directory sent it."""

    value: str
    type: str | None = None
    primary: bool | None = None


class DirectoryUserChanged(Event, frozen=True, kw_only=True, tag="DirectoryUserChanged"):
    """The directory created or changed the person `handle`: its attributes after the change
    (full state, not a diff). The account's own changes (AccountCreated,
    ContactPointsChanged) are separate events appended in the same step."""

    handle: str
    user_name: str
    external_id: str | None = None
    display_name: str | None = None
    formatted: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    emails: tuple[DirectoryEmail, ...] = ()


class DirectoryUserRemoved(Event, frozen=True, kw_only=True, tag="DirectoryUserRemoved"):
    """The directory deleted the person `handle`: the account is no longer the directory's
    (it stays, deactivated; its handle is never reused)."""

    handle: str


class DirectoryGroupChanged(Event, frozen=True, kw_only=True, tag="DirectoryGroupChanged"):
    """The directory mapped a group to the team `account` (the handle its `display_name`
    gives) or changed its members: `added` and `removed` are person handles. The
    follows themselves are their own events (FollowersEnrolled, AccountUnfollowed)."""

    account: str
    display_name: str | None = None
    external_id: str | None = None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class DirectoryGroupRemoved(Event, frozen=True, kw_only=True, tag="DirectoryGroupRemoved"):
    """The directory deleted the group mapped to the team `account`; its members' follows
    of the team were removed before, each by its own AccountUnfollowed."""

    account: str


class RollCallOption(msgspec.Struct, frozen=True, kw_only=True):
    """One answer a roll-call offers: `key` is what answers name (1-16 of [a-z0-9_]),
    `kind` is `ok`, `help` (stays flagged until marked handled) or `other`."""

    key: str
    label: str
    kind: str


class EscalationStep(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One step of an escalation policy: `after_s` seconds after the roll-call opened, tell
    `to` (`recipient`: the person asked; `manager`: their manager, about them; `fallback`:
    the account `fallback`, about them) on `channels` (a list of off-app channels,
    `chosen`: the person's own choice, `all`: every channel they can be reached on)."""

    after_s: float
    to: str
    channels: tuple[str, ...] | str
    fallback: str | None = None


class EscalationRepeat(msgspec.Struct, frozen=True, kw_only=True):
    """Run the steps `times` more times, each loop `every_s` after the previous one's last step."""

    times: int
    every_s: float


class EscalationPolicy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A named escalation policy as one version of it stated it: what a roll-call keeps
    (a snapshot, never a reference) from the moment it opens."""

    name: str
    version: int
    steps: tuple[EscalationStep, ...]
    repeat: EscalationRepeat | None = None
    max_sends_per_recipient: int | None = None


class RollCall(msgspec.Struct, frozen=True, kw_only=True):
    """The roll-call a post opens ("are you safe?"): the post is the question, its id the
    roll-call's id, its recipients at fan-out the audience. `grace_s`: answers are taken,
    marked late, for this long after the deadline (the api's MUSTER_ROLLCALL_GRACE when it
    opened). `policy` names the escalation policy it was opened with, and `escalation` is
    that policy as it was then (a snapshot: changing the policy later changes nothing here)."""

    options: tuple[RollCallOption, ...]
    deadline: datetime
    grace_s: int = 0
    policy: str | None = None
    escalation: EscalationPolicy | None = None


class PostPublished(Event, frozen=True, tag="PostPublished"):
    """`id` is also the post's id. `as_account` is the account it appears under."""

    author: str
    as_account: str
    text: str
    visibility: str = "internal"
    severity: str = "info"
    in_reply_to: str | None = None
    components: tuple[str, ...] = ()
    """The components the post is about (an incident update names the ones it changes).
    Subscribers limited to components get a public post that names one of theirs, or
    names none (then it is about everything); subscribers of everything get them all."""
    rollcall: RollCall | None = None
    """The roll-call this post opens, if any."""


class DirectMessageSent(Event, frozen=True, tag="DirectMessageSent"):
    """`id` is also the message's id; `actor` is the sender."""

    recipient: str
    text: str
    in_reply_to: str | None = None


# --- subscriptions (people without an account) ----------------------------------------------
# A subscription is one (account, channel, address): its `subscription` id is derived from
# them (muster.subscriptions.subscription_id), so asking again finds the same one. Its events
# go to the partition of its recipient name `sub-<id>` (records.subscriber_recipient), where
# its write-side state lives. Consent is recorded, never the client's address: `network` is
# a keyed hash of the client's network (IPv4 /24, IPv6 /48).


class SubscriptionRequested(Event, frozen=True, kw_only=True, tag="SubscriptionRequested"):
    """Someone asked (POST /v1/accounts/{handle}/subscriptions, or the status page's form)
    for `account`'s public updates on `channel` (email, sms, webhook) at `address`, limited
    to `components` (none: everything). Nothing is delivered until it is confirmed by
    `expires_at`; `confirm_hash` is SHA-256 of the confirmation token (email link) or code
    (SMS), never the token; `webhook_secret` signs the webhook's deliveries once confirmed."""

    subscription: str
    account: str
    channel: str
    address: str
    components: tuple[str, ...] = ()
    network: str = ""
    confirm_hash: str = ""
    expires_at: datetime
    webhook_secret: str | None = None
    via: str = "api"
    """Where it was asked: `api` or `web` (the status page's form)."""


class SubscriptionConfirmed(Event, frozen=True, kw_only=True, tag="SubscriptionConfirmed"):
    """The subscription is active from now on: `how` is `email_link` (the link's button),
    `sms_code` (POST /v1/subscriptions/confirm), `webhook_handshake` (the receiver answered
    2xx to the signed subscription.confirm event) or `sms_start` (START texted back after a
    STOP). `request` is the SubscriptionRequested it confirms (none for sms_start)."""

    subscription: str
    account: str
    channel: str
    how: str
    request: str | None = None
    network: str = ""
    components: tuple[str, ...] = ()
    """The components in force from now on (the confirmed request's)."""
    webhook_secret: str | None = None
    """A webhook's signing secret in force from now on (the confirmed request's)."""
    generation: int = 1
    """How many confirmations made it active, this one included; unsubscribe links of an
    earlier generation no longer work."""


class SubscriptionEnded(Event, frozen=True, kw_only=True, tag="SubscriptionEnded"):
    """Nothing more is delivered: `how` is `unsubscribe_link` (the page's button),
    `one_click` (RFC 8058 POST from a mail program), `sms_stop` (STOP texted back; START
    resumes), `removed` (a poster or admin, `actor`) or `webhook_gone` (410)."""

    subscription: str
    account: str
    channel: str
    how: str
    network: str = ""


# --- incidents and components (the status page) --------------------------------------------
# An incident belongs to a team or service account; its events go to that account's
# partition with the PostPublished of each update (appended in the same step), so the post
# and the incident change keep their order. `incident` is the id of the opening update's
# post, the root of the incident's thread.


class ComponentStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A component's state as an incident update set it."""

    name: str
    status: str


class ComponentChanged(Event, frozen=True, kw_only=True, tag="ComponentChanged"):
    """`account`'s component `name` is in `status` from now on (operational,
    degraded_performance, partial_outage, major_outage, under_maintenance), with its
    `description` after the change; `incident` is the incident whose update set it, if any."""

    account: str
    name: str
    status: str
    description: str = ""
    incident: str | None = None


class IncidentOpened(Event, frozen=True, kw_only=True, tag="IncidentOpened"):
    """A poster opened an incident of `account`; its first update is the post `incident`
    (appended with it). `components` are the states this update set."""

    incident: str
    account: str
    title: str
    status: str
    impact: str
    visibility: str = "public"
    severity: str = "info"
    """Of the update's post (from the impact unless the poster chose one)."""
    text: str
    components: tuple[ComponentStatus, ...] = ()


class IncidentUpdated(Event, frozen=True, kw_only=True, tag="IncidentUpdated"):
    """An update of `incident`: its status and impact after it (`resolved` resolves it; any
    other status reopens a resolved one), carried by the post `post` (a reply to the
    incident's first post, appended with it)."""

    incident: str
    account: str
    post: str
    status: str
    impact: str
    visibility: str = "public"
    """The incident's (it never changes), so applying the update reads nothing."""
    severity: str = "info"
    text: str
    components: tuple[ComponentStatus, ...] = ()


class StatusPageChanged(Event, frozen=True, kw_only=True, tag="StatusPageChanged"):
    """The look of `handle`'s status page after the change (full state): a logo's https
    URL and an accent colour (`#rrggbb`), each None for the default."""

    handle: str
    logo_url: str | None = None
    accent_color: str | None = None


# --- roll-calls ------------------------------------------------------------------------------
# A roll-call is opened by its post (PostPublished.rollcall). An answer goes to the partition
# of the person it is for (`recipient`), where that person's answer and the counts of their
# partition live; closing and extending go to the partition of the account it was posted as
# (`account`), where its state lives. Every one names the roll-call by its post id.


class RollCallAudienceRecorded(Event, frozen=True, kw_only=True, tag="RollCallAudienceRecorded"):
    """People `rollcall`'s post reached, all of one partition: the timeline worker appends
    one per page of its walk of the account's followers (lua/rollcall_audience.lua), naming
    only those not recorded before, so the audience is a snapshot in the log and replay never
    recomputes it from a graph that has moved on. `actor` is the post's author."""

    rollcall: str
    account: str
    recipients: tuple[str, ...]


class AnswerEvidence(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How an answer from outside the app arrived, kept so a person can judge it later:
    `network` is a keyed hash of the client's network (IPv4 /24, IPv6 /48, as consent
    events record it), never the address; `user_agent` the client's, cut to 200 characters;
    `since_delivery_s` how long after the message carrying the link was handed to its
    provider; `since_page_s` how long after the answer page was shown; `suspect_because`
    why it looks automated (muster.answerlinks.SUSPECT_REASONS), empty when it does not."""

    network: str = ""
    user_agent: str = ""
    since_delivery_s: float | None = None
    since_page_s: float | None = None
    suspect_because: str = ""


class RollCallAnswered(Event, frozen=True, kw_only=True, tag="RollCallAnswered"):
    """`recipient`'s answer to `rollcall`, which replaces any earlier one (history: these
    events). `actor` is who gave it: the recipient, or (channel `proxy`) an author or admin
    answering for them. `kind` is the option's kind when it was answered; `late`: after
    the deadline, inside the grace. `suspect`: it looks automated (a link scanner), so it
    does not account for anyone and never replaces an answer that is not suspect.
    v2 adds where it came from: `source_ref` (the provider's id — an SMS's MessageSid, a
    webhook callback's webhook-id — or the answer page's token hash) and `evidence`."""

    v: int = 2
    rollcall: str
    account: str
    recipient: str
    option: str
    kind: str
    channel: str = "app"
    note: str = ""
    late: bool = False
    suspect: bool = False
    source_ref: str = ""
    evidence: AnswerEvidence | None = None


class RollCallHelpHandled(Event, frozen=True, kw_only=True, tag="RollCallHelpHandled"):
    """A responder (`actor`: the author, a poster of the account or an admin) dealt with
    `recipient`'s `help` answer: it no longer counts as open help."""

    rollcall: str
    account: str
    recipient: str
    note: str = ""


class RollCallClosed(Event, frozen=True, kw_only=True, tag="RollCallClosed"):
    """No more answers are taken (`reason`: `closed` by the author or an admin)."""

    rollcall: str
    account: str
    reason: str = "closed"


class RollCallExtended(Event, frozen=True, kw_only=True, tag="RollCallExtended"):
    """The roll-call's deadline is now `deadline` (later than the one it replaces)."""

    rollcall: str
    account: str
    deadline: datetime


class RollCallEscalation(msgspec.Struct, frozen=True, kw_only=True):
    """One person not yet accounted for (`subject`) and who was told about them (`target`:
    the subject themselves, their manager, or the step's fallback)."""

    subject: str
    target: str


class RollCallEscalated(Event, frozen=True, kw_only=True, tag="RollCallEscalated"):
    """A step of `rollcall`'s escalation fired for some people of one partition (the
    escalation worker appends one per page of the audience it walks, naming only people not
    accounted for and not yet told in this `round`). `round` is `s<step>l<loop>` for a
    policy's step, `r<event id>` for a remind; `step` is the step's index (-1: a remind);
    `to` and `channels` as the step said. Its deliveries go out with it (never in replay):
    their message id is `<rollcall>-<round>` (to the subject) or `<rollcall>-<round>-<subject>`
    (to someone else), so a resend after a crash carries the same id."""

    rollcall: str
    account: str
    round: str
    step: int
    loop: int = 0
    to: str
    channels: tuple[str, ...] | str
    notices: tuple[RollCallEscalation, ...]


class RollCallReminded(Event, frozen=True, kw_only=True, tag="RollCallReminded"):
    """The author, a poster or an admin (`actor`) asked for `rollcall` to be sent again to
    everyone not yet accounted for (the escalation worker fires it as round `r<id>`)."""

    rollcall: str
    account: str


# --- escalation policies and managers --------------------------------------------------------


class EscalationPolicySet(Event, frozen=True, kw_only=True, tag="EscalationPolicySet"):
    """An admin created or replaced the escalation policy `policy.name`; `policy.version`
    is one more than the last version of that name (a deleted name's versions go on)."""

    policy: EscalationPolicy


class EscalationPolicyDeleted(Event, frozen=True, kw_only=True, tag="EscalationPolicyDeleted"):
    """An admin deleted the policy `name` (its `version` was the last); roll-calls opened
    with it keep their snapshot."""

    name: str
    version: int


class ManagerChanged(Event, frozen=True, kw_only=True, tag="ManagerChanged"):
    """An admin set (or, None, removed) the manager of the person `handle`: who escalation
    steps `to: manager` tell about them."""

    handle: str
    manager: str | None = None


class InboundEmailRefused(Event, frozen=True, kw_only=True, tag="InboundEmailRefused"):
    """An email to `recipient`'s reply address for the post or DM `target` was not taken
    as their reply or answer (`reason`: auto_reply, wrong_sender, empty, too_long,
    not_allowed, no_account). Kept so the history shows it; its text is not kept. `actor`
    is `mail-in`; `via` is `smtp` or the provider's name; `sender` the From address."""

    recipient: str
    target: str
    sender: str
    message_id: str
    reason: str
    via: str = "smtp"


class RollCallAnswerRejected(Event, frozen=True, kw_only=True, tag="RollCallAnswerRejected"):
    """An answer that came by a channel (an SMS code, an answer link's page, a webhook
    callback, an email naming an option) was refused and changed nothing: kept so the
    history shows it. `reason`: rollcall_closed, not_in_audience, unknown_code,
    number_changed, no_such_rollcall. `rollcall` and `recipient` when known (a code from a
    phone nobody was sent it names neither). `actor`: the person when known, else the door
    (`sms-in`). `source_ref`: the provider's id (MessageSid, webhook-id, Message-ID) or,
    for a link, the SHA-256 of the link (never the link: it is a bearer token). Only
    requests that proved where they came from are recorded (a Twilio signature, a page
    token of the link, a webhook signature, a matching sender), at most a few an hour per
    phone, link or person (muster.api.rejections)."""

    channel: str
    reason: str
    rollcall: str | None = None
    recipient: str | None = None
    source_ref: str = ""


class ContactPointOptedOut(Event, frozen=True, kw_only=True, tag="ContactPointOptedOut"):
    """`account` texted a stop word (`keyword`) from its phone: the provider sends it no
    more SMS until it texts START, and nothing Muster does can override that, mandatory
    follow or not. Recorded so roll-call reports show who cannot be reached by SMS (their
    other channels still carry everything). `source_ref`: the text's MessageSid."""

    account: str
    channel: str = "sms"
    keyword: str = ""
    source_ref: str = ""


class ContactPointOptedIn(Event, frozen=True, kw_only=True, tag="ContactPointOptedIn"):
    """`account` texted a start word: SMS reach it again."""

    account: str
    channel: str = "sms"
    keyword: str = ""
    source_ref: str = ""


AnyEvent: TypeAlias = (
    AccountCreated
    | AccountTokenReset
    | AccountDeactivated
    | AccountReactivated
    | NamedTokenCreated
    | NamedTokenRevoked
    | ContactPointsChanged
    | PosterGranted
    | PosterRevoked
    | AccountFollowed
    | FollowChannelsChanged
    | AccountUnfollowed
    | FollowerEnrolled
    | MembersEnrolled
    | FollowersEnrolled
    | PostPublished
    | DirectMessageSent
    | AuditRead
    | DirectoryUserChanged
    | DirectoryUserRemoved
    | DirectoryGroupChanged
    | DirectoryGroupRemoved
    | SubscriptionRequested
    | SubscriptionConfirmed
    | SubscriptionEnded
    | ComponentChanged
    | IncidentOpened
    | IncidentUpdated
    | StatusPageChanged
    | RollCallAudienceRecorded
    | RollCallAnswered
    | RollCallHelpHandled
    | RollCallClosed
    | RollCallExtended
    | RollCallEscalated
    | RollCallReminded
    | EscalationPolicySet
    | EscalationPolicyDeleted
    | ManagerChanged
    | InboundEmailRefused
    | RollCallAnswerRejected
    | ContactPointOptedOut
    | ContactPointOptedIn
)

EVENT_TYPES: tuple[type[Event], ...] = AnyEvent.__args__

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(payload: bytes | str) -> AnyEvent:
    try:
        event: AnyEvent = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(str(exc)) from exc
    return event


def event_type(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def partition_handle(event: Event) -> str:
    """The account whose partition the event goes to; its events keep their order there."""
    match event:
        case (
            AccountCreated(handle=h)
            | AccountTokenReset(handle=h)
            | AccountDeactivated(handle=h)
            | AccountReactivated(handle=h)
            | NamedTokenCreated(handle=h)
            | NamedTokenRevoked(handle=h)
            | ContactPointsChanged(handle=h)
            | DirectoryUserChanged(handle=h)
            | DirectoryUserRemoved(handle=h)
            | StatusPageChanged(handle=h)
            | ManagerChanged(handle=h)
        ):
            return h
        case (
            PosterGranted(account=a)
            | PosterRevoked(account=a)
            | MembersEnrolled(account=a)
            | FollowersEnrolled(account=a)
            | DirectoryGroupChanged(account=a)
            | DirectoryGroupRemoved(account=a)
            | ComponentChanged(account=a)
            | IncidentOpened(account=a)
            | IncidentUpdated(account=a)
        ):
            return a
        case (
            AccountFollowed(follower=f)
            | FollowChannelsChanged(follower=f)
            | AccountUnfollowed(follower=f)
            | FollowerEnrolled(follower=f)
        ):
            return f
        case PostPublished(as_account=a):
            return a
        case (
            SubscriptionRequested(subscription=s)
            | SubscriptionConfirmed(subscription=s)
            | SubscriptionEnded(subscription=s)
        ):
            return f"sub-{s}"
        case (
            RollCallAnswered(recipient=r)
            | RollCallHelpHandled(recipient=r)
            | InboundEmailRefused(recipient=r)
        ):
            return r
        case RollCallAudienceRecorded(recipients=(first, *_)):
            return first  # every one of them is in this partition
        case RollCallClosed(account=a) | RollCallExtended(account=a) | RollCallReminded(account=a):
            return a
        case RollCallEscalated(notices=(first, *_)):
            return first.subject  # every one of them is in this partition
        case EscalationPolicySet(policy=policy):
            return policy_partition_handle(policy.name)
        case EscalationPolicyDeleted(name=name):
            return policy_partition_handle(name)
        case ContactPointOptedOut(account=a) | ContactPointOptedIn(account=a):
            return a
        case RollCallAnswerRejected(recipient=str() as r):
            return r
        case _:
            return event.actor


def policy_partition_handle(name: str) -> str:
    """What places the escalation policy `name` in a partition (its events and state)."""
    return f"policy:{name}"


_ENROLMENT_SPLICE = b'"follow_channels":null,"seq":0'


def enrolment_payload(event: FollowerEnrolled) -> tuple[bytes, bytes]:
    """The JSON of a FollowerEnrolled around its `follow_channels` and `seq`, which the
    write side fills in as it appends it (lua/enrol.lua); tests decode what it appends."""
    if event.follow_channels is not None or event.seq:
        raise ValueError("the write side fills in follow_channels and seq")
    head, found, tail = encode(event).partition(_ENROLMENT_SPLICE)
    if not found:
        raise ValueError("FollowerEnrolled's fields moved: lua/enrol.lua cannot fill them in")
    return head, tail


def utcnow() -> datetime:
    return datetime.now(UTC)


STREAM_FIELD = b"e"
"""The one field of an event-log entry: the encoded event."""
