"""Every Redis name Muster uses: streams, consumer groups, rq queues, keys and their TTLs.

Nobody else formats a key. Keys that belong to one event-log partition carry its hash tag
`{pN}`, so that a partition's stream and the write-side state checked before appending to it
sit in one Redis Cluster slot and one MULTI or script can check and append together.
An account's handle decides its partition; changing MUSTER_PARTITIONS on a populated
database moves accounts between partitions and needs a replay (docs/operations.md, Limits).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "muster"


@dataclass(frozen=True, slots=True)
class Family:
    """The keys one projection owns, as key builders called with ANY: dropped and rebuilt
    together by replay, summed by the checksum (muster.projections.families). Each
    projection declares its own families beside the code that writes them."""

    name: str
    per_partition: tuple[Callable[[int], str], ...]
    global_patterns: tuple[str, ...] = ()

    def patterns(self, partitions: int) -> list[str]:
        found = [pattern(p) for p in range(partitions) for pattern in self.per_partition]
        return found + list(self.global_patterns)


ANY: Final = "*"
"""What a key builder is given to make a family's pattern (handles and ids never hold one)."""

# --- consumer groups --------------------------------------------------------------------
GROUP_TIMELINE: Final = "timeline"
"""Timeline worker: follower graph, post store, home timelines, DM conversations."""
GROUP_AUDIT: Final = "audit"
"""Audit worker: audit projection and the on-disk archive."""
GROUP_DELIVERY: Final = "delivery"
"""Delivery workers: one consumer group on each channel's delivery stream."""
GROUP_ESCALATION: Final = "escalation"
"""Escalation workers: one consumer group on each partition's due-rounds stream."""

EVENT_LOG_GROUPS: Final = (GROUP_TIMELINE, GROUP_AUDIT)
"""Groups that read the event log; /readyz wants each on every partition."""

CHANNELS: Final = ("app", "email", "sms", "webhook")
"""Follow channels. `app` (timeline + live stream) is always on; the rest are off-app."""
OFFAPP_CHANNELS: Final = ("email", "sms", "webhook")

# --- rq queues ----------------------------------------------------------------------------
QUEUE_OPS: Final = "muster-ops"
"""Operator jobs: replay, rebuild, export. Never one job per message."""
QUEUE_SCHEDULED: Final = "muster-scheduled"
"""Timed jobs: scheduled posts, reminders."""

# --- TTLs -----------------------------------------------------------------------------------
IDEMPOTENCY_TTL_S: Final = 24 * 3600
"""How long an Idempotency-Key answers with its first response (docs/api.md: 24 h)."""
ENROLMENT_DONE_TTL_S: Final = 7 * 24 * 3600
"""How long an enrolment's done set outlives its expansion (longer than any entry is pending)."""
OIDC_FLOW_TTL_S: Final = 600
"""How long a company sign-in may take, from leaving for the identity provider to coming back
(oidc_flow): ten minutes, then the sign-in starts again."""
FAILURES_TTL_S: Final = 7 * 24 * 3600
"""How long a failure counter outlives its last failure (the entry is acked or dead by then)."""


def partition_of(handle: str, partitions: int) -> int:
    """The event-log partition of an account: stable for a given partition count."""
    return zlib.crc32(handle.encode()) % partitions


def _tag(partition: int) -> str:
    return f"{PREFIX}:{{p{partition}}}"


# --- per-partition streams (hash-tagged) ----------------------------------------------------
def events(partition: int) -> str:
    """The event log partition: every event, XADDed by the api; read by EVENT_LOG_GROUPS."""
    return f"{_tag(partition)}:events"


def retry(partition: int, group: str) -> str:
    """Dead letters re-driven to one group only (`muster dlq redrive`); read by that group."""
    return f"{_tag(partition)}:retry:{group}"


def dead_letters(partition: int) -> str:
    """Entries a group gave up on after MUSTER_MAX_ATTEMPTS, with the error; written by the loop."""
    return f"{_tag(partition)}:dead"


def replication_mark(partition: int) -> str:
    """Counter the api increments, in a cluster, on the master holding the partition before
    WAIT there (MUSTER_WRITE_REPLICAS): REPLICATION_MARK is one node's, this is per slot."""
    return f"{_tag(partition)}:replmark"


def failures(stream: str, group: str) -> str:
    """Hash entry id → failed attempts of `group` on `stream`; kept by the consumer loop."""
    return f"{stream}:failures:{group}"


