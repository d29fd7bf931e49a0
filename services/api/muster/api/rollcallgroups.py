"""A roll-call's report by group: per team of the people asked, or per manager.

A person's teams are the team accounts they follow other than the one the roll-call was
posted as (everyone asked follows that one): the teams that enrolled them or that they
joined. A person's manager is the `manager` field of their account record, when accounts
have one; where none has, there are no manager groups (an empty list), so a page shows the
manager column only where managers are kept. One function per grouping (`_teams`,
`_managers`) maps handles to their groups; the counting is shared.

It reads every person asked (pipelined, CHUNK at a time): for a report page, not a poll.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from muster import keys
from muster.api import rollcalls
from muster.api.schemas import RollCallGroupOut, RollCallRecipientOut
from muster.api.state import ApiState
from muster.connection import text, texts

CHUNK = rollcalls.CHUNK
Grouping = Literal["team", "manager"]


async def groups(st: ApiState, rc: rollcalls.Loaded, by: Grouping) -> list[RollCallGroupOut]:
    """Counts per group, largest group first; people in several teams count in each."""
    found = await rollcalls.rows(st, rc)
    handles = [row.handle for row in found]
    member_of = await (_teams(st, rc, handles) if by == "team" else _managers(st, handles))
    if by == "manager" and not any(member_of.values()):
        return []
    options = [o.key for o in rc.question.options]
    totals: dict[str | None, RollCallGroupOut] = {}
    for row in found:
        named: list[str | None] = [*member_of.get(row.handle, [])]
        for group in named or [None]:
            out = totals.get(group)
            if out is None:
                out = totals[group] = _empty(group, options)
            _count(out, row)
    return sorted(totals.values(), key=lambda g: (g.group is None, -g.asked, g.group or ""))


def _empty(group: str | None, options: Sequence[str]) -> RollCallGroupOut:
    return RollCallGroupOut(
        group=group,
        asked=0,
        answered=0,
        accounted_for=0,
        unanswered=0,
        help_open=0,
        by_option=dict.fromkeys(options, 0),
    )


def _count(out: RollCallGroupOut, row: RollCallRecipientOut) -> None:
    out.asked += 1
    if row.state != "answered":
        out.unanswered += 1
        return
    out.answered += 1
    out.accounted_for += not row.suspect
    out.help_open += row.help_open
    if row.option in out.by_option:
        out.by_option[row.option] += 1


async def _teams(
    st: ApiState, rc: rollcalls.Loaded, handles: Sequence[str]
) -> dict[str, list[str]]:
    """handle → the team accounts they follow, but the roll-call's own."""
    parts = st.settings.partitions
    follows: dict[str, list[str]] = {}
    for start in range(0, len(handles), CHUNK):
        chunk = handles[start : start + CHUNK]
        async with st.redis.pipeline(transaction=False) as pipe:
            for handle in chunk:
                pipe.hkeys(keys.follows(keys.partition_of(handle, parts), handle))
            replies: list[Any] = await pipe.execute()
        for handle, followed in zip(chunk, replies, strict=True):
            follows[handle] = [a for a in texts(followed) if a != rc.post.as_account]
    accounts = sorted({a for followed in follows.values() for a in followed})
    async with st.redis.pipeline(transaction=False) as pipe:
        for account in accounts:
            pipe.hget(keys.account(keys.partition_of(account, parts), account), "kind")
        kinds: list[Any] = await pipe.execute()
    teams = {a for a, kind in zip(accounts, kinds, strict=True) if kind and text(kind) == "team"}
    return {handle: [a for a in followed if a in teams] for handle, followed in follows.items()}


async def _managers(st: ApiState, handles: Sequence[str]) -> dict[str, list[str]]:
    """handle → [their manager], or [] for someone who has none."""
    found = await rollcalls.managers(st, handles)
    return {h: [found[h]] if h in found else [] for h in handles}
