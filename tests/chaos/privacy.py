"""Check 4 of a chaos run: nothing private leaked.

No DM text at anyone but its recipient and no internal post text at an external person (any
request that reached a receiver, even one refused during an outage); none in anonymous reads
(posts by id, threads, account logs, status pages — public threads with internal replies
included) or in an external person's reads; none, and no token or webhook secret, in any
process's log (`logs_clean`, once every process has stopped).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from chaos.checks import MARKER, Outcome
from chaos.client import Api
from chaos.evidence import Evidence
from chaos.ledger import Cast, Ledger, PostRecord


async def privacy(api: Api, cast: Cast, ledger: Ledger, ev: Evidence) -> Outcome:
    out = Outcome("nothing private leaked")
    markers = {p.marker: p for p in ledger.posts.values()}
    dm_markers = {d.marker: d for d in ledger.dms.values()}
    addresses = cast.by_address()
    for arrival in ev.arrivals:
        handle = addresses.get((arrival.channel, arrival.address), arrival.address)
        for match in MARKER.finditer(arrival.content):
            text = match.group(0)
            if text in dm_markers and dm_markers[text].recipient != handle:
                out.fail(f"DM {text} reached {handle} by {arrival.channel}")
            elif text in markers and markers[text].visibility == "internal":
                person = cast.accounts.get(handle)
                if person is None or not person.employee:
                    out.fail(f"internal post {text} reached {handle} by {arrival.channel}")
            elif text not in markers and text not in dm_markers:
                out.fail(f"{arrival.channel} to {handle} carried an unknown text {text}")
    internal = [p for p in ledger.posts.values() if p.visibility == "internal"]
    anonymous_reads = 0
    for post in internal:
        for path in (f"/v1/posts/{post.id}", f"/v1/posts/{post.id}/thread"):
            anonymous_reads += 1
            answer = await api.call("GET", path)
            if answer.status != 404:
                out.fail(f"anonymous GET {path} answered {answer.status}")
    public_by_account: dict[str, set[str]] = defaultdict(set)
    for post in ledger.posts.values():
        if post.visibility == "public":
            public_by_account[post.as_account].add(post.id)
    for account in cast.accounts:
        items = await api.pages(f"/v1/accounts/{account}/posts")
        anonymous_reads += 1
        if {i["id"] for i in items} != public_by_account.get(account, set()):
            out.fail(f"anonymous read of {account}'s log is not exactly its public posts")
        page = await api.call("GET", f"/@{account}")
        anonymous_reads += 1
        _no_private(out, f"GET /@{account}", str(page.body), markers, dm_markers)
    threads = _public_with_internal_replies(ledger)
    for post in threads:
        for path in (f"/v1/posts/{post.id}/thread", f"/@{post.as_account}/posts/{post.id}"):
            anonymous_reads += 1
            answer = await api.call("GET", path)
            if answer.status != 200:
                out.fail(f"anonymous GET {path} answered {answer.status}")
            _no_private(out, f"GET {path}", str(answer.body), markers, dm_markers)
    for person in cast.people:
        if person.employee:
            continue
        for item_id in ev.home_reads[person.handle]:
            shown = ledger.posts.get(item_id)
            if shown is not None and shown.visibility == "internal":
                out.fail(f"external {person.handle}'s home shows internal post {shown.marker}")
        for post in internal[:: max(1, len(internal) // 40)]:
            answer = await api.call("GET", f"/v1/posts/{post.id}", token=person.token)
            if answer.status != 404:
                out.fail(f"{person.handle} read internal post {post.id}: {answer.status}")
    out.figures = {
        "arrivals scanned": len(ev.arrivals),
        "anonymous reads": anonymous_reads,
        "public threads with internal replies": len(threads),
    }
    return out


def logs_clean(out: Outcome, cast: Cast, ledger: Ledger, logs: list[Path]) -> None:
    """No DM text, internal post text, token or webhook secret in any process's log."""
    markers = {p.marker: p for p in ledger.posts.values()}
    dm_markers = {d.marker: d for d in ledger.dms.values()}
    secrets = [p.token for p in cast.accounts.values() if p.token] + ["whsec_"]
    for log in logs:
        content = log.read_text(errors="replace")
        _no_private(out, log.name, content, markers, dm_markers)
        for secret in secrets:
            if secret in content:
                out.fail(f"{log.name} holds a token or webhook secret ({secret[:8]}…)")
    out.figures["log files"] = len(logs)
    out.figures["log bytes"] = sum(log.stat().st_size for log in logs)


def _public_with_internal_replies(ledger: Ledger) -> list[PostRecord]:
    """Public posts an internal post replied to: their public thread must not show it."""
    parents = {
        p.in_reply_to
        for p in ledger.posts.values()
        if p.visibility == "internal" and p.in_reply_to is not None
    }
    return [
        ledger.posts[i]
        for i in sorted(parents)
        if i in ledger.posts and ledger.posts[i].visibility == "public"
    ]


def _no_private(
    out: Outcome, where: str, content: str, markers: dict[str, Any], dm_markers: dict[str, Any]
) -> None:
    for match in MARKER.finditer(content):
        text = match.group(0)
        if text in dm_markers:
            out.fail(f"{where} shows DM text {text}")
        elif text in markers and markers[text].visibility == "internal":
            out.fail(f"{where} shows internal post text {text}")