def deliveries(partition: int, channel: str) -> str:
    """Delivery requests for one off-app channel; written by timeline, read by GROUP_DELIVERY."""
    return f"{_tag(partition)}:deliveries:{channel}"


# --- write-side state, in the account's partition -------------------------------------------
def account(partition: int, handle: str) -> str:
    """Hash: an account's write-side state (kind, role, contacts, token hash); api writes."""
    return f"{_tag(partition)}:acct:{handle}"


def api_tokens(partition: int, handle: str) -> str:
    """Hash: token id → records.NamedToken, the named tokens a person made for scripts (and
    the web sessions company sign-in made); written with NamedTokenCreated/Revoked."""
    return f"{_tag(partition)}:tokens:{handle}"


def posters(partition: int, handle: str) -> str:
    """Set: person handles allowed to post as team/service `handle`; api writes."""
    return f"{_tag(partition)}:posters:{handle}"


def follows(partition: int, follower: str) -> str:
    """Hash: followed handle → follow record (records.Follow), the follower's own follows;
    written with each follow change (writeside.py)."""
    return f"{follows_prefix(partition)}{follower}"


def follows_prefix(partition: int) -> str:
    """follows(partition, h) == follows_prefix(partition) + h: routing scripts read the
    follow record of each follower they walk (all in the partition's slot)."""
    return f"{_tag(partition)}:follows:"


def follow_seq(partition: int, follower: str) -> str:
    """Hash: followed handle → seq of the last change of (follower, handle), taken with the
    change's append (writeside.py); kept after an unfollow, so the next change is newer."""
    return f"{_tag(partition)}:fseq:{follower}"


def enrolment_done(partition: int, enrolment: str) -> str:
    """Set: followers of `partition` an enrolment (MembersEnrolled / FollowersEnrolled id)
    has enrolled, so its expansion, run again after a crash, enrols nobody twice;
    ENROLMENT_DONE_TTL_S."""
    return f"{_tag(partition)}:enrolled:{enrolment}"


def enrolment_rules(partition: int) -> str:
    """Hash: followed handle (of this partition) → records.Rule, the `all_members` rules;
    written with the MembersEnrolled that makes one, read when a member is created."""
    return f"{_tag(partition)}:rules"


def enrolments_expanded(partition: int) -> str:
    """Hash: enrolment id → "1" for the enrolments of this partition's accounts whose
    expansion finished, so one handled again later (a re-drive, after its done sets expired)
    enrols nobody again. Written by the timeline worker; one field per enrolment."""
    return f"{_tag(partition)}:expanded"


def idempotency(partition: int, caller: str, key: str) -> str:
    """String: fingerprint + first response of (caller, posting account, key); IDEMPOTENCY_TTL_S."""
    return f"{_tag(partition)}:idem:{caller}:{key}"


def idempotency_receipt(partition: int, caller: str, key: str) -> str:
    """String: the id a write under (caller, key) made, set in that write's MULTI (incidents
    and their updates), so a retry after the claim in `idempotency` makes nothing; TTL as it."""
    return f"{_tag(partition)}:idem_made:{caller}:{key}"


def handles(partition: int) -> str:
    """Set: every account handle in the partition; api writes with AccountCreated."""
    return f"{_tag(partition)}:handles"


def members(partition: int) -> str:
    """Set: member and admin handles in the partition, targets of `all_members` enrolments."""
    return f"{_tag(partition)}:members"


def emails(partition: int) -> str:
    """Sorted set (all scores 0, read by lex range): records.email_entry(email, handle) for
    every account of the partition with an email contact point, so company sign-in finds an
    account by its address. Written with AccountCreated and ContactPointsChanged
    (writeside.py, lua/email_index.lua), which drop the account's previous address."""
    return f"{_tag(partition)}:emails"


# --- directory sync (SCIM), write-side state in the account's partition ---------------------
def directory_users(partition: int) -> str:
    """Hash: handle → records.DirectoryUser, the people of this partition the directory
    (SCIM) manages, with the attributes it sent; written with DirectoryUserChanged and
    DirectoryUserRemoved."""
    return f"{_tag(partition)}:dir:users"


def directory_index(partition: int) -> str:
    """Sorted set (all scores 0) of records.directory_index_entry(kind, value, handle): the
    userName, externalId and email values of this partition's directory users, so a SCIM
    filter `userName eq "..."` is a ZRANGEBYLEX per partition. Entries of values a user no
    longer has stay (nothing reads the old value to remove it); readers check the record."""
    return f"{_tag(partition)}:dir:index"


