"""The checks of a settled chaos run, each an `Outcome`: passed or the first problems found.

1. nothing acknowledged lost: every acknowledged post and DM is in the event log as sent, once
   (no text under two ids), readable by id through the API, in its account's log, in a
   conversation of both parties, in the audit log and in the archive; every acknowledged
   follow change is in the write side, and the follower graph projects the write side;
2. no timeline entry twice: every home, as stored and as read, holds each post at most once and
   exactly what model.expected_home says;
3. no send repeated with a new id: every delivery id a receiver saw is
   `{message id}.{recipient}.{channel}` of a real message to that receiver, carrying that
   message's text, one id per (message, recipient, channel), a repeat carries the same content;
   every stored status is `sent` and was received, and GET /v1/posts/{id}/deliveries says so;
   every delivery model.py expects arrived.
(4, nothing private leaked, is privacy.py; 5, the archive verifies and a replay rebuilds the
same projections, is replay.py: it runs with the workers stopped.)
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from chaos.client import Api
from chaos.evidence import DELIVERY_ID, Evidence
from chaos.ledger import Cast, Ledger
from chaos.model import (
    expected_dm_deliveries,
    expected_home,
    expected_post_deliveries,
    possible_post_delivery,
    replay_changes,
)
from chaos.processes import ADMIN_TOKEN

MARKER = re.compile(r"\b(pub|int|dm)-\d{6}-[a-z]{5}\b")
SHOWN = 8  # problems listed per check


@dataclass
class Outcome:
    name: str
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems

    def fail(self, problem: str) -> None:
        self.problems.append(problem)

    def summary(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.name}"
        if self.figures:
            head += "  (" + ", ".join(f"{k} {v}" for k, v in self.figures.items()) + ")"
        lines = [head]
        for problem in self.problems[:SHOWN]:
            lines.append(f"      - {problem}")
        if len(self.problems) > SHOWN:
            lines.append(f"      ... and {len(self.problems) - SHOWN} more")
        return "\n".join(lines)


# --- 1 ------------------------------------------------------------------------------------------
async def nothing_lost(api: Api, cast: Cast, ledger: Ledger, ev: Evidence) -> Outcome:
    out = Outcome("nothing acknowledged lost")
    posts, dms = ev.posts(), ev.dms()
    for post in ledger.posts.values():
        event = posts.get(post.id)
        if event is None:
            out.fail(f"post {post.id} ({post.marker}) acknowledged, not in the event log")
            continue
        stored = (
            event.author,
            event.as_account,
            event.text,
            event.visibility,
            event.severity,
            event.in_reply_to,
        )
        sent = (
            post.author,
            post.as_account,
            post.text,
            post.visibility,
            post.severity,
            post.in_reply_to,
        )
        if stored != sent:
            out.fail(f"post {post.id} is in the log as {stored}, was sent as {sent}")
    for dm in ledger.dms.values():
        event_dm = dms.get(dm.id)
        if event_dm is None:
            out.fail(f"DM {dm.id} ({dm.marker}) acknowledged, not in the event log")
        elif (event_dm.actor, event_dm.recipient, event_dm.text) != (
            dm.sender,
            dm.recipient,
            dm.text,
        ):
            out.fail(f"DM {dm.id} is in the log as something else")
    texts = Counter(e.text for e in posts.values()) + Counter(e.text for e in dms.values())
    for repeated, n in texts.items():
        if n > 1:
            out.fail(f"{n} messages in the log carry one text ({repeated[:30]}): a resend")
    acked = set(ledger.posts) | set(ledger.dms)
    for phantom in (set(posts) | set(dms)) - acked:
        out.fail(f"message {phantom} is in the log but was never acknowledged")
    if ev.log_repeats:
        out.fail(f"event ids twice in the log: {sorted(ev.log_repeats)[:5]}")
    await _readable(out, api, cast, ledger)
    _archived(out, ev)
    _follows(out, cast, ledger, ev)
    out.figures |= {
        "posts": len(ledger.posts),
        "DMs": len(ledger.dms),
        "events in the log": len(ev.log_events),
        "archived": sum(ev.archive_ids.values()),
    }
    return out


async def _readable(out: Outcome, api: Api, cast: Cast, ledger: Ledger) -> None:
    for post in ledger.posts.values():
        # its author may always read it; anyone, a public one
        viewers = [post.author] + (["anonymous"] if post.visibility == "public" else [])
        for viewer in viewers:
            token = cast[viewer].token if viewer != "anonymous" else None
            answer = await api.call("GET", f"/v1/posts/{post.id}", token=token)
            if answer.status != 200 or answer.body.get("text") != post.text:
                out.fail(f"GET /v1/posts/{post.id} as {viewer} answered {answer.status}")
    by_account: dict[str, set[str]] = defaultdict(set)
    for post in ledger.posts.values():
        by_account[post.as_account].add(post.id)
    for account in cast.accounts:
        items = await api.pages(f"/v1/accounts/{account}/posts", token=ADMIN_TOKEN)
        ids = [item["id"] for item in items]
        if len(ids) != len(set(ids)):
            out.fail(f"the log of {account} lists a post twice")
        if set(ids) != by_account.get(account, set()):
            missing = by_account.get(account, set()) - set(ids)
            extra = set(ids) - by_account.get(account, set())
            out.fail(
                f"the log of {account}: missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}"
            )
    pairs: dict[frozenset[str], set[str]] = defaultdict(set)
    for dm in ledger.dms.values():
        pairs[frozenset((dm.sender, dm.recipient))].add(dm.id)
    for pair, ids_sent in pairs.items():
        for reader in sorted(pair):
            if not cast[reader].person:
                continue  # a service sends DMs but cannot read them
            (other,) = pair - {reader}
            items = await api.pages(f"/v1/dms/{other}", token=cast[reader].token, oldest_first=True)
            got = [item["id"] for item in items]
            if sorted(got) != sorted(ids_sent):
                out.fail(
                    f"{reader}'s conversation with {other}: {len(got)} messages "
                    f"({len(set(got))} distinct), {len(ids_sent)} sent"
                )


def _archived(out: Outcome, ev: Evidence) -> None:
    for event_id in ev.log_events:
        if ev.archive_ids[event_id] != 1:
            out.fail(f"event {event_id} is in the archive {ev.archive_ids[event_id]} times")
        if ev.audit_ids[event_id] != 1:
            out.fail(f"event {event_id} is in the audit log {ev.audit_ids[event_id]} times")
    for event_id in (set(ev.archive_ids) | set(ev.audit_ids)) - set(ev.log_events):
        out.fail(f"event {event_id} is archived or audited but not in the log")


def _follows(out: Outcome, cast: Cast, ledger: Ledger, ev: Evidence) -> None:
    ambiguous = 0
    pairs = set(ledger.changes) | {(f, a) for f, rows in ev.follows.items() for a in rows}
    for follower, account in sorted(pairs):
        stored = ev.follows.get(follower, {}).get(account)
        state, unclear = replay_changes(ledger.changes.get((follower, account), []))
        if unclear:
            ambiguous += 1
        elif stored != state:
            out.fail(
                f"{follower} → {account}: the write side has {stored}, the ledger says {state}"
            )
        projected = ev.graph.get((follower, account))
        if stored is None and projected is not None:
            out.fail(f"{follower} → {account}: unfollowed, still in the follower graph")
        elif stored is not None:
            want = (
                ",".join(c for c in ("app", "email", "sms", "webhook") if c in stored.channels),
                cast[follower].role == "external",
            )
            if projected != want:
                out.fail(f"{follower} → {account}: write side {want}, graph {projected}")
    out.figures["follow pairs"] = len(pairs)
    out.figures["pairs left open by enrolments"] = ambiguous


# --- 2 ------------------------------------------------------------------------------------------
def timelines(cast: Cast, ledger: Ledger, ev: Evidence) -> Outcome:
    out = Outcome("no timeline entry twice")
    entries = own_team_dropped = 0
    for person in cast.people:
        stored, read = ev.homes[person.handle], ev.home_reads[person.handle]
        entries += len(stored)
        for name, ids in (("stored", stored), ("read", read)):
            twice = [i for i, n in Counter(ids).items() if n > 1]
            if twice:
                out.fail(f"{person.handle}'s home ({name}) holds {twice[:3]} more than once")
        if set(stored) != set(read):
            out.fail(f"{person.handle}'s home as stored and as read differ")
        required, optional = expected_home(cast, ledger, person.handle, ev.follows[person.handle])
        missing = required - set(stored)
        extra = set(stored) - required - optional
        own_team_dropped += len(optional - set(stored))
        if missing:
            out.fail(f"{person.handle}'s home misses {len(missing)}: {_describe(ledger, missing)}")
        if extra:
            out.fail(f"{person.handle}'s home has {len(extra)} extra: {_describe(ledger, extra)}")
    out.figures = {
        "homes": len(cast.people),
        "entries": entries,
        "own team posts not in the author's home": own_team_dropped,
    }
    return out


def _describe(ledger: Ledger, ids: set[str]) -> str:
    shown = []
    for i in sorted(ids)[:3]:
        post = ledger.posts.get(i)
        shown.append(f"{i} ({post.marker} as {post.as_account} by {post.author})" if post else i)
    return ", ".join(shown)


# --- 3 ------------------------------------------------------------------------------------------
def deliveries(cast: Cast, ledger: Ledger, ev: Evidence) -> Outcome:
    out = Outcome("no send repeated with a new id")
    addresses = cast.by_address()
    accepted: Counter[str] = Counter()
    contents: dict[str, set[str]] = defaultdict(set)
    ids_of: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    refused = 0
    for arrival in ev.arrivals:
        if not arrival.accepted:
            refused += 1
            continue
        handle = addresses.get((arrival.channel, arrival.address))
        match = DELIVERY_ID.fullmatch(arrival.delivery_id)
        if match is None or handle is None:
            out.fail(f"{arrival.channel} to {arrival.address} carried id {arrival.delivery_id!r}")
            continue
        message_id, recipient, channel = match.groups()
        if (recipient, channel) != (handle, arrival.channel):
            out.fail(f"{arrival.delivery_id} reached {handle}'s {arrival.channel}")
        if message_id not in ledger.posts and message_id not in ledger.dms:
            out.fail(f"{arrival.delivery_id} names no acknowledged post or DM")
        accepted[arrival.delivery_id] += 1
        contents[arrival.delivery_id].add(arrival.content)
        sent = ledger.posts.get(message_id) or ledger.dms.get(message_id)
        shown = MARKER.search(arrival.content)  # texts start with their marker
        if sent is not None and (shown is None or shown.group(0) != sent.marker):
            out.fail(f"{arrival.delivery_id} arrived with another message's text: {shown}")
        if shown is not None:
            ids_of[(shown.group(0), handle, arrival.channel)].add(arrival.delivery_id)
    for key, ids in ids_of.items():
        if len(ids) > 1:
            out.fail(f"{key[0]} reached {key[1]} by {key[2]} under {len(ids)} ids: {sorted(ids)}")
    for delivery_id, seen in contents.items():
        if len(seen) > 1:
            out.fail(f"{delivery_id} arrived twice with different content")
    for delivery_id in accepted:
        message_id, recipient, channel = delivery_id.split(".")
        post = ledger.posts.get(message_id)
        if post is not None:
            why = possible_post_delivery(cast, ledger, post, recipient, channel)
            if why:
                out.fail(f"{delivery_id}: {why}")
        elif message_id in ledger.dms and ledger.dms[message_id].recipient != recipient:
            out.fail(f"{delivery_id}: a DM sent to someone other than its recipient")
    for delivery_id, status in ev.statuses.items():
        state = status.split("|")[0]
        if state != "sent":
            out.fail(f"{delivery_id} ends {status!r}")
        elif delivery_id not in accepted:
            out.fail(f"{delivery_id} is recorded sent but no receiver accepted it")
    final = {
        (follower, account): state
        for follower, rows in ev.follows.items()
        for account, state in rows.items()
    }
    expected = expected_post_deliveries(cast, ledger, final) | expected_dm_deliveries(cast, ledger)
    missing = expected - set(accepted)
    if missing:
        out.fail(f"{len(missing)} expected deliveries never arrived: {sorted(missing)[:4]}")
    for delivery_id in accepted:
        if delivery_id not in ev.statuses:
            out.fail(f"{delivery_id} arrived but has no status")
    duplicated = {d: n for d, n in accepted.items() if n > 1}
    by_channel = Counter(d.rsplit(".", 1)[1] for d in accepted)
    out.figures = {
        "received": sum(accepted.values()),
        "distinct": len(accepted),
        "by channel": dict(sorted(by_channel.items())),
        "duplicated (same id)": len(duplicated),
        "refused while failing": refused,
        "expected": len(expected),
    }
    return out


async def delivery_reports(api: Api, ledger: Ledger, ev: Evidence, out: Outcome) -> None:
    """GET /v1/posts/{id}/deliveries (as an admin) says what the stored statuses say, for
    every post that has any (all of them when there are few, else a sample)."""
    wanted: dict[str, dict[str, str]] = defaultdict(dict)
    for delivery_id, status in ev.statuses.items():
        message_id, recipient, channel = delivery_id.split(".")
        if message_id in ledger.posts:
            wanted[message_id][f"{recipient}:{channel}"] = status.split("|")[0]
    ids = sorted(wanted)
    for post_id in ids[:: max(1, len(ids) // 60)]:
        report = await api.ok(
            "GET", f"/v1/posts/{post_id}/deliveries", token=ADMIN_TOKEN, params={"limit": 1000}
        )
        shown = {f"{r['handle']}:{r['channel']}": r["status"] for r in report["recipients"]}
        if shown != wanted[post_id]:
            out.fail(f"GET /v1/posts/{post_id}/deliveries: {shown}, stored {wanted[post_id]}")
        sent = sum(counts["sent"] for counts in report["totals"].values())
        if sent != len(wanted[post_id]):
            out.fail(f"GET /v1/posts/{post_id}/deliveries totals {report['totals']}")
    out.figures["delivery reports read"] = len(ids[:: max(1, len(ids) // 60)])