def directory_groups(partition: int) -> str:
    """Hash: team handle → records.DirectoryGroup, the teams of this partition a directory
    group is mapped to; written with DirectoryGroupChanged and DirectoryGroupRemoved."""
    return f"{_tag(partition)}:dir:groups"


def directory_members(partition: int, team: str) -> str:
    """Set: handles of the people the directory put in the group mapped to `team` (in the
    team's partition); written with DirectoryGroupChanged, deleted with the group."""
    return f"{_tag(partition)}:dir:members:{team}"


# --- subscriptions (people without an account), write-side state -----------------------------
# A subscription lives in the partition of its recipient name `sub-<id>`
# (records.subscriber_recipient), like a person in theirs: its record, its place in the
# account's subscriber list and in routing, and its lookup entry, all in one slot.
SUBSCRIPTION_REQUEST_TTL_S: Final = 24 * 3600
"""How long a subscription request waits for its confirmation (docs/api.md: 24 h)."""


def subscription(partition: int, subscription_id: str) -> str:
    """String: records.Subscription (JSON), the subscription's state and its pending
    request; written with SubscriptionRequested / Confirmed / Ended (writeside.py)."""
    return f"{_tag(partition)}:sub:{subscription_id}"


def subscribers(partition: int, account: str) -> str:
    """Hash: recipient `sub-<id>` → records.subscriber_entry (channel and components) for
    each ACTIVE subscription to `account` living in `partition`; routing walks it for every
    public post like a followers hash. Written with SubscriptionConfirmed / Ended."""
    return f"{_tag(partition)}:subscribers:{account}"


def account_subscriptions(partition: int, account: str) -> str:
    """Sorted set (scores 0): ids of every subscription to `account` in `partition`,
    whatever its state, for the posters' list; added with SubscriptionRequested."""
    return f"{_tag(partition)}:subs:{account}"


def subscription_index(partition: int) -> str:
    """Sorted set (scores 0, by lex) of records.subscription_index_entry(channel, address,
    id): how an inbound STOP finds every subscription of a phone, and a confirmation code
    its request; one ZRANGEBYLEX per partition. Added with SubscriptionRequested."""
    return f"{_tag(partition)}:subindex"


def unsubscribe_token(partition: int, token_hash: str) -> str:
    """String: `<subscription id>|<generation>` for the SHA-256 of an unsubscribe token the
    delivery worker put into one message (List-Unsubscribe, the webhook's unsubscribe_url),
    in the subscription's partition; UNSUBSCRIBE_TOKEN_TTL_S. Not write-side state: a
    token is good while its generation is the subscription's (a new confirmation starts
    a new one)."""
    return f"{_tag(partition)}:unsub:{token_hash}"


UNSUBSCRIBE_TOKEN_TTL_S: Final = 90 * 24 * 3600
"""How long an unsubscribe link in a message keeps working (as long as delivery statuses)."""


def inbound_mail(partition: int, digest: str) -> str:
    """String: `pending` while the api handles one inbound email (a reply to a reply
    address), then `done`, under SHA-256 of (person, Message-ID), in the person's
    partition; INBOUND_MAIL_PENDING_TTL_S, then INBOUND_MAIL_TTL_S. So a message delivered
    twice, or replayed, is handled once. Not write-side state: what it decided is an event."""
    return f"{_tag(partition)}:inmail:{digest}"


INBOUND_MAIL_PENDING_TTL_S: Final = 300
"""How long a claim on an inbound email outlives a process that died handling it."""
INBOUND_MAIL_TTL_S: Final = 30 * 24 * 3600
"""How long a Message-ID handled stays handled (longer than any sender retries)."""


def mailgun_token(token_hash: str) -> str:
    """String: a Mailgun webhook token already used (SHA-256 of it); MAILGUN_TOKEN_TTL_S.
    Written by the api before it handles the request, so a replayed request is refused."""
    return f"{PREFIX}:mailgun:{token_hash}"


MAILGUN_TOKEN_TTL_S: Final = 600
"""Longer than a Mailgun request stays fresh (MAILGUN_FRESH_S in muster.api.inboundmail)."""


def rate(scope: str, subject_hash: str, window: int) -> str:
    """Counter: requests of one kind (`scope`: subscribe per client network, subscribe per
    address, confirmation messages per address and day, wrong codes per phone, answers per
    roll-call answer link) in one
    fixed window; expires with the window. Never holds an address, only its SHA-256."""
    return f"{PREFIX}:rate:{scope}:{subject_hash}:{window}"


NETWORK_KEY: Final = f"{PREFIX}:subscriptions:networkkey"
"""String: the random key consent events' `network` hashes are keyed with (SET NX by the
first api process that needs it), so a hash cannot be reversed by trying every network."""


# --- incidents, components and the status page (write side, the account's partition) -------
# Everything an account's status page shows besides its posts lives in the account's
# partition and is written by WriteSide.apply for ComponentChanged, IncidentOpened,
# IncidentUpdated and StatusPageChanged, so it shares a slot with the account's stream.
INCIDENT_LISTS: Final = ("open", "resolved")
"""The incident lists of an account (incidents()): by state; each also kept public-only."""


def incident(partition: int, incident_id: str) -> str:
    """Hash: records.incident_hash, the incident's state (title, status, impact, visibility,
    times, and `c:<component>` → the state its updates set). In its account's partition:
    a read by id looks in each partition (muster.api.incidents.locate)."""
    return f"{_tag(partition)}:incident:{incident_id}"


def incident_updates(partition: int, incident_id: str) -> str:
    """Hash: post id → records.IncidentUpdate (JSON), each update of the incident; ordered
    by post id when read."""
    return f"{_tag(partition)}:incident_updates:{incident_id}"


def incidents(partition: int, account: str, state: str, public: bool) -> str:
    """Sorted set (scores 0, by lex): records.incident_member(id) of `account`'s incidents
    in `state` (INCIDENT_LISTS), newest first in text order; `public` keeps only public
    ones (what status pages and anonymous readers list)."""
    scope = f"public_{state}" if public else state
    return f"{_tag(partition)}:incidents:{scope}:{account}"


def components(partition: int, account: str) -> str:
    """Hash: component name → records.Component (JSON), its state now."""
    return f"{_tag(partition)}:components:{account}"


def component_order(partition: int, account: str) -> str:
    """Sorted set: component name, scored by when it first appeared (ms, ZADD NX): the
    order the status page lists them in."""
    return f"{_tag(partition)}:component_order:{account}"


def component_history(partition: int, account: str) -> str:
    """Sorted set: records.component_change (`ms|name|status`) of every state change,
    scored by its time in ms: the status page's 90-day bars."""
    return f"{_tag(partition)}:component_history:{account}"


def status_page(partition: int, account: str) -> str:
    """Hash: the status page's look (`logo_url`, `accent_color`) and its change counter
    (`changes`: +1 per incident, component, look or display-name change; `changed_ms`: the
    last one's time). Pages are rendered once per value of the counter and the newest
    public post (muster.api.web.pagecache)."""
    return f"{_tag(partition)}:status_page:{account}"


# --- roll-calls, write-side state ------------------------------------------------------------
# A roll-call's answers and counts are kept per partition of the people answering (each
# answer is checked and applied in its recipient's slot, so a crowd answering at once spreads
# over every partition and never queues on one key); its state (closed, extended deadline) in
# the partition of the account it was posted as. Reads sum the partitions.
def rollcall_audience(partition: int, rollcall: str) -> str:
    """Set: the people of `partition` the roll-call's post was fanned out to (its audience);
    added by the timeline worker's walk of the account's followers, with the
    RollCallAudienceRecorded that names them (lua/rollcall_audience.lua)."""
    return f"{_tag(partition)}:rc:{rollcall}:audience"


def rollcall_answers(partition: int, rollcall: str) -> str:
    """Hash: recipient → records.RollCallAnswer, the latest answer of each person of
    `partition`; written with RollCallAnswered / RollCallHelpHandled (lua/rollcall_answer.lua)."""
    return f"{_tag(partition)}:rc:{rollcall}:answers"


def rollcall_counts(partition: int, rollcall: str) -> str:
    """Hash: the counts of the latest answers in `rollcall_answers` (answered, late, suspect,
    help_open, opt:<key>, ch:<channel>); changed by the same script, with them."""
    return f"{_tag(partition)}:rc:{rollcall}:counts"


def rollcall_state(partition: int, rollcall: str) -> str:
    """Hash: a roll-call's changes since it opened (state, closed_at, deadline), in the
    partition of its account; written with RollCallClosed / RollCallExtended."""
    return f"{_tag(partition)}:rc:{rollcall}:state"


def rollcall_fired(partition: int, rollcall: str, round_: str) -> str:
    """Hash: subject → who was told about them (the subject, a manager, a fallback), for
    the people of `partition` one escalation round (`s<step>l<loop>`, `r<remind id>`) fired
    for; written with RollCallEscalated, so a round fired again after a crash tells nobody
    twice and resends only what may not have gone out (the same message ids)."""
    return f"{_tag(partition)}:rc:{rollcall}:fired:{round_}"


def rollcall_escalation(partition: int, rollcall: str) -> str:
    """Hash: `l:<handle>` → the escalation level reached for that person (the last step
    fired for them, 1-based), `n:<handle>` → how many steps fired for them (what
    max_sends_per_recipient caps); written with RollCallEscalated."""
    return f"{_tag(partition)}:rc:{rollcall}:escalation"


# --- escalation (write side, the policy's partition; the escalation worker's timers) --------
def escalation_policies(partition: int) -> str:
    """Hash: name → records.StoredPolicy (JSON) of each escalation policy whose name falls in
    `partition` (events.policy_partition_handle); written with EscalationPolicySet and
    EscalationPolicyDeleted."""
    return f"{_tag(partition)}:escpolicies"


def escalation_policy_versions(partition: int) -> str:
    """Hash: name → the last version of that policy, kept after a delete so the next PUT of
    the name goes on counting."""
    return f"{_tag(partition)}:escversions"


def rollcall_policy(partition: int, rollcall: str) -> str:
    """String: the escalation policy a roll-call opened with (records.encode_policy), in the
    partition of its account; written with its timers when the timeline worker has recorded
    the audience (never by replay), read by the escalation worker when a round is due."""
    return f"{_tag(partition)}:rc:{rollcall}:policy"


def rollcall_timers(partition: int) -> str:
    """Sorted set: records.due_member(rollcall, round) → when it is due (ms), for the
    roll-calls of this partition's accounts. Armed by the timeline worker (a roll-call's
    steps, ZADD NX) and the api (a remind, with its event); moved onto rollcall_due when due
    (lua/escalation_due.lua). Never a projection: replay neither drops nor arms it."""
    return f"{_tag(partition)}:rctimers"


def rollcall_due(partition: int) -> str:
    """Stream of records.EscalationDue, rounds whose time has come; read by
    GROUP_ESCALATION on the consumer loop (so a round whose worker died is reclaimed)."""
    return f"{_tag(partition)}:rcdue"


def rollcall_messages(partition: int, rollcall: str) -> str:
    """Set: the escalation message ids (muster.rounds.message_id) routed to someone of
    `partition`, so GET /v1/rollcalls/{id}/deliveries finds their statuses
    (delivery_status(partition, message id)); added with each routing, kept as long."""
    return f"{_tag(partition)}:rc:{rollcall}:messages"


def rollcall_unreachable(partition: int, rollcall: str) -> str:
    """Set: people of `partition` an escalation step found no channel to reach them on;
    written by the escalation worker with the deliveries (not in the log: like delivery
    statuses, rebuilt only by sending again)."""
    return f"{_tag(partition)}:rc:{rollcall}:unreachable"


def sms_opted_out(partition: int) -> str:
    """Hash: handle → time (RFC 3339) of the people of `partition` whose phone texted a stop
    word (ContactPointOptedOut; ContactPointOptedIn removes them): roll-call reports show it."""
    return f"{_tag(partition)}:sms_opted_out"


# --- answers from outside the app (muster.answerlinks) ---------------------------------------
# Not write-side state: capabilities the delivery worker hands out with the messages that
# carry a roll-call (links, SMS codes) and replay caches; losing them loses no history.
ANSWER_LINK_KEY: Final = f"{PREFIX}:answerlinks:key"
"""String: the random key answer links and their page tokens are HMACs under (SET NX by the
first process that needs it); deleting it revokes every link minted so far."""


def rollcall_link(partition: int, link_hash: str) -> str:
    """String: records.RollCallLink for the SHA-256 of an answer link id (the id is a bearer
    token and never kept), in the partition of the hash; set by the delivery worker before
    the message carrying it is sent; expires ROLLCALL_LINK_SLACK_S after the grace."""
    return f"{_tag(partition)}:rc:link:{link_hash}"


ROLLCALL_LINK_SLACK_S: Final = 7 * 24 * 3600
"""How long past the roll-call's grace (as it was when a link was sent) the link's record
is kept: an extended roll-call keeps its links; the answer path checks its state anyway."""


def rollcall_sms_codes(partition: int, phone_hash: str) -> str:
    """Hash: `<rollcall>|<recipient>` → records.SmsCodeBlock, the reply codes a phone was
    sent, for the SHA-256 of the phone number, in its partition; allocated by the delivery
    worker (lua/rollcall_sms_codes.lua) so one phone's open roll-calls never share a code."""
    return f"{_tag(partition)}:rc:smscodes:{phone_hash}"


def sms_thread(partition: int, phone_hash: str) -> str:
    """String: records.SmsThread, the post a phone was last sent by SMS and to whom, for the
    SHA-256 of the phone number, in its partition; written by the delivery worker with the
    status of each SMS carrying a post it sent (muster.smsthreads), SMS_THREAD_TTL_S. So a
    text back that is no code is a reply in that post's thread."""
    return f"{_tag(partition)}:smsthread:{phone_hash}"


SMS_THREAD_TTL_S: Final = 7 * 24 * 3600
"""How long a text back still replies to the post last sent to that phone: an SMS exchange is
short, and a text a week later is more likely about something else than that post."""


def inbound_seen(scope: str, ref_hash: str) -> str:
    """String: a provider message already taken (`scope` sms: a MessageSid; webhook: a
    callback's recipient and webhook-id), by SHA-256; SET NX first, so a replay changes
    nothing; INBOUND_SEEN_TTL_S."""
    return f"{PREFIX}:inbound:seen:{scope}:{ref_hash}"


INBOUND_SEEN_TTL_S: Final = 3 * 24 * 3600
"""Longer than any provider retries a message (Twilio: not at all; webhooks: ±5 min)."""


# --- projections (timeline worker writes; api reads) ----------------------------------------
def partition_of_id(snowflake: str, partitions: int) -> int:
    """Where a post or DM record lives: by id, so a read by id needs nothing else."""
    return int(snowflake) % partitions


def followers(partition: int, handle: str) -> str:
    """Hash: follower → channels csv, for members/admins following `handle` who live in
    `partition` (so fan-out to them runs in their slot). followers_count sums HLENs."""
    return f"{_tag(partition)}:followers:{handle}"


def follow_applied(partition: int, handle: str) -> str:
    """Hash: follower → seq of the last change of (follower, `handle`) applied to the graph,
    compared and written in the step that applies the next one, so an older change handled
    late (reclaimed, or by another consumer) never undoes a newer one."""
    return f"{_tag(partition)}:fapplied:{handle}"


def follow_versions_v1(partition: int, handle: str) -> str:
    """Hash: follower → event id of the last follow change applied. Written before follow
    changes carried a seq; nothing reads it now, replay drops what is left of it."""
    return f"{_tag(partition)}:fver:{handle}"


def external_followers(partition: int, handle: str) -> str:
    """Hash like `followers`, for external people: they receive public posts only."""
    return f"{_tag(partition)}:xfollowers:{handle}"


def home(partition: int, handle: str) -> str:
    """Sorted set (all scores 0, ordered as text): a person's home timeline, capped at
    MUSTER_TIMELINE_MAX, newest first — its members are home_member(post id), so a new post
    goes in at the head and trimming drops ranks cap.. (a listpack insert then stops at the
    first entry instead of walking the whole list). Fan-out inserts and trims in one step."""
    return f"{home_prefix(partition)}{handle}"


_HOME_BASE: Final = 10**18 - 1


def home_member(post_id: str) -> str:
    """A post id as stored in a home timeline: 10^18-1-id, 18 digits, so text order is
    newest first. Its own inverse: home_member(home_member(x)) == x for 18-digit ids."""
    return f"{_HOME_BASE - int(post_id):018d}"


def home_prefix(partition: int) -> str:
    """home(partition, h) == home_prefix(partition) + h; the fan-out script appends handles."""
    return f"{_tag(partition)}:home:"


def account_log(partition: int, handle: str) -> str:
    """Sorted set like `home`: every post published as `handle` (its log), uncapped."""
    return f"{_tag(partition)}:log:{handle}"


def public_log(partition: int, handle: str) -> str:
    """Sorted set like `home`: the public posts of `handle` (what anonymous readers page)."""
    return f"{_tag(partition)}:publog:{handle}"


def authored(partition: int, handle: str) -> str:
    """Sorted set like `home`, capped the same: the newest posts `handle` wrote, as
    themselves or as a team, so unfollowing that team leaves their own posts in their home."""
    return f"{_tag(partition)}:authored:{handle}"


def post(partition: int, post_id: str) -> str:
    """String: a post's public JSON (views.Post), at keys.partition_of_id(post_id)."""
    return f"{_tag(partition)}:post:{post_id}"


def replies(partition: int, post_id: str) -> str:
    """Sorted set like `home`: ids of direct replies to post_id (at partition_of_id(post_id))."""
    return f"{_tag(partition)}:replies:{post_id}"


def message(partition: int, message_id: str) -> str:
    """String: a DM's JSON (views.Message), at keys.partition_of_id(message_id)."""
    return f"{_tag(partition)}:dm:{message_id}"


def conversation(partition: int, handle: str, other: str) -> str:
    """Sorted set like `home`: DM ids between `handle` and `other`, in handle's partition."""
    return f"{_tag(partition)}:conv:{handle}:{other}"


def conversations(partition: int, handle: str) -> str:
    """Sorted set: other party → time (ms) of the latest DM, for `GET /v1/dms`."""
    return f"{_tag(partition)}:convs:{handle}"


# --- delivery (timeline worker routes; delivery workers send and record) --------------------
def reach(partition: int, channel: str) -> str:
    """Set: handles in `partition` that have a contact point for off-app `channel`
    (email, phone, a webhook); write-side state, changed with the contact points
    (writeside.py), so delivery routing reads them current."""
    return f"{_tag(partition)}:reach:{channel}"


def dm_channels(partition: int) -> str:
    """Hash: handle → channels csv on which that person receives DMs (PATCH /v1/me);
    write-side state like `reach`."""
    return f"{_tag(partition)}:dmchannels"


def delivery_status(partition: int, message_id: str) -> str:
    """Hash: "recipient:channel" → "status|attempts|last error" for recipients living in
    `partition`; GET /v1/posts/{id}/deliveries reads every partition's share."""
    return f"{_tag(partition)}:dstatus:{message_id}"


DELIVERY_STATUS_TTL_S: Final = 90 * 24 * 3600
"""How long a message's delivery status is kept after its last change."""


def delivery_retries(partition: int, channel: str) -> str:
    """Sorted set: records.DeliveryRequest payload → due time (ms); moved back into
    deliveries(partition, channel) when due. Retries never block a worker."""
    return f"{_tag(partition)}:dretry:{channel}"


def webhooks_disabled(partition: int) -> str:
    """Set: handles whose webhook answered 410 Gone; cleared when they set a new URL."""
    return f"{_tag(partition)}:whoff"


# --- audit (audit worker writes; api reads) -------------------------------------------------
def audit_index(partition: int) -> str:
    """Sorted set like `home`: every event id of the partition, in log order (by id)."""
    return f"{_tag(partition)}:audit:all"


def audit_by_account(partition: int, handle: str) -> str:
    """Sorted set like `home`: ids of events whose actor or subject is `handle`."""
    return f"{_tag(partition)}:audit:acct:{handle}"


def audit_by_type(partition: int, event_type: str) -> str:
    """Sorted set like `home`: ids of events of one type."""
    return f"{_tag(partition)}:audit:type:{event_type}"


def audit_events(partition: int) -> str:
    """Hash: event id → encoded event (secrets redacted on the way out, not here)."""
    return f"{_tag(partition)}:audit:events"


def archive_head(partition: int) -> str:
    """Hash: the partition's archive as far as Redis knows it — `n` (last record projected
    into the audit index), `hash` (its chain hash), `entry` (highest event-log entry id
    archived). Audit worker writes it under the archive lock; trimming reads `entry`.
    Not a projection: replay never drops it."""
    return f"{_tag(partition)}:archive:head"


def archived(partition: int) -> str:
    """Sorted set like `home`: ids of archived events the log could still hand the audit
    group again (reclaim, re-drive), so they are not archived twice. Written with the
    archive under its lock; the trimmer drops ids older than the log's first entry."""
    return f"{_tag(partition)}:archive:ids"


DEAD_GROUPS: Final = f"{PREFIX}:stats:deadgroups"
"""Hash "stream|group" → JSON {lag, idle_s}: consumer groups that stopped reading while they
lag, so trimming no longer waits for them. Audit worker's trimmer writes; /metrics reads."""


# --- global keys (no partition) -------------------------------------------------------------
def token(token_hash: str) -> str:
    """String: SHA-256 of a bearer token → its holder: the handle for an account's own token,
    `handle/token id` for a named token (keys.api_tokens). Claimed before the event is
    appended, so two accounts never share one."""
    return f"{PREFIX}:token:{token_hash}"


def oidc_flow(state_hash: str) -> str:
    """String: records.OidcFlow (nonce, PKCE verifier, where to go after) of one company
    sign-in under way, by SHA-256 of its `state`; OIDC_FLOW_TTL_S. The api writes it when
    the browser leaves for the identity provider and GETDELs it when it comes back, so a
    state is good once."""
    return f"{PREFIX}:oidc:flow:{state_hash}"


AUTH_CHANGES: Final = f"{PREFIX}:auth:changes"
"""Pub/sub channel: "<handle> <ack key>" after a change that can make a token stop working
(reset, revoke, deactivation); every api process drops what it cached for the handle and
increments the ack key, and the writer answers once every process has (tokens.py)."""


def auth_ack(change_id: str) -> str:
    """Counter: api processes that dropped their cache after AUTH_CHANGES `change_id`."""
    return f"{PREFIX}:auth:ack:{change_id}"


AUTH_ACK_TTL_S: Final = 60
"""How long an auth_ack counter is kept: far longer than the writer waits for it."""


def oidc_creating(address_hash: str) -> str:
    """String (NX, OIDC_CREATING_TTL_S): a company sign-in is creating the account of the
    address with this SHA-256 (of records.email_key), so two first sign-ins at once make one
    account, not two. The api sets it before create_account and deletes it after."""
    return f"{PREFIX}:oidc:creating:{address_hash}"


OIDC_CREATING_TTL_S: Final = 30
"""Longer than creating an account takes; a crashed creator's claim lapses after it."""


ENROLMENT_RULES: Final = f"{PREFIX}:enrolments"
"""Hash followed handle → "channels|mandatory": where `all_members` rules were kept before
they moved into the followed account's partition (enrolment_rules); read, never written."""
NODE_COUNTER: Final = f"{PREFIX}:nodes"
"""Counter handing each id-generating process its node number (ids.py)."""
BIG_ACCOUNTS: Final = f"{PREFIX}:big"
"""Set of accounts with more than MUSTER_FANOUT_ON_READ_THRESHOLD followers: their posts are
not fanned out but merged into home timelines when read. Timeline worker adds; never removes."""
LIVE: Final = f"{PREFIX}:{{live}}:stream"
"""Stream of posts (after their fan-out), DMs and follow changes, for the api's SSE hub;
capped at MUSTER_LIVE_RETENTION entries, the window in which Last-Event-ID resumes."""


def live_seen(event_id: str) -> str:
    """Marker that an event already reached LIVE (same slot), so a re-handled one is not resent."""
    return f"{PREFIX}:{{live}}:seen:{event_id}"


LIVE_SEEN_TTL_S: Final = 24 * 3600
"""How long live_seen markers last: longer than any entry stays unacknowledged."""
ROLLCALL_LIVE: Final = f"{PREFIX}:{{live}}:rollcalls"
"""Stream of roll-call changes (records.RollCallNews), written by the timeline worker after
the events, read by the api's roll-call hub for GET /v1/rollcalls/{id}/stream; in LIVE's slot
so the live_seen marker guards it too."""
ROLLCALL_LIVE_MAX: Final = 10_000
"""ROLLCALL_LIVE's cap: a stream sends the whole report on connect and never resumes from it."""
REPLICATION_MARK: Final = f"{PREFIX}:replmark"
"""Counter the api increments before WAIT: replication offsets are global, so once this write
reached the replicas every earlier write of any connection did (MUSTER_WRITE_REPLICAS)."""
DELIVERY_TOTALS: Final = f"{PREFIX}:stats:deliveries"
"""Hash `channel:outcome` → count, for /metrics; delivery workers increment."""
ESCALATION_TOTALS: Final = f"{PREFIX}:stats:escalations"
"""Hash `to` (recipient, manager, fallback) → people told by escalation rounds, for /metrics;
escalation workers increment after each page they append."""
